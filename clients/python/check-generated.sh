#!/usr/bin/env bash
# Fails (exit 1) when the committed stubs in vqdiffusion_client/_generated differ from what
# generate.sh produces from the current protos.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$here/generate.sh" "$tmp/_generated"
if ! diff -r -x __pycache__ "$tmp/_generated" "$here/vqdiffusion_client/_generated"; then
  echo "check-generated.sh: the Python stubs are stale; run clients/python/generate.sh and commit the result." >&2
  exit 1
fi
echo "check-generated.sh: Python stubs are up to date."
