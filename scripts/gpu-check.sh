#!/usr/bin/env bash
# For a person with NVIDIA GPUs: builds with the CUDA backend (DTRAIN_CUDA=ON), runs the GPU tests
# (every CUDA op against the CPU reference, NCCL allreduce under mpirun) and prints the GPU
# benchmarks as JSON lines. On a machine without a GPU the tests report themselves skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
DTRAIN_CMAKE_ARGS="-DDTRAIN_CUDA=ON ${DTRAIN_CMAKE_ARGS:-}" scripts/build.sh
gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
echo "gpu-check: ${gpus:-0} GPU(s) visible"
(cd build && ctest -L gpu --output-on-failure)
mpi=(mpirun --bind-to none --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
if ((${gpus:-0} >= 1)); then
  ranks=$(( gpus >= 2 ? gpus : 1 ))
  "${mpi[@]}" -np "$ranks" build/bin/dtrain_bench allreduce --backend nccl -b 1M -e 256M -f 4
else
  echo "gpu-check: no GPU, so no NCCL benchmark" >&2
fi
echo "gpu-check: GPU training throughput (MLP, CNN with --device cuda) is not measured: the" \
  "training loop does not run on the GPU yet (see README, GPU backend)" >&2
