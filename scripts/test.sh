#!/usr/bin/env bash
# Runs every test suite of the repository and prints one closing line: "N passed, N failed".
#   .NET (xunit on VSTest), the Python client (pytest), the TypeScript client (node --test),
#   the browser playground (chromium + playwright-core, gRPC-Web), the generated-code and bundle staleness checks
#   and the cross-client byte-identity check.
# Usage: bash scripts/test.sh            (after `bash .ci/run` or the same installs by hand)
set -uo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
status=0

count() { # $1 = label, $2 = passed, $3 = failed
  echo "== $1: $2 passed, $3 failed"
  passed=$((passed + $2))
  failed=$((failed + $3))
  [ "$3" -eq 0 ] || status=1
}

dotnet build VqDiffusion.Grpc.sln -nologo -v minimal || { echo "0 passed, 1 failed"; exit 1; }

# .NET suites: one "Passed!/Failed!" summary line per test assembly.
export VQD_CROSS_CLIENT_OUT="$work/cross-csharp"
dotnet test VqDiffusion.Grpc.sln --no-build -nologo 2>&1 | tee "$work/dotnet.log"
rc=${PIPESTATUS[0]}
p=$(grep -Eo 'Passed: +[0-9]+' "$work/dotnet.log" | awk '{s+=$2} END {print s+0}')
f=$(grep -Eo 'Failed: +[0-9]+' "$work/dotnet.log" | awk '{s+=$2} END {print s+0}')
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
count ".NET" "$p" "$f"

if [ -d clients/python/tests ]; then
  export VQD_CROSS_CLIENT_OUT="$work/cross-python"
  /usr/bin/python3 -m pytest clients/python/tests -q -p no:cacheprovider 2>&1 | tee "$work/pytest.log"
  rc=${PIPESTATUS[0]}
  last=$(grep -E '(passed|failed|error)' "$work/pytest.log" | tail -n 1)
  p=$(echo "$last" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)
  f=$(( $(echo "$last" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+' || echo 0) + $(echo "$last" | grep -Eo '[0-9]+ error' | grep -Eo '[0-9]+' || echo 0) ))
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  count "Python client" "${p:-0}" "$f"
  if bash clients/python/check-generated.sh; then count "Python generated code is current" 1 0; else count "Python generated code is current" 0 1; fi
fi

if [ -f clients/typescript/package.json ]; then
  export VQD_CROSS_CLIENT_OUT="$work/cross-typescript"
  npm --prefix clients/typescript test 2>&1 | tee "$work/node.log"
  rc=${PIPESTATUS[0]}
  p=$(grep -E '^# pass [0-9]+' "$work/node.log" | tail -n 1 | grep -Eo '[0-9]+' || echo 0)
  f=$(grep -E '^# fail [0-9]+' "$work/node.log" | tail -n 1 | grep -Eo '[0-9]+' || echo 0)
  [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ] && f=1
  count "TypeScript client" "${p:-0}" "${f:-0}"
  if npm --prefix clients/typescript run --silent check-generated; then count "TypeScript generated code is current" 1 0; else count "TypeScript generated code is current" 0 1; fi
fi

# The browser playground (web/playground): chromium driven by playwright-core against a real server's gRPC-Web
# endpoint, raw gRPC-Web calls from node, and the committed bundle (src/VqDiffusion.Server/wwwroot) rebuilt byte for byte.
if [ -f web/playground/package.json ]; then
  export VQD_BROWSER_ARTIFACTS="${VQD_BROWSER_ARTIFACTS:-$PWD/web/playground/test-results}"
  npm --prefix web/playground test 2>&1 | tee "$work/browser.log"
  rc=${PIPESTATUS[0]}
  p=$(grep -E '^# pass [0-9]+' "$work/browser.log" | tail -n 1 | grep -Eo '[0-9]+' || echo 0)
  f=$(grep -E '^# fail [0-9]+' "$work/browser.log" | tail -n 1 | grep -Eo '[0-9]+' || echo 0)
  [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ] && f=1
  count "Browser playground and gRPC-Web (screenshots in $VQD_BROWSER_ARTIFACTS)" "${p:-0}" "${f:-0}"
  if npm --prefix web/playground run --silent check-bundle; then count "Playground bundle is current" 1 0; else count "Playground bundle is current" 0 1; fi
  if npm --prefix web/playground run --silent typecheck; then count "Playground type check" 1 0; else count "Playground type check" 0 1; fi
fi

# The same request through every client gives byte-identical images: the standard request
# ($OUT.0, $OUT.1) and the vq-diffusion one ($OUT.vq.0, $OUT.vq.1: fast inference, inpainting).
shopt -s nullglob
for kind in "" ".vq"; do
  outs=()
  for f in "$work"/cross-*"$kind".0; do
    [ -z "$kind" ] && [[ "$f" == *.vq.0 ]] && continue
    outs+=("$f")
  done
  [ "${#outs[@]}" -ge 2 ] || continue
  ok=1
  for o in "${outs[@]}"; do
    for i in 0 1; do
      cmp -s "${outs[0]%.0}.$i" "${o%.0}.$i" || { echo "cross-client: ${o%.0}.$i differs from ${outs[0]%.0}.$i"; ok=0; }
    done
  done
  label="cross-client byte identity${kind:+ (vq-diffusion)}"
  if [ "$ok" -eq 1 ]; then count "$label (${#outs[@]} clients)" 1 0; else count "$label" 0 1; fi
done

echo "${passed} passed, ${failed} failed"
exit "$status"
