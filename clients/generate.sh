#!/usr/bin/env bash
# Regenerates every client's code from ../protos (the one contract):
#   - C#: generated at build time by Grpc.Tools (clients/csharp, nothing committed);
#   - Python: protoc + grpc_python_plugin -> clients/python/vqdiffusion_client/_generated/;
#   - TypeScript: buf generate with protoc-gen-es -> clients/typescript/src/gen/.
# Needs: apt protobuf-compiler protobuf-compiler-grpc; npm ci --prefix clients/typescript.
# `bash clients/generate.sh --check` regenerates into temp dirs and fails if committed code is stale.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "--check" ]; then
  bash python/check-generated.sh
  npm --prefix typescript run --silent check-generated
else
  bash python/generate.sh
  npm --prefix typescript run --silent generate
fi
