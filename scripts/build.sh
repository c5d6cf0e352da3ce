#!/usr/bin/env bash
# Configures and builds dtrain into build/ (binaries in build/bin/).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${DTRAIN_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)"
