#!/usr/bin/env bash
# Configures and builds dtrain into build/ (binaries in build/bin/).
#   scripts/build.sh                 everything, tests included
#   scripts/build.sh TARGET...       only these targets (demo.sh builds just what it runs)
set -euo pipefail
cd "$(dirname "$0")/.."
# DTRAIN_CUDA is given every time: a build after scripts/gpu-check.sh (which asks for ON) goes
# back to AUTO instead of keeping ON in the cache and failing where there is no CUDA compiler.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DDTRAIN_CUDA="${DTRAIN_CUDA:-AUTO}" \
  ${DTRAIN_CMAKE_ARGS:-} >/dev/null
if (($#)); then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
