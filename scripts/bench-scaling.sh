#!/usr/bin/env bash
# Weak scaling of allreduce training: mnist_train's samples/s with 1 and 2 ranks (batch 50 per
# rank), measured in one run, best of --repeats; the efficiency samples(n) / (n * samples(1)),
# over all epochs and in steady state (the epochs after the first, whose first step carries
# oneDNN's one-time kernel generation, ~30 ms, which weighs twice as much with 2 ranks: each has
# half the steps);
# PyTorch 1.13's two-process figures in the same run when python3-torch is installed
# (scripts/setup.sh --bench). Prints JSON lines, writes build/bench/scaling.{jsonl,png}.
#   scripts/bench-scaling.sh [--ranks "1 2 4"] [--repeats 3] [--epochs 3]
# More ranks than cores run with --oversubscribe.
set -euo pipefail
cd "$(dirname "$0")/.."
ranks="1 2"
repeats=3
epochs=3
while (($#)); do
  case "$1" in
    --ranks) ranks="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    *) echo "bench-scaling: unknown argument $1" >&2; exit 2 ;;
  esac
done
scripts/build.sh  # incremental: a stale binary measures old code
data=(--data-folder data/mnist)
[[ -f data/mnist/train-images-idx3-ubyte || -f data/mnist/train-images-idx3-ubyte.gz ]] ||
  data=(--synthetic-data 60000)
out=build/bench
mkdir -p "$out"
: >"$out/scaling.jsonl"
mpi=(mpirun --bind-to none --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

declare -A best steady
for ((r = 0; r < repeats; r++)); do
  for n in $ranks; do
    rm -rf "$tmp/out$n"
    line="$("${mpi[@]}" -np "$n" build/bin/mnist_train --mode allreduce "${data[@]}" \
      --epochs "$epochs" --output-dir "$tmp/out$n" | tail -n 1)"
    sps="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["samples_per_sec"])' "$line")"
    # Steady state: the epochs after the first, from metrics.jsonl (the first when only one).
    st="$(python3 -c '
import json, sys
e = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rest = e[1:] or e
print(sum(x["samples_per_sec"] for x in rest) / len(rest))' "$tmp/out$n/metrics.jsonl")"
    if [[ -z "${best[$n]:-}" ]] || python3 -c "import sys; sys.exit(not $sps > ${best[$n]})"; then
      best[$n]="$sps"
    fi
    if [[ -z "${steady[$n]:-}" ]] || python3 -c "import sys; sys.exit(not $st > ${steady[$n]})"; then
      steady[$n]="$st"
    fi
  done
done
first="${ranks%% *}"
for n in $ranks; do
  python3 - "$n" "${best[$n]}" "${best[$first]}" "${steady[$n]}" "${steady[$first]}" "$first" <<'PY' | tee -a "$out/scaling.jsonl"
import json, sys
n, sps, base, st, st_base, first = (float(a) for a in sys.argv[1:7])
print(json.dumps({"bench": "scaling", "impl": "dtrain", "ranks": int(n), "batch_size_per_rank": 50,
                  "samples_per_sec": round(sps),
                  "weak_scaling_efficiency": round(sps / (n / first * base), 3),
                  "steady_samples_per_sec": round(st),
                  "steady_weak_scaling_efficiency": round(st / (n / first * st_base), 3)}))
PY
done

if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  /usr/bin/python3 scripts/bench_torch.py 50 1200 | tee -a "$out/scaling.jsonl"
  port=$((29500 + RANDOM % 1000))
  ddp=()
  for rank in 0 1; do
    MASTER_ADDR=127.0.0.1 MASTER_PORT=$port RANK=$rank WORLD_SIZE=2 \
      /usr/bin/python3 scripts/bench_torch_dist.py ddp-gloo 600 >"$out/ddp$rank.out" 2>&1 &
    ddp+=($!)
  done
  for rank in 0 1; do  # a failed DDP process is a failed run, not a missing figure
    wait "${ddp[$rank]}" ||
      { cat "$out/ddp$rank.out" >&2; echo "bench-scaling: ddp-gloo rank $rank failed" >&2; exit 1; }
  done
  grep -h '^{' "$out/ddp0.out" "$out/ddp1.out" | tee -a "$out/scaling.jsonl"
  if /usr/bin/python3 -c "import mpi4py" 2>/dev/null; then
    "${mpi[@]}" -np 2 /usr/bin/python3 scripts/bench_torch_dist.py mpi4py-fused 600 |
      tee -a "$out/scaling.jsonl"
  fi
else
  echo "bench-scaling: python3-torch not installed; no PyTorch reference (scripts/setup.sh --bench)" >&2
fi

if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 - "$out" <<'PY'
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out = sys.argv[1]
rows = [json.loads(l) for l in open(out + "/scaling.jsonl") if l.strip()]
d = [r for r in rows if r["impl"] == "dtrain"]
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot([r["ranks"] for r in d], [r["samples_per_sec"] for r in d], "o-", label="dtrain allreduce")
ax.plot([r["ranks"] for r in d], [d[0]["samples_per_sec"] * r["ranks"] / d[0]["ranks"] for r in d],
        "--", color="gray", label="linear")
for r in rows:
    if r["impl"].startswith("pytorch"):
        ax.plot([r.get("ranks", 1)], [r["samples_per_sec"]], "s", label=r["impl"])
ax.set_xlabel("ranks (batch 50 each)")
ax.set_ylabel("samples/s (all ranks)")
ax.set_title("MNIST MLP weak scaling")
ax.legend()
fig.tight_layout()
fig.savefig(out + "/scaling.png", dpi=100)
print("bench-scaling: plot in " + out + "/scaling.png", file=sys.stderr)
PY
else
  echo "bench-scaling: no $out/scaling.png: Debian's python3-matplotlib is not installed" \
    "(scripts/setup.sh --bench installs it); the figures are in $out/scaling.jsonl" >&2
fi
