#!/usr/bin/env bash
# The CPU backend next to PyTorch 1.13 on this machine, in one run with rounds alternating:
# dtrain_bench train (MLP and CNN, batch 50, one core) and scripts/bench_torch.py (the same
# models, one thread; as shipped, with OPENBLAS_CORETYPE=Prescott as on a CPU model OpenBLAS does
# not know, and with torch.set_flush_denormal). Prints one JSON line per measurement and a last
# line with medians and ratios, naming the CPU (lscpu) and oneDNN's ISA.
#   scripts/bench-cpu.sh [--rounds 3] [--cnn-steps 60]
# Needs python3-torch (scripts/setup.sh --bench).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 cnn_steps=60
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --cnn-steps) cnn_steps="$2"; shift 2 ;;
    *) echo "bench-cpu: unknown argument $1" >&2; exit 2 ;;
  esac
done
scripts/build.sh dtrain_bench  # incremental: a stale binary measures old code
/usr/bin/python3 -c "import torch" 2>/dev/null ||
  { echo "bench-cpu: PyTorch is missing; run scripts/setup.sh --bench" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sps() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readlines()[-1])["samples_per_sec"])'; }
for ((r = 1; r <= rounds; r++)); do
  for model in mlp cnn; do
    if [[ $model == mlp ]]; then steps=1500; else steps=$cnn_steps; fi
    d="$(build/bin/dtrain_bench train --model "$model" --steps "$steps" --repeats 1 | tee "$tmp/isa" | sps)"
    t="$(/usr/bin/python3 scripts/bench_torch.py 50 "$steps" --model "$model" | sps)"
    tp="$(OPENBLAS_CORETYPE=Prescott /usr/bin/python3 scripts/bench_torch.py 50 "$steps" --model "$model" | sps)"
    tf="$(/usr/bin/python3 scripts/bench_torch.py 50 "$steps" --model "$model" --flush-denormal | sps)"
    echo "{\"round\":$r,\"model\":\"$model\",\"dtrain\":$d,\"pytorch\":$t,\"pytorch_prescott\":$tp,\"pytorch_flush_denormal\":$tf}" |
      tee -a "$tmp/rows.jsonl"
  done
done
python3 - "$tmp/rows.jsonl" "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" \
  "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cpu_isa"])' "$tmp/isa")" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = {"bench": "cpu_vs_pytorch", "cpu": sys.argv[2], "onednn_isa": sys.argv[3], "rounds": len(rows) // 2}
for model in ("mlp", "cnn"):
    rs = [r for r in rows if r["model"] == model]
    for k in ("dtrain", "pytorch", "pytorch_prescott", "pytorch_flush_denormal"):
        out[f"{model}_{k}_median"] = round(statistics.median(r[k] for r in rs))
    for k in ("pytorch", "pytorch_prescott", "pytorch_flush_denormal"):
        out[f"{model}_dtrain_vs_{k}"] = round(statistics.median(r["dtrain"] / r[k] for r in rs), 2)
print(json.dumps(out))
PY
