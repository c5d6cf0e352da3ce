#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The tests use real MNIST when data/mnist holds it, generated data otherwise.
scripts/get-mnist.sh || echo "test: could not fetch MNIST; data tests run on generated data"
scripts/build.sh
cd build
# Open MPI's session directories (shared-memory backing files) go under a folder of this run,
# removed at the end: jobs the tests kill on purpose (SIGKILL of mpirun, of a rank) cannot remove
# their own from /tmp.
OMPI_MCA_orte_tmpdir_base="$(mktemp -d /tmp/dtrain-test-ompi.XXXXXX)"
export OMPI_MCA_orte_tmpdir_base
# The vader (shared-memory) segments too: a rank killed on purpose leaves its 4 MB segment in
# /dev/shm otherwise.
export OMPI_MCA_btl_vader_backing_directory="$OMPI_MCA_orte_tmpdir_base"
trap 'rm -rf "$OMPI_MCA_orte_tmpdir_base"' EXIT
ctest --output-on-failure --timeout 600 -j"$(nproc)"
