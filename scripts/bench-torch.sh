#!/usr/bin/env bash
# dtrain.torch against PyTorch's own ways of running two processes, in alternating rounds on
# this machine (scripts/bench_torch_dist.py: the MNIST MLP, Adam, batch 50 per process, one
# thread each, random data in memory, --steps timed steps after 50 untimed):
#   plain          one process, no communication
#   dtrain-1       one process with dt.init() and dt.DistributedOptimizer (a job of one)
#   ddp-gloo       DistributedDataParallel over gloo, 2 processes
#   mpi4py         one fused MPI_Allreduce per step through mpi4py, 2 processes, Open MPI's
#                  default (busy-polling) wait; mpi4py-yield: the same with mpi_yield_when_idle=1
#                  (the reference is the better of the two in each round)
#   dtrain         dtrain.torch through `dtrainrun -np 2` (on one machine: the sharded step)
#   dtrain-mpi     the same with DTRAIN_ALLREDUCE_SHM=0 (buckets through MPI_Allreduce)
# Prints one JSON line per run and a summary line with the medians over the rounds and the
# ratios the issue's targets name; writes build/bench/torch.jsonl. Needs python3-torch and
# python3-mpi4py (scripts/setup.sh --bench).
#   scripts/bench-torch.sh [--rounds 3] [--steps 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
steps=1000
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    *) echo "bench-torch: unknown argument $1" >&2; exit 2 ;;
  esac
done
py=/usr/bin/python3
"$py" -c "import torch, mpi4py" 2>/dev/null ||
  { echo "bench-torch: needs python3-torch and python3-mpi4py (scripts/setup.sh --bench)" >&2; exit 2; }
[[ -f build/python/dtrain/torch/__init__.py && -x build/bin/dtrainrun ]] || scripts/build.sh
export PYTHONPATH="$PWD/build/python"
out=build/bench
mkdir -p "$out"
: >"$out/torch.jsonl"
mpi=(mpirun --bind-to none --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bench=("$py" scripts/bench_torch_dist.py)
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"

# run NAME COMMAND...: the JSON line rank 0 prints, tagged with NAME and the round.
run() {
  local name="$1" line
  shift
  line="$("$@" 2>"$tmp/err" | grep -o '{"bench".*}' | tail -n 1)" ||
    { cat "$tmp/err" >&2; echo "bench-torch: $name failed" >&2; exit 1; }
  "$py" -c 'import json, sys
d = json.loads(sys.argv[1]); d.update(variant=sys.argv[2], round=int(sys.argv[3]), cpu=sys.argv[4])
print(json.dumps(d))' "$line" "$name" "$r" "$cpu" | tee -a "$out/torch.jsonl"
}

for ((r = 1; r <= rounds; r++)); do
  run plain "${bench[@]}" plain "$steps"
  run dtrain-1 "${bench[@]}" dtrain "$steps"
  port=$((29500 + RANDOM % 1000))
  ddp=()
  for rank in 0 1; do
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=$rank WORLD_SIZE=2 \
      "${bench[@]}" ddp-gloo "$steps" >"$tmp/ddp$rank" 2>&1 &
    ddp+=($!)
  done
  for rank in 0 1; do  # a failed DDP process (a port in use, say) is a failed run, not a figure
    wait "${ddp[$rank]}" || { cat "$tmp/ddp$rank" >&2; echo "bench-torch: ddp-gloo rank $rank failed" >&2; exit 1; }
  done
  run ddp-gloo cat "$tmp/ddp0"
  run mpi4py "${mpi[@]}" -np 2 "${bench[@]}" mpi4py-fused "$steps"
  run mpi4py-yield "${mpi[@]}" --mca mpi_yield_when_idle 1 -np 2 "${bench[@]}" mpi4py-fused "$steps"
  run dtrain build/bin/dtrainrun --log-dir "$tmp/logs" -np 2 -- "${bench[@]}" dtrain "$steps"
  DTRAIN_ALLREDUCE_SHM=0 run dtrain-mpi build/bin/dtrainrun --log-dir "$tmp/logs" -np 2 -- \
    "${bench[@]}" dtrain "$steps"
done

"$py" - "$out/torch.jsonl" <<'PY' | tee -a "$out/torch.jsonl"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for x in rows:
    by.setdefault(x["variant"], {})[x["round"]] = x["samples_per_sec"]
rounds = sorted(by["plain"])
ref = {r: max(by["mpi4py"][r], by["mpi4py-yield"][r]) for r in rounds}
med = {v: round(statistics.median(d.values())) for v, d in by.items()}
def ratio(a, b):  # the median of the per-round ratios (each round's runs sat side by side)
    return round(statistics.median(a[r] / b[r] for r in rounds), 3)
print(json.dumps({"bench": "torch-summary", "rounds": len(rounds), "cpu": rows[0]["cpu"],
                  "median_samples_per_sec": med,
                  "dtrain_over_ddp_gloo": ratio(by["dtrain"], by["ddp-gloo"]),
                  "dtrain_over_mpi4py_best": ratio(by["dtrain"], ref),
                  "dtrain_mpi_path_over_mpi4py_best": ratio(by["dtrain-mpi"], ref),
                  "dtrain_1_over_plain": ratio(by["dtrain-1"], by["plain"])}))
PY
