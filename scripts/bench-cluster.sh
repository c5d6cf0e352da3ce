#!/usr/bin/env bash
# Multi-node scaling on the simulated cluster (tests/cluster/cluster.sh: two network-namespace
# "nodes" of this machine, ssh between them, every job launched by dtrainrun on dtn1):
#   1x1        one rank (the baseline)            1x2   two ranks on one node (shared memory)
#   2x1        one rank on each node (flat MPI_Allreduce over TCP)
#   2x2-flat   two ranks on each node, DTRAIN_HIERARCHICAL=0
#   2x2-hier   two ranks on each node, the hierarchical allreduce
#   2x3-flat, 2x3-hier   the same with three ranks on each node (6 ranks: not a power of two,
#              where Open MPI's allreduce algorithm for one flat communicator changes)
#   ps-1node   1 ps + 2 workers on dtn1 (sync)     ps-2nodes  ps:0 and worker:0 on dtn1, worker:1
#              on dtn2 (the ps transport across the link)
# each with the links uncapped and capped by tbf (--cap, default 1gbit), in alternating rounds
# (--repeats, median taken). mnist_train's MLP, batch 50 per rank, 1 epoch. Prints JSON lines
# (samples/s, weak-scaling efficiency = samples/s / (ranks x the 1x1 figure), hierarchical over
# flat), writes build/bench/cluster.{jsonl,png}, and the dtrain_bench allreduce busbw next to a
# TCP stream between the nodes. Needs root (namespaces) and scripts/setup.sh's packages.
# Note: the "nodes" share this machine's cores, so 4 ranks on a 2-core machine are
# oversubscribed (on_node sets OMPI_MCA_mpi_yield_when_idle=1 for that); compare configurations
# with the same rank count, and read 2x1 against 1x2.
#   scripts/bench-cluster.sh [--repeats 3] [--cap 1gbit]
set -euo pipefail
cd "$(dirname "$0")/.."
src="$PWD"
repeats=3
cap=1gbit
while (($#)); do
  case "$1" in
    --repeats) repeats="$2"; shift 2 ;;
    --cap) cap="$2"; shift 2 ;;
    *) echo "bench-cluster: unknown argument $1" >&2; exit 2 ;;
  esac
done
# Always: an incremental build is quick, and a stale binary measures old code.
scripts/build.sh mnist_train dtrainrun dtrain_bench
data=(--data-folder "$src/data/mnist")
[[ -f data/mnist/train-images-idx3-ubyte || -f data/mnist/train-images-idx3-ubyte.gz ]] ||
  data=(--synthetic-data 60000)
out="$src/build/bench"
mkdir -p "$out"
: >"$out/cluster.jsonl"
set +e
source tests/cluster/cluster.sh
cluster_up 2 || exit $?
set -e
work="$CLUSTER_DIR/work"
mkdir -p "$work"
cd "$work"
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"

run_config() {  # name -> samples/s
  local name="$1" hosts=""
  unset DTRAIN_HIERARCHICAL  # (run in a $(...) subshell: nothing leaks to the next)
  case "$name" in
    1x1) hosts=dtn1:1 ;;
    1x2) hosts=dtn1:2 ;;
    2x1) hosts=dtn1:1,dtn2:1 ;;
    2x2-flat) hosts=dtn1:2,dtn2:2; export DTRAIN_HIERARCHICAL=0 ;;
    2x2-hier) hosts=dtn1:2,dtn2:2; export DTRAIN_HIERARCHICAL=1 ;;
    2x3-flat) hosts=dtn1:3,dtn2:3; export DTRAIN_HIERARCHICAL=0 ;;
    2x3-hier) hosts=dtn1:3,dtn2:3; export DTRAIN_HIERARCHICAL=1 ;;
  esac
  rm -rf job
  local launch=(-H "$hosts")
  case "$name" in
    ps-1node)
      echo '{"cluster":{"ps":["dtn1:2222"],"worker":["dtn1:2223","dtn1:2224"]}}' >ps.json
      launch=(--mode ps --cluster-spec ps.json) ;;
    ps-2nodes)
      echo '{"cluster":{"ps":["dtn1:2222"],"worker":["dtn1:2223","dtn2:2224"]}}' >ps.json
      launch=(--mode ps --cluster-spec ps.json) ;;
  esac
  on_node 1 "$src/build/bin/dtrainrun" --output-dir job "${launch[@]}" -- \
    "$src/build/bin/mnist_train" "${data[@]}" --epochs 1 --output-dir job/outputs >console 2>&1 ||
    { tail -n 20 console >&2; echo "bench-cluster: $name failed" >&2; exit 1; }
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if "\"event\":\"summary\"" in l: s = json.loads(l.split("] ", 1)[1])
print(s["samples_per_sec"])' console
}

configs=(1x1 1x2 2x1 2x2-flat 2x2-hier 2x3-flat 2x3-hier ps-1node ps-2nodes)
declare -A sps
for ((r = 0; r < repeats; r++)); do
  for link in none "$cap"; do
    cluster_cap "$link"
    for c in "${configs[@]}"; do
      v="$(run_config "$c")"
      sps["$link/$c"]+="$v "
      echo "round $((r + 1)) link=$link $c: $v samples/s" >&2
    done
  done
done
cluster_cap none

for link in none "$cap"; do
  for c in "${configs[@]}"; do echo "$link $c ${sps[$link/$c]}"; done
done | python3 -c '
import json, statistics, sys
cpu, rows = sys.argv[1], {}
for line in sys.stdin:
    link, c, *v = line.split()
    rows[(link, c)] = statistics.median(float(x) for x in v)
ranks = {"1x1": 1, "1x2": 2, "2x1": 2, "2x2-flat": 4, "2x2-hier": 4, "2x3-flat": 6, "2x3-hier": 6,
         "ps-1node": 2, "ps-2nodes": 2}
for (link, c), s in rows.items():
    j = {"bench": "cluster", "config": c, "link": "uncapped" if link == "none" else link,
         "ranks": ranks[c], "samples_per_sec": round(s),
         "weak_scaling_efficiency": round(s / (ranks[c] * rows[(link, "1x1")]), 3), "cpu": cpu}
    if c.endswith("-hier"):
        j["hierarchical_over_flat"] = round(s / rows[(link, c[:-4] + "flat")], 3)
    if c == "ps-2nodes":
        j["over_ps_1node"] = round(s / rows[(link, "ps-1node")], 3)
    print(json.dumps(j))
' "$cpu" | tee -a "$out/cluster.jsonl"

# Allreduce busbw across the nodes next to one TCP stream between them (uncapped).
on_node 1 "$src/build/bin/dtrainrun" --output-dir bench -H dtn1:1,dtn2:1 -- \
  "$src/build/bin/dtrain_bench" allreduce -b 1M -e 16M -f 4 >busbw.out 2>&1 ||
  { tail -n 20 busbw.out >&2; echo "bench-cluster: dtrain_bench allreduce across the nodes failed" >&2; exit 1; }
sed 's/^\[worker:0\] //' busbw.out | grep '^{' | tee -a "$out/cluster.jsonl"

if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 - "$out/cluster.jsonl" "$out/cluster.png" <<'PY'
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = [json.loads(l) for l in open(sys.argv[1]) if '"bench": "cluster"' in l]
configs = ["1x1", "1x2", "2x1", "2x2-flat", "2x2-hier", "2x3-flat", "2x3-hier", "ps-1node",
           "ps-2nodes"]
links = sorted({r["link"] for r in rows}, key=lambda l: l != "uncapped")
fig, ax = plt.subplots(figsize=(10, 4))
w = 0.8 / len(links)
for k, link in enumerate(links):
    vals = [next(r["samples_per_sec"] for r in rows if r["config"] == c and r["link"] == link) for c in configs]
    ax.bar([i + k * w for i in range(len(configs))], vals, w, label=f"links {link}")
ax.set_xticks([i + w * (len(links) - 1) / 2 for i in range(len(configs))], configs)
ax.set_ylabel("samples/s (MLP, batch 50 per rank)")
ax.set_title("dtrain on a simulated 2-node cluster (" + rows[0]["cpu"] + ")", fontsize=9)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
print("wrote", sys.argv[2])
PY
fi
