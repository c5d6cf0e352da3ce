#!/usr/bin/env bash
# For a person with NVIDIA GPUs: builds with the CUDA backend (DTRAIN_CUDA=ON), runs the GPU tests
# (every CUDA op and the whole MLP and CNN against the CPU reference, NCCL allreduce under mpirun)
# and prints the GPU benchmarks as JSON lines: training samples/s of the MLP and the CNN on one
# GPU, and NCCL allreduce busbw (nccl-tests' definitions). It sets DTRAIN_REQUIRE_GPU=1: on a
# machine without a usable GPU (no device, or a driver too old for the toolkit) every GPU test
# fails naming the reason instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
DTRAIN_CMAKE_ARGS="-DDTRAIN_CUDA=ON ${DTRAIN_CMAKE_ARGS:-}" scripts/build.sh
gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
# nvidia-smi lists every GPU; CUDA_VISIBLE_DEVICES limits what the processes see.
if [[ -n "${CUDA_VISIBLE_DEVICES+x}" ]]; then
  visible="$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c . || true)"
  ((visible < ${gpus:-0})) && gpus="$visible"
fi
echo "gpu-check: ${gpus:-0} GPU(s) visible"
(cd build && DTRAIN_REQUIRE_GPU=1 ctest -L gpu --timeout 600 --output-on-failure)
mpi=(mpirun --bind-to none --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
if ((${gpus:-0} >= 1)); then
  # One GPU, batch 50 per step (the seeds' batch size), batches staged from host memory.
  build/bin/dtrain_bench train --device cuda --model mlp --steps 5000
  build/bin/dtrain_bench train --device cuda --model cnn --steps 500
  build/bin/dtrain_bench train --device cuda --model cnn --batch-size 256 --steps 200
  ranks=$(( gpus >= 2 ? gpus : 1 ))
  "${mpi[@]}" -np "$ranks" build/bin/dtrain_bench allreduce --backend nccl -b 1M -e 256M -f 4
else
  echo "gpu-check: no GPU, so no GPU benchmark" >&2
fi
