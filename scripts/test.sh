#!/usr/bin/env bash
# Runs every test suite of the repository and prints one closing line: "N passed, N failed".
# Usage: bash scripts/test.sh [extra dotnet test args]
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

dotnet build VqDiffusion.Grpc.sln -nologo -v minimal || { echo "0 passed, 1 failed"; exit 1; }

# .NET suites (xunit v2 on VSTest): one summary line per test assembly.
dotnet test VqDiffusion.Grpc.sln --no-build -nologo "$@" 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

passed=$(grep -Eo 'Passed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -Eo 'Failed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1   # the run failed without reporting a failed test (build or host crash)
fi

echo "${passed} passed, ${failed} failed"
exit "$status"
