#!/usr/bin/env bash
# Memory per rank (Linux's own counts: peak resident VmHWM, anonymous = private RssAnon sampled at
# each epoch's end), from mnist_train's summary and --verbose lines:
#   mlp_1rank     the MLP on MNIST, one CPU rank, one epoch
#   cnn_1rank     the CNN, one rank, 100 steps
#   mlp_20x       the MLP on an IDX training set 20x MNIST's (MNIST repeated; generated into
#                 build/bench/mnist20x), 2,000 steps: private memory must not grow with the data
#   mlp_4ranks    4 allreduce ranks on one machine: every rank's figures and their sum
#   and PyTorch's same MLP job (scripts/bench_torch_memory.py) when python3-torch is installed
# Prints one JSON line per job, naming the CPU.   scripts/bench-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh mnist_train  # incremental: a stale binary measures old code
[[ -f data/mnist/train-images-idx3-ubyte ]] || scripts/get-mnist.sh
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mpi=(mpirun --bind-to none --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
big=build/bench/mnist20x
if [[ ! -f $big/.complete ]]; then
  # Made in a folder of its own and renamed when whole: an interrupted run left a truncated set
  # that later runs reused.
  rm -rf "$big" "$big.partial"
  mkdir -p "$big.partial"
  python3 - data/mnist "$big.partial" <<'PY'
import os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
for name, hdr in (("train-images-idx3-ubyte", 16), ("train-labels-idx1-ubyte", 8)):
    raw = open(os.path.join(src, name), "rb").read()
    n = struct.unpack(">I", raw[4:8])[0]
    with open(os.path.join(dst, name), "wb") as f:
        f.write(raw[:4] + struct.pack(">I", 20 * n) + raw[8:hdr])
        for _ in range(20):
            f.write(raw[hdr:])
for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    open(os.path.join(dst, name), "wb").write(open(os.path.join(src, name), "rb").read())
PY
  touch "$big.partial/.complete"
  mv "$big.partial" "$big"
fi
run() {  # LOG CMD...: a failed job shows its last lines (its log is in a temporary folder)
  local log="$1"; shift
  "$@" >"$log" 2>&1 || { tail -n 20 "$log" >&2; echo "bench-memory: failed: $*" >&2; exit 1; }
}
report() {  # NAME LOG...: one line from the summary (rank 0) and every rank's --verbose memory line
  local name="$1"; shift
  python3 - "$name" "$cpu" "$@" <<'PY'
import json, re, sys
name, cpu, logs = sys.argv[1], sys.argv[2], sys.argv[3:]
ranks = []
for log in logs:
    for line in open(log):
        m = re.search(r"memory: peak resident (\d+) MB, anonymous \(private\) (\d+) MB", line)
        if m:
            ranks.append({"peak_rss_mb": int(m.group(1)), "peak_anon_mb": int(m.group(2))})
print(json.dumps({"bench": "memory", "job": name, "cpu": cpu, "ranks": ranks,
                  "sum_peak_anon_mb": sum(r["peak_anon_mb"] for r in ranks),
                  "max_peak_rss_mb": max(r["peak_rss_mb"] for r in ranks)}))
PY
}
train=(build/bin/mnist_train --device cpu --mode local --verbose --output-dir "$tmp/out")
run "$tmp/mlp.log" "${train[@]}" --data-folder data/mnist --epochs 1
report mlp_1rank "$tmp/mlp.log"
run "$tmp/cnn.log" "${train[@]}" --data-folder data/mnist --epochs 1 --model cnn --max-steps-per-epoch 100
report cnn_1rank "$tmp/cnn.log"
run "$tmp/big.log" "${train[@]}" --data-folder "$big" --epochs 1 --max-steps-per-epoch 2000
report mlp_20x "$tmp/big.log"
run "$tmp/four.log" "${mpi[@]}" -np 4 build/bin/mnist_train --device cpu --mode allreduce --verbose \
  --data-folder data/mnist --epochs 1 --output-dir "$tmp/out4"
report mlp_4ranks "$tmp/four.log"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  /usr/bin/python3 scripts/bench_torch_memory.py data/mnist
else
  echo "bench-memory: python3-torch not installed; no PyTorch figure (scripts/setup.sh installs it)" >&2
fi
