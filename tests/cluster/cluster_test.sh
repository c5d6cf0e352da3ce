#!/usr/bin/env bash
# Multi-node tests on a simulated cluster of two nodes (tests/cluster/cluster.sh), all launched
# through dtrainrun, as a user on a cluster would, from one of two places (PLACEMENT):
#   node       dtrainrun on dtn1, a machine that trains (the default)
#   head       dtrainrun on dtn3, a third machine that runs no task (a login or head node)
# The cases:
#   allreduce  2 nodes x 2 processes end with the same parameters, bitwise, as the same 4 ranks
#              on one machine (flat MPI_Allreduce): through --node-count/--process-count-per-node
#              -H (the hierarchical allreduce, chosen by itself), and through --hostfile with
#              DTRAIN_HIERARCHICAL=0 (flat across nodes) and --network-interface eth0 (a wrong
#              name lists the interfaces there are); ranks 0-1 on dtn1 and 2-3 on dtn2 with
#              local ranks 0-1 on each
#   ps         ps:0 on dtn2, workers on dtn1 and dtn2 (names in TF_CONFIG, --network-interface
#              eth0); the same parameters as that job on one machine
#   secure     --secure across nodes: no secret key in any process's command line on any node
#              during the job, none in logs/ or outputs/, no key file left on any node; a worker
#              with a key pair other than the job's is refused, named in the server's log
#   badpath    a program missing on one node (both modes): exit non-zero naming the node
#   torch      dtrain.torch 2 nodes x 2 ranks (tests/torch_shard_test.py): every rank takes the
#              hierarchical sharded step and ends within 1e-5 (relative) of the bucketed path
#              (DTRAIN_ALLREDUCE_SHM=0) on parameters, .grad and optimizer state
#   slurm      inside a Slurm allocation (SLURM_JOB_NODELIST=dtn[1-2] and tasks per node, as
#              sbatch sets them) dtrainrun places both modes' tasks without -H
#   partition  dtn2's link down during training (both modes): the job ends within its timeout +
#              10 s, non-zero, naming dtn2's task and dtn2 as unreachable ("could not check it
#              for leftover processes"); nothing is left on the nodes that can be reached, and
#              nothing on dtn2 within 30 s of its link coming back
#   elastic    --min-np 1: every process of dtn2 killed mid-epoch; the job goes on on dtn1 from the
#              latest step checkpoint within 15 s and finishes
#   killlauncher  SIGKILL of dtrainrun during a job across nodes (both modes) leaves nothing
#              running on any node
# Every case ends with no process of the job left on any node. Exits 77 (skipped) where
# network namespaces cannot be made.
# Usage: cluster_test.sh BIN_DIR SOURCE_DIR CASE [PLACEMENT]
set -uo pipefail
bin="$1"; src="$2"; case_="$3"; placement="${4:-node}"
source "$src/tests/cluster/cluster.sh"
# Each job ends within this (ctest kills the whole test at its TIMEOUT, skipping the cleanup);
# a stalled job ends sooner, through the stall watchdog.
export CLUSTER_JOB_TIMEOUT=150 DTRAIN_STALL_TIMEOUT=${DTRAIN_STALL_TIMEOUT:-120}
tmp="$(mktemp -d /tmp/dtrain-cluster-test.XXXXXX)"
cluster_on_exit 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"'
case "$placement" in
node) L=1; nodes=2 ;;
head) L=3; nodes=3 ;;
*) echo "FAIL: unknown placement '$placement' (node or head)" >&2; exit 2 ;;
esac
cluster_up "$nodes" || exit $?
echo "placement: dtrainrun on dtn$L"
cd "$tmp"
fail() { echo "FAIL: $*" >&2; tail -n 30 "$tmp"/console* 2>/dev/null >&2; exit 1; }
train=("$bin/mnist_train" --synthetic-data 4000 --seed 7)
run=("$bin/dtrainrun" --grace-period 2)

no_leftovers() {  # what: nothing of the job on any node (the nodes' sshd excepted; only the
  # nodes in NODES_TO_CHECK when it is set)
  local i p left=""
  for _ in $(seq 50); do
    left=""
    for i in ${NODES_TO_CHECK:-$(seq "$CLUSTER_NODES")}; do
      for p in $(node_processes "$i"); do left+=" dtn$i:$p($(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | cut -c1-60))"; done
    done
    [[ -z "$left" ]] && return 0
    sleep 0.2
  done
  fail "$1: processes left:$left"
}
same_params() {  # a b what: the parameters and optimizer state of two checkpoints, bitwise
  python3 - "$1" "$2" "$3" <<'PY' || fail "$3: parameters differ"
import json, struct, sys
def load(path):  # "DTRAINCK" | u32 version | u64 meta length | meta | f32 params+state | crc
    b = open(path, "rb").read()
    n = struct.unpack_from("<Q", b, 12)[0]
    return json.loads(b[20:20 + n]), b[20 + n:-4]
(ma, a), (mb, b) = load(sys.argv[1]), load(sys.argv[2])
assert ma["global_step"] == mb["global_step"], (ma["global_step"], mb["global_step"])
if a != b:
    fa, fb = struct.unpack(f"<{len(a)//4}f", a), struct.unpack(f"<{len(b)//4}f", b)
    diff = max(abs(x - y) for x, y in zip(fa, fb))
    print(f"{sys.argv[3]}: {sum(x != y for x, y in zip(fa, fb))} of {len(fa)} values differ, by up to {diff:g}")
    sys.exit(1)
print(f"{sys.argv[3]}: same parameters and optimizer state (bitwise) after {ma['global_step']} steps")
PY
}

case "$case_" in
allreduce)
  # The reference: the same 4 ranks on one machine, through MPI_Allreduce as across nodes.
  DTRAIN_ALLREDUCE_SHM=0 on_node "$L" "${run[@]}" --output-dir one -np 4 -- "${train[@]}" --epochs 2 \
    --output-dir one/outputs >console.one 2>&1 || fail "one-machine job exited $?"
  on_node "$L" "${run[@]}" --output-dir two --node-count 2 --process-count-per-node 2 -H dtn1,dtn2 \
    -- "${train[@]}" --epochs 2 --output-dir two/outputs --verbose >console 2>&1 || fail "2x2 job exited $?"
  for r in 0 1 2 3; do
    node=$((r / 2 + 1)); lr=$((r % 2))
    grep -q "^\[worker:$r\] \[rank $r/4 dtn$node:[0-9]*\] node dtn$node: local rank $lr of 2, node $((node - 1)) of 2, device cpu" console ||
      fail "rank $r is not local rank $lr on dtn$node"
  done
  grep -q "hierarchical allreduce: 2 machines x 2 ranks" console || fail "not hierarchical"
  same_params one/outputs/model/checkpoint.bin two/outputs/model/checkpoint.bin "2 nodes x 2 (-H, hierarchical)"
  printf 'dtn1 slots=2\ndtn2 slots=2\n' >hostfile
  DTRAIN_HIERARCHICAL=0 on_node "$L" "${run[@]}" --output-dir three --hostfile hostfile \
    --network-interface eth0 -- \
    "${train[@]}" --epochs 2 --output-dir three/outputs --verbose >console.hf 2>&1 ||
    fail "--hostfile job exited $?"
  grep -q '"world_size":4' console.hf || fail "--hostfile: not 4 ranks"
  grep -q "allreduce over mpi: 4 ranks" console.hf || fail "DTRAIN_HIERARCHICAL=0: not flat"
  on_node "$L" "${run[@]}" --output-dir four --hostfile hostfile --network-interface nope0 -- \
    "${train[@]}" >console.badif 2>&1 && fail "--network-interface nope0 was accepted"
  grep -q "no network interface 'nope0' on this machine; interfaces here: .*eth0 ($(node_ip "$L"))" \
    console.badif || fail "a wrong interface name does not list the interfaces"
  same_params one/outputs/model/checkpoint.bin three/outputs/model/checkpoint.bin "2 nodes x 2 (--hostfile, flat)"
  # One machine short of /dev/shm: every rank falls back to MPI_Allreduce together (dtn2's
  # ranks alone did, and the start-up check ended the job: 'disagrees ... allreduce_strategy').
  on_node 2 mount -o remount,size=2m /dev/shm
  on_node "$L" "${run[@]}" --output-dir five -H dtn1:2,dtn2:2 -- "${train[@]}" --epochs 1 \
    --output-dir five/outputs >console.shm 2>&1 || { tail -20 console.shm; fail "a small /dev/shm on dtn2: exit $?"; }
  on_node 2 mount -o remount,size=4g /dev/shm
  grep -q "rank(s) of this job have too little room for the shared-memory allreduce" console.shm ||
    { tail -20 console.shm; fail "a small /dev/shm on dtn2: no note"; }
  no_leftovers allreduce
  ;;
ps)
  echo '{"cluster":{"ps":["dtn2:2222"],"worker":["dtn1:2223","dtn2:2224"]}}' >cluster.json
  echo '{"cluster":{"ps":["127.0.0.1:2222"],"worker":["127.0.0.1:2223","127.0.0.1:2224"]}}' >local.json
  on_node "$L" "${run[@]}" --output-dir one --mode ps --cluster-spec local.json -- "${train[@]}" --epochs 2 \
    --output-dir one/outputs >console.one 2>&1 || fail "one-machine ps job exited $?"
  on_node "$L" "${run[@]}" --output-dir two --mode ps --cluster-spec cluster.json \
    --network-interface eth0 -- "${train[@]}" --epochs 2 \
    --output-dir two/outputs --verbose >console 2>&1 || fail "ps job across nodes exited $?"
  grep -q '^\[ps:0\] \[ps 0/1 dtn2:' console || fail "ps:0 did not run on dtn2"
  grep -q '^\[worker:1\] \[worker 1/2 dtn2:' console || fail "worker:1 did not run on dtn2"
  grep -q '^\[worker:0\] \[worker 0/2 dtn1:' console || fail "worker:0 did not run on dtn1"
  for t in ps:0 worker:0 worker:1; do [[ -s "two/logs/$t/stderr" ]] || fail "no two/logs/$t"; done
  same_params one/outputs/model/checkpoint.bin two/outputs/model/checkpoint.bin "ps across nodes"
  no_leftovers ps
  ;;
secure)
  echo '{"cluster":{"ps":["dtn2:2222"],"worker":["dtn1:2223","dtn2:2224"]}}' >cluster.json
  on_node "$L" "${run[@]}" --output-dir job --mode ps --secure --cluster-spec cluster.json -- \
    "${train[@]}" --epochs 6 --output-dir job/outputs >console 2>&1 &
  launcher=$!
  # While it runs: learn both secrets from the tasks themselves (a local worker's environment,
  # the remote ps task's key file), and record every process's command line on the machine
  # (the nodes share its process table).
  client="" server="" cpub="" spub=""
  : >cmdlines
  while kill -0 $launcher 2>/dev/null; do
    for p in $(pgrep -f "$bin/mnist_train"); do
      env_="$({ tr '\0' '\n' </proc/$p/environ; } 2>/dev/null)"
      [[ -z "$client" ]] && client="$(sed -n 's/^DTRAIN_PS_CLIENT_SECRET_KEY=//p' <<<"$env_")"
      [[ -z "$cpub" ]] && cpub="$(sed -n 's/^DTRAIN_PS_CLIENT_PUBLIC_KEY=//p' <<<"$env_")"
      [[ -z "$spub" ]] && spub="$(sed -n 's/^DTRAIN_PS_SERVER_PUBLIC_KEY=//p' <<<"$env_")"
      [[ -z "$server" ]] && server="$(sed -n 's/^DTRAIN_PS_SERVER_SECRET_KEY=//p' <<<"$env_")"
      kf="$(sed -n 's/^DTRAIN_PS_KEY_FILE=//p' <<<"$env_")"
      # A remote task's key file, in its node's own /dev/shm: through the process's root.
      if [[ -n "$kf" && ( -z "$server" || -z "$client" ) ]]; then
        ls -ld "/proc/$p/root$(dirname "$kf")" "/proc/$p/root$kf" >>keyfile.modes 2>/dev/null
        [[ -z "$server" ]] && server="$(sed -n 's/^DTRAIN_PS_SERVER_SECRET_KEY=//p' "/proc/$p/root$kf" 2>/dev/null)"
        [[ -z "$client" ]] && client="$(sed -n 's/^DTRAIN_PS_CLIENT_SECRET_KEY=//p' "/proc/$p/root$kf" 2>/dev/null)"
      fi
    done
    for c in /proc/[0-9]*/cmdline; do tr '\0' ' ' <"$c"; echo; done >>cmdlines 2>/dev/null
    sleep 0.1
  done
  wait $launcher || fail "--secure job across nodes exited $?"
  [[ -n "$client" && -n "$server" ]] || fail "could not read the job's keys from its tasks"
  [[ "$client" != "$server" ]] || fail "one key for both roles"
  grep -q "^drwx------ " keyfile.modes && grep -q "^-rw------- " keyfile.modes ||
    { cat keyfile.modes; fail "the remote key file is not private (0700 folder, 0600 file)"; }
  echo "saw $(wc -l <cmdlines) command lines during the job"
  grep -qF -e "$client" -e "$server" cmdlines && fail "a secret key was on a command line"
  grep -rqF -e "$client" -e "$server" job console && fail "a secret key is in the logs or outputs"
  for i in $(seq "$CLUSTER_NODES"); do
    left="$(on_node "$i" sh -c 'ls -d /dev/shm/dtrain-keys.* /tmp/dtrain-keys.* 2>/dev/null')"
    [[ -z "$left" ]] || fail "key files left on dtn$i: $left"
  done
  grep -q '"mode":"ps"' console || fail "no summary"
  no_leftovers secure
  # A worker with a key pair that is not the job's client pair is refused, and the server's log
  # names where it came from.
  [[ -n "$spub" && -n "$cpub" ]] || fail "no public keys recorded"
  echo '{"cluster":{"ps":["dtn2:2222"],"worker":["dtn1:2223"]}}' >one.json
  keys=(DTRAIN_PS_SERVER_PUBLIC_KEY="$spub" DTRAIN_PS_CLIENT_PUBLIC_KEY="$cpub")
  on_node 2 env "${keys[@]}" DTRAIN_PS_SERVER_SECRET_KEY="$server" \
    TF_CONFIG='{"cluster":{"ps":["dtn2:2222"],"worker":["dtn1:2223"]},"task":{"type":"ps","index":0}}' \
    "$bin/mnist_train" --synthetic-data 1000 --secure --mode ps --start-timeout 6 >ps.out 2>&1 &
  # The intruder: the server's own pair as its client pair (valid keys, not the job's client key).
  on_node 1 env DTRAIN_PS_SERVER_PUBLIC_KEY="$spub" DTRAIN_PS_CLIENT_PUBLIC_KEY="$spub" \
    DTRAIN_PS_CLIENT_SECRET_KEY="$server" \
    TF_CONFIG='{"cluster":{"ps":["dtn2:2222"],"worker":["dtn1:2223"]},"task":{"type":"worker","index":0}}' \
    "$bin/mnist_train" --synthetic-data 1000 --secure --mode ps --start-timeout 4 >intruder.out 2>&1 &&
    fail "a worker without the job's client key trained"
  wait
  grep -q "ps:0 (dtn2:2222): refused a client from 10.213.77.11 without the job's key" ps.out ||
    { cat ps.out intruder.out; fail "the server's log does not name the refused client"; }
  no_leftovers "secure (wrong key)"
  echo "a worker with another key pair was refused: $(grep -o "refused a client from [0-9.]*" ps.out | head -1)"
  echo "secure ok: no secret on a command line, in logs or outputs, or left on a node"
  ;;
badpath)
  # The program exists on dtn1 only: dtn2 sees an empty folder over its copy.
  mkdir prog && cp "$bin/mnist_train" prog/
  on_node 2 mount -t tmpfs tmpfs "$tmp/prog"
  echo '{"cluster":{"ps":["dtn1:2222"],"worker":["dtn1:2223","dtn2:2224"]}}' >cluster.json
  start=$SECONDS
  on_node "$L" "${run[@]}" --output-dir job --mode ps --cluster-spec cluster.json --start-timeout 20 \
    -- "$tmp/prog/mnist_train" --synthetic-data 2000 >console 2>&1
  rc=$?
  ((rc != 0)) || fail "ps: exited 0"
  grep -q "task worker:1 on dtn2 exited with code 127" console || fail "ps: the summary does not name worker:1 on dtn2"
  grep -q "cannot run .*prog/mnist_train on dtn2" console || fail "ps: no message naming the program and the node"
  ((SECONDS - start < 30)) || fail "ps: took $((SECONDS - start)) s"
  no_leftovers "badpath ps"
  on_node "$L" "${run[@]}" --output-dir job2 -H dtn1:1,dtn2:1 -- "$tmp/prog/mnist_train" \
    --synthetic-data 2000 >console.mpi 2>&1
  rc=$?
  ((rc != 0)) || fail "allreduce: exited 0"
  grep -q "on dtn2" console.mpi || { cat console.mpi; fail "allreduce: the summary does not name dtn2"; }
  no_leftovers "badpath allreduce"
  echo "badpath ok"
  ;;
torch)
  # dtrain.torch across nodes: 2 x 2 ranks take the hierarchical sharded step (local sums in each
  # node's shared memory, an allreduce of each piece between the nodes) and end where the
  # bucketed path (DTRAIN_ALLREDUCE_SHM=0, one MPI_Allreduce over the 4 ranks) does.
  /usr/bin/python3 -c "import torch" 2>/dev/null || { echo "SKIP: python3-torch is not installed"; exit 77; }
  [[ -f "$bin/../python/dtrain/torch/__init__.py" ]] || { echo "SKIP: dtrain.torch was not built"; exit 77; }
  py=(/usr/bin/env PYTHONPATH="$bin/../python:$src/tests" /usr/bin/python3 "$src/tests/torch_shard_test.py")
  for shm in 1 0; do
    on_node "$L" "${run[@]}" --output-dir t$shm --node-count 2 --process-count-per-node 2 -H dtn1,dtn2 \
      -- /usr/bin/env DTRAIN_ALLREDUCE_SHM=$shm "${py[@]}" "$tmp/t$shm.npz" >console.t$shm 2>&1 ||
      fail "dtrain.torch 2x2 (DTRAIN_ALLREDUCE_SHM=$shm) exited $?"
    [[ $(grep -o "every case checked" console.t$shm | wc -l) == 4 ]] || fail "not all 4 ranks (DTRAIN_ALLREDUCE_SHM=$shm)"
  done
  for r in 0 1 2 3; do
    grep -q "rank $r: sharded=True, hierarchical=True, every case checked" console.t1 ||
      fail "rank $r did not take the hierarchical sharded step"
  done
  grep -q "rank 0: sharded=False, hierarchical=None, every case checked" console.t0 || fail "DTRAIN_ALLREDUCE_SHM=0 was not bucketed"
  /usr/bin/python3 "$src/tests/compare_npz.py" t1.npz t0.npz 1e-5 "2 nodes x 2, hierarchical sharded vs bucketed" ||
    fail "dtrain.torch: the hierarchical sharded step differs"
  no_leftovers torch
  ;;
slurm)
  # Inside a Slurm allocation (its variables as sbatch sets them; no controller needed), no -H:
  # the node list and the tasks per node place the ranks, and the ps tasks.
  SLURM_JOB_NODELIST='dtn[1-2]' SLURM_TASKS_PER_NODE='2(x2)' on_node "$L" "${run[@]}" \
    --output-dir job -- "${train[@]}" --epochs 1 --verbose >console 2>&1 || fail "allreduce in Slurm exited $?"
  grep -q '"world_size":4' console || fail "allreduce in Slurm: not 4 ranks"
  grep -q "^\[worker:3\] \[rank 3/4 dtn2:[0-9]*\] node dtn2: local rank 1 of 2" console ||
    fail "allreduce in Slurm: rank 3 not on dtn2"
  SLURM_JOB_NODELIST='dtn[1-2]' SLURM_NTASKS_PER_NODE=2 on_node "$L" "${run[@]}" --output-dir job2 \
    --mode ps -- "${train[@]}" --epochs 1 --verbose >console.ps 2>&1 || fail "ps in Slurm exited $?"
  grep -q '^\[ps:0\] \[ps 0/1 dtn1:' console.ps || fail "ps in Slurm: ps:0 not on dtn1"
  grep -q '^\[worker:2\] \[worker 2/3 dtn2:' console.ps || fail "ps in Slurm: worker:2 not on dtn2"
  grep -q '"mode":"ps".*"world_size":3' console.ps || fail "ps in Slurm: not 3 workers"
  no_leftovers slurm
  echo "slurm ok: both modes placed by SLURM_JOB_NODELIST and the tasks per node"
  ;;
partition)
  # dtn2's link goes down during training: the job ends within its timeout + 10 s, non-zero,
  # naming dtn2's task, and nothing is left on either node (ranks, orted, ssh sessions, tasks).
  echo '{"cluster":{"ps":["dtn1:2222"],"worker":["dtn1:2223","dtn2:2224"]}}' >cluster.json
  for mode in allreduce ps; do
    if [[ $mode == ps ]]; then
      args=(--mode ps --cluster-spec cluster.json); targs=(--step-timeout 8 --stall-warning 2)
      name="worker:1 (dtn2:2224)"
    else
      args=(-H dtn1:1,dtn2:1); targs=(--stall-warning 2 --stall-timeout 8); name="rank 1 (dtn2)"
    fi
    on_node "$L" "${run[@]}" --output-dir "job-$mode" "${args[@]}" -- "${train[@]}" --epochs 500 \
      "${targs[@]}" >"console.$mode" 2>&1 &
    for _ in $(seq 100); do grep -q "epoch 2/" "console.$mode" 2>/dev/null && break; sleep 0.2; done
    grep -q "epoch 2/" "console.$mode" || fail "$mode: training did not start"
    ip -n "$(node_ns 2)" link set eth0 down
    start=$SECONDS
    while pgrep -f "^$bin/dtrainrun .*job-$mode" >/dev/null && ((SECONDS - start < 40)); do sleep 0.2; done
    took=$((SECONDS - start))
    pgrep -f "^$bin/dtrainrun .*job-$mode" >/dev/null && fail "$mode: still running $took s after the partition"
    wait
    ((took <= 18)) || fail "$mode: ended $took s after the partition (timeout 8 + 10)"
    grep -q "^\[dtrainrun\] task .* the other tasks were stopped" "console.$mode" ||
      fail "$mode: no failure summary"
    grep -q "$name" "console.$mode" || { tail -20 "console.$mode"; fail "$mode: nothing names $name"; }
    # Before the timeout, warnings name what is awaited (--stall-warning 2).
    if [[ $mode == ps ]]; then
      # (in a step, or in an epoch's metrics sum when the link went down there)
      grep -qE "stall: ps:0 \(dtn1:2222\): (step [0-9]* has waited [0-9]* s for gradients from|the metrics sum [0-9]* has waited [0-9]* s for) worker\(s\) 1 \(worker:1 \(dtn2:2224\)\)" \
        "console.$mode" || { tail -20 "console.$mode"; fail "ps: no stall warning naming worker:1"; }
    else
      grep -q "stall: waiting [0-9]* s in .*not responding: rank 1 (dtn2)" "console.$mode" ||
        fail "allreduce: no stall warning naming rank 1"
    fi
    # dtn2 cannot be reached: the summary says so rather than claim it clean.
    grep -q "^\[dtrainrun\] dtn2 unreachable: could not check it for leftover processes" \
      "console.$mode" || { tail -20 "console.$mode"; fail "$mode: dtn2 not named unreachable"; }
    NODES_TO_CHECK="$(seq "$CLUSTER_NODES" | grep -vx 2)" no_leftovers "partition ($mode)"
    ip -n "$(node_ns 2)" link set eth0 up
    back=$SECONDS
    # Behind the partition the job's processes end by themselves (their ssh sessions and peers
    # are gone), once the link is back at the latest.
    for _ in $(seq 150); do [[ -z "$(node_processes 2)" ]] && break; sleep 0.2; done
    [[ -z "$(node_processes 2)" ]] || fail "$mode: processes left on dtn2 30 s after its link came back: $(node_processes 2 | tr '\n' ' ')"
    echo "$mode: the partition ended the job after $took s; nothing left on the reachable nodes, and on dtn2 $((SECONDS - back)) s after its link came back"
    grep -m1 -e "stall: ending" -e "no answer from" -e "did not" "console.$mode" || true
  done
  ;;
elastic)
  # --min-np 1: every process of dtn2 killed mid-epoch 2 of 3; the job goes on on dtn1 alone
  # from the latest step checkpoint and finishes.
  on_node "$L" "${run[@]}" --output-dir job -H dtn1:1,dtn2:1 --min-np 1 -- "$bin/mnist_train" \
    --synthetic-data 60000 --seed 7 --epochs 3 --checkpoint-every-steps 50 --output-dir job/outputs \
    >console 2>&1 &
  for _ in $(seq 300); do grep -q "epoch 1/3" console 2>/dev/null && break; sleep 0.1; done
  grep -q "epoch 1/3" console || { cat console; fail "epoch 1 never ended"; }
  sleep 0.3
  node_processes 2 | xargs -r kill -9
  killed=$SECONDS
  for _ in $(seq 600); do grep -q "resuming from" console && break; sleep 0.1; done
  back=$((SECONDS - killed))
  wait
  grep -q "resuming from" console || { tail -30 console; fail "never resumed"; }
  grep -q "elastic: going on with 1 rank(s) on dtn1:1 from the latest checkpoint" console ||
    { tail -30 console; fail "no elastic restart line"; }
  grep -q "the checkpoint was made by 2 worker(s), this job has 1" console ||
    fail "the world size change is not said"
  python3 - console <<'PY' || fail "summary"
import json, sys
s = [json.loads(l.split("] ", 1)[1]) for l in open(sys.argv[1]) if '"event":"summary"' in l][-1]
assert s["world_size"] == 1 and s["epochs"] == 3, s
assert s["test_accuracy"] >= 0.9, s
print("elastic: finished on 1 rank, test accuracy", s["test_accuracy"])
PY
  ((back <= 15)) || fail "training resumed $back s after the kill (15 s allowed)"
  no_leftovers elastic
  grep -h -e "elastic: going on" -e "checkpoint was made by" -e "resuming from" console
  echo "elastic ok: training again $back s after dtn2 was lost"
  # dtn2's rank fails at its first start (exit 3, no signal: mpirun names the rank, not its
  # node): the job goes on without dtn2, not without dtn1 (it dropped dtn1, the launcher's).
  cat >"$tmp/failonce.sh" <<SH
#!/bin/sh
if [ "\$(hostname)" = dtn2 ] && [ ! -e "$tmp/failed-once" ]; then touch "$tmp/failed-once"; exit 3; fi
exec "\$@"
SH
  chmod +x "$tmp/failonce.sh"
  on_node "$L" "${run[@]}" --output-dir job2 -H dtn1:1,dtn2:1 --min-np 1 -- "$tmp/failonce.sh" \
    "$bin/mnist_train" --synthetic-data 4000 --seed 7 --epochs 1 --output-dir job2/outputs \
    >console2 2>&1 || { tail -30 console2; fail "the job with dtn2 failing once exited $?"; }
  grep -q "task worker:1 on dtn2 exited with code 3" console2 ||
    { tail -30 console2; fail "the failed rank's machine is not named"; }
  grep -q "elastic: going on with 1 rank(s) on dtn1:1" console2 ||
    { tail -30 console2; fail "the elastic restart did not drop dtn2"; }
  no_leftovers elastic2
  echo "elastic ok: dtn2's failed rank dropped dtn2"
  ;;
killlauncher)
  echo '{"cluster":{"ps":["dtn2:2222"],"worker":["dtn1:2223","dtn2:2224"]}}' >cluster.json
  for mode in ps allreduce; do
    if [[ $mode == ps ]]; then
      args=(--mode ps --cluster-spec cluster.json)
    else
      args=(-H dtn1:1,dtn2:1)
    fi
    on_node "$L" "${run[@]}" --output-dir "job-$mode" "${args[@]}" -- "${train[@]}" --epochs 200 \
      >"console.$mode" 2>&1 &
    job=$!
    launcher=""
    for _ in $(seq 50); do
      launcher="$(pgrep -f "^$bin/dtrainrun .*job-$mode")" && break
      sleep 0.1
    done
    [[ -n "$launcher" ]] || fail "$mode: no dtrainrun process found to kill"
    for _ in $(seq 100); do grep -q "epoch 1/" "console.$mode" 2>/dev/null && break; sleep 0.2; done
    [[ -n "$(node_processes 2)" ]] || { cat "console.$mode"; fail "$mode: nothing runs on dtn2"; }
    kill -9 $launcher
    wait $job 2>/dev/null; rc=$?
    ((rc == 137)) || fail "$mode: the job exited $rc, not 137 (SIGKILL of the launcher)"
    no_leftovers "launcher killed ($mode)"
    echo "$mode: nothing left on any node after SIGKILL of the launcher"
  done
  ;;
*) fail "unknown case $case_" ;;
esac
