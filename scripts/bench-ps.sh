#!/usr/bin/env bash
# Parameter-server training throughput next to allreduce, in one run: 2 allreduce ranks, then
# 1 ps + 2 workers in sync and in async mode (through dtrainrun, on 127.0.0.1), each with the
# floats through shared memory (the default for co-located tasks) and with DTRAIN_PS_SHM=0 (all
# in ZeroMQ payloads over loopback TCP). Rounds alternate so the machine's load drifts over all
# of them alike; each line is one round, the last line the medians and the ps/allreduce ratios.
#   scripts/bench-ps.sh [--rounds 3] [--epochs 2]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
epochs=2
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    *) echo "bench-ps: unknown argument $1" >&2; exit 2 ;;
  esac
done
scripts/build.sh mnist_train dtrainrun  # incremental: a stale binary measures old code
data=(--data-folder data/mnist)
[[ -f data/mnist/train-images-idx3-ubyte || -f data/mnist/train-images-idx3-ubyte.gz ]] ||
  data=(--synthetic-data 60000)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
run() {  # name env... -- launcher args -- train args
  local name="$1"; shift
  env "$@" >"$tmp/$name.log" 2>&1 || { cat "$tmp/$name.log" >&2; exit 1; }
  grep '"event":"summary"' "$tmp/$name.log" | tail -n 1 | sed 's/^\[[^]]*\] //'
}
train=(build/bin/mnist_train "${data[@]}" --epochs "$epochs" --output-dir "$tmp/out")
: >"$tmp/all.jsonl"
for ((r = 1; r <= rounds; r++)); do
  ar="$(run allreduce DTRAIN_PS_SHM=1 build/bin/dtrainrun -np 2 --output-dir "$tmp" -- "${train[@]}")"
  line="{\"round\":$r,\"allreduce\":$ar"
  for t in shm tcp; do
    v=$([[ $t == shm ]] && echo 1 || echo 0)
    for m in sync async; do
      s="$(run "ps-$m-$t" DTRAIN_PS_SHM=$v build/bin/dtrainrun --mode ps --num-ps 1 --num-workers 2 \
        --output-dir "$tmp" -- "${train[@]}" --ps-$m)"
      line+=",\"ps_${m}_${t}\":$s"
    done
  done
  echo "$line}" >>"$tmp/all.jsonl"
done
python3 - "$tmp/all.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["allreduce", "ps_sync_shm", "ps_async_shm", "ps_sync_tcp", "ps_async_tcp"]
for r in rows:
    out = {"bench": "ps_training", "round": r["round"]}
    for k in keys:
        out[k + "_samples_per_sec"] = round(r[k]["samples_per_sec"])
        out[k + "_test_accuracy"] = r[k]["test_accuracy"]
    for k in keys[1:]:
        out[k + "_vs_allreduce"] = round(r[k]["samples_per_sec"] / r["allreduce"]["samples_per_sec"], 3)
    print(json.dumps(out))
med = {"bench": "ps_training", "rounds": len(rows), "setup": "1 ps + 2 workers vs 2 allreduce ranks, 127.0.0.1"}
for k in keys:
    med[k + "_samples_per_sec_median"] = round(statistics.median(r[k]["samples_per_sec"] for r in rows))
for k in keys[1:]:
    med[k + "_vs_allreduce_median"] = round(statistics.median(
        r[k]["samples_per_sec"] / r["allreduce"]["samples_per_sec"] for r in rows), 3)
print(json.dumps(med))
PY
