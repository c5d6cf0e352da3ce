#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds, fetches MNIST, and runs two
# local multi-process training jobs through the launcher on real MNIST:
#   1. allreduce: 2 ranks (dtrainrun -np 2)
#   2. parameter servers: 1 ps + 2 workers (dtrainrun --mode ps)
# and prints each one's test accuracy, samples/s, and where its outputs/ and logs/ went.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh mnist_train dtrainrun
scripts/get-mnist.sh
out="${DTRAIN_DEMO_OUTPUT:-demo-output}"
epochs="${DTRAIN_DEMO_EPOCHS:-3}"
# Only the two jobs' own folders: DTRAIN_DEMO_OUTPUT may name a folder that holds other things.
rm -rf "$out/allreduce" "$out/ps"
mkdir -p "$out/allreduce" "$out/ps"

report() {  # name dir
  python3 - "$1" "$2" <<'PY'
import json, sys
name, d = sys.argv[1], sys.argv[2]
lines = [l for l in open(d + "/console") if '"event":"summary"' in l]
s = json.loads(lines[-1].split("] ", 1)[1])
print(f"{name}: test accuracy {s['test_accuracy']*100:.2f}%, "
      f"{s['samples_per_sec']:,.0f} samples/s over {s['world_size']} workers")
print(f"  outputs: {d}/outputs (metrics.jsonl, model/checkpoint.bin, model/model.json)")
print(f"  logs:    {d}/logs (one folder per task)")
PY
}

echo
echo "== 1/2 allreduce: dtrainrun -np 2 -- build/bin/mnist_train ($epochs epochs, batch 50 per rank)"
build/bin/dtrainrun -np 2 --output-dir "$out/allreduce" -- build/bin/mnist_train \
  --data-folder data/mnist --epochs "$epochs" --output-dir "$out/allreduce/outputs" 2>&1 |
  tee "$out/allreduce/console"

echo
echo "== 2/2 parameter servers: dtrainrun --mode ps --num-ps 1 --num-workers 2 -- build/bin/mnist_train"
build/bin/dtrainrun --mode ps --num-ps 1 --num-workers 2 --output-dir "$out/ps" -- \
  build/bin/mnist_train --data-folder data/mnist --epochs "$epochs" \
  --output-dir "$out/ps/outputs" 2>&1 | tee "$out/ps/console"

echo
echo "== results"
report "allreduce, 2 ranks      " "$out/allreduce"
report "ps, 1 ps + 2 workers    " "$out/ps"
