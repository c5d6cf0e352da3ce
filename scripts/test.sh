#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The tests use real MNIST when data/mnist holds it, generated data otherwise.
scripts/get-mnist.sh || echo "test: could not fetch MNIST; data tests run on generated data"
scripts/build.sh
cd build
ctest --output-on-failure --timeout 600 -j"$(nproc)"
