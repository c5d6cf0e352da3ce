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
set +e
ctest --output-on-failure --timeout 600 -j"$(nproc)" 2>&1 | tee ctest.log
rc=${PIPESTATUS[0]}
set -e
# In CI only GPU tests may skip (there is no GPU): a cluster or PyTorch test that skipped there
# hid a broken set-up behind a green run.
if [[ "${CI:-}" == true ]]; then
  gpu="$(ctest -N -L gpu | sed -n 's/^ *Test *#[0-9]*: //p')"
  unexpected=""
  while read -r name; do
    grep -qxF "$name" <<<"$gpu" || unexpected+=" $name"
  done < <(sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) (Skipped)$/\1/p' ctest.log)
  if [[ -n "$unexpected" ]]; then
    echo "test: skipped in CI, where they must run:$unexpected (each one's output says why)" >&2
    exit 1
  fi
fi
exit "$rc"
