#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds, fetches MNIST, and runs a
# local multi-process training run (2 allreduce ranks through mpirun), then prints where its
# outputs went.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
scripts/get-mnist.sh
out="${DTRAIN_DEMO_OUTPUT:-demo-output}"
rm -rf "$out"
mpi=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)

echo
echo "== allreduce: 2 ranks x batch 50, 3 epochs on MNIST (mpirun -np 2 build/bin/mnist_train --mode allreduce)"
mkdir -p "$out/allreduce/logs"
"${mpi[@]}" -np 2 build/bin/mnist_train --mode allreduce --data-folder data/mnist --epochs 3 \
  --output-dir "$out/allreduce/outputs" 2> >(tee "$out/allreduce/logs/stderr" >&2) |
  tee "$out/allreduce/logs/stdout"
summary="$(tail -n 1 "$out/allreduce/logs/stdout")"
python3 - "$summary" "$out/allreduce" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
print(f"\nallreduce: test accuracy {s['test_accuracy']*100:.2f}%, "
      f"{s['samples_per_sec']:,.0f} samples/s over {s['world_size']} ranks")
print(f"  outputs: {sys.argv[2]}/outputs (metrics.jsonl, model/checkpoint.bin, model/model.json)")
print(f"  logs:    {sys.argv[2]}/logs")
PY
