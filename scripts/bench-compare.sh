#!/usr/bin/env bash
# Before/after throughput of two builds of dtrain, measured side by side in one run with the
# builds alternating inside every round, so the machine's drifting load hits both alike (what a
# refactor or an optimization must show). Per round and build: dtrain_bench train (MLP, one
# core), mnist_train allreduce with 1 and 2 ranks (weak scaling), and 1 ps + 2 workers in sync
# and async mode through dtrainrun. The last line holds the medians and the ratios new / base.
#   scripts/bench-compare.sh BASE_BIN_DIR NEW_BIN_DIR [--rounds 3] [--epochs 1]
# e.g. git worktree add /tmp/base HEAD~1 && (cd /tmp/base && scripts/build.sh) &&
#      scripts/bench-compare.sh /tmp/base/build/bin build/bin
set -euo pipefail
shopt -s inherit_errexit  # a failed measurement inside $(...) stops the run (it printed nothing)
cd "$(dirname "$0")/.."
(($# >= 2)) || { sed -n 2,9p "$0" >&2; exit 2; }
base_bin="$1" new_bin="$2"; shift 2
rounds=3 epochs=1
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    *) echo "bench-compare: unknown argument $1" >&2; exit 2 ;;
  esac
done
data=(--data-folder data/mnist)
[[ -f data/mnist/train-images-idx3-ubyte || -f data/mnist/train-images-idx3-ubyte.gz ]] ||
  data=(--synthetic-data 60000)
mpi=(mpirun --bind-to none --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sps() { grep '"samples_per_sec"' | tail -n 1 | sed 's/^\[[^]]*\] //' |
  python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["samples_per_sec"])'; }
measure() {  # BIN -> one JSON object of samples/s
  local bin="$1" train
  train=("$bin/mnist_train" "${data[@]}" --epochs "$epochs" --device cpu --output-dir "$tmp/out")
  local t np1 np2 pss psa
  t="$("$bin/dtrain_bench" train --repeats 1 | sps)"
  np1="$("${mpi[@]}" -np 1 "${train[@]}" --mode allreduce | sps)"
  np2="$("${mpi[@]}" -np 2 "${train[@]}" --mode allreduce | sps)"
  pss="$("$bin/dtrainrun" --mode ps --num-ps 1 --num-workers 2 --output-dir "$tmp" -- \
    "${train[@]}" --ps-sync 2>&1 | sps)"
  psa="$("$bin/dtrainrun" --mode ps --num-ps 1 --num-workers 2 --output-dir "$tmp" -- \
    "${train[@]}" --ps-async 2>&1 | sps)"
  echo "{\"bench_train\":$t,\"allreduce_np1\":$np1,\"allreduce_np2\":$np2,\"ps_sync\":$pss,\"ps_async\":$psa}"
}
: >"$tmp/rounds.jsonl"
for ((r = 1; r <= rounds; r++)); do
  # Alternate which build goes first, so neither always meets the warmer (or colder) machine.
  if ((r % 2)); then order="base new"; else order="new base"; fi
  for which in $order; do
    bin=$([[ $which == base ]] && echo "$base_bin" || echo "$new_bin")
    m="$(measure "$bin")" || { echo "bench-compare: a measurement of $which ($bin) failed" >&2; exit 1; }
    echo "{\"round\":$r,\"build\":\"$which\",\"samples_per_sec\":$m}" | tee -a "$tmp/rounds.jsonl"
  done
done
python3 - "$tmp/rounds.jsonl" "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = {"bench": "compare", "cpu": sys.argv[2], "rounds": len(rows) // 2}
for k in rows[0]["samples_per_sec"]:
    for b in ("base", "new"):
        out[f"{k}_{b}_median"] = round(statistics.median(
            r["samples_per_sec"][k] for r in rows if r["build"] == b))
    out[f"{k}_new_vs_base"] = round(out[f"{k}_new_median"] / out[f"{k}_base_median"], 3)
n1, n2 = "allreduce_np1", "allreduce_np2"
for b in ("base", "new"):
    out[f"weak_scaling_efficiency_{b}"] = round(out[f"{n2}_{b}_median"] / (2 * out[f"{n1}_{b}_median"]), 3)
print(json.dumps(out))
PY
