#!/usr/bin/env bash
# Multi-process parameter-server jobs on 127.0.0.1, one process per TF_CONFIG task:
#   sync1x2   1 ps + 2 workers, sync, reach the accuracy bar (real MNIST when present); the
#             floats go through shared memory and no segment is left in /dev/shm
#   sync1x2tcp  the same, one epoch, with DTRAIN_PS_SHM=0: every float in ZeroMQ payloads; the
#             chief's timeline has push and wait spans
#   sync2x2   2 ps + 2 workers, sync
#   async1x2  1 ps + 2 workers, async
#   timeout   a worker whose ps never starts fails within --start-timeout, naming the ps task
#   sigtermstart  SIGTERM to a worker waiting for its ps at start-up stops it at once (exit 143),
#             and its shared-memory offer leaves nothing in /dev/shm; --max-staleness without
#             --ps-async is an error saying so (it was ignored)
#   portbusy  a ps whose port is taken fails naming the port
#   vanish    a worker killed mid-training makes the server report it missing, not wait forever
#             (whether it dies mid-step or while the workers sum an epoch's metrics)
# Usage: mp_ps_test.sh BIN_DIR SOURCE_DIR CASE
set -uo pipefail
bin="$1"; src="$2"; case_="$3"
tmp="$(mktemp -d)"
trap 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
# A job id of our own: shared-memory segments are named /dev/shm/dtrain-<job id in hex>-...
export DTRAIN_JOB_ID=$((RANDOM * 32768 + RANDOM))
segments() { ls /dev/shm 2>/dev/null | grep -c "^dtrain-$(printf %x "$DTRAIN_JOB_ID")-" || true; }
fail() { echo "FAIL: $*" >&2; for f in "$tmp"/*.log; do echo "== $f"; tail -n 5 "$f"; done >&2; exit 1; }
if [[ -f "$src/data/mnist/train-images-idx3-ubyte" || -f "$src/data/mnist/train-images-idx3-ubyte.gz" ]]; then
  data=(--data-folder "$src/data/mnist"); real=1
else
  data=(--synthetic-data 12000); real=0
fi
free_ports() {  # N free loopback ports
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
# cluster NPS NW -> sets $cluster
make_cluster() {
  local ports=($(free_ports $(($1 + $2)))) ps="" wk="" i
  for ((i = 0; i < $1; i++)); do ps+="\"127.0.0.1:${ports[i]}\","; done
  for ((i = 0; i < $2; i++)); do wk+="\"127.0.0.1:${ports[$1 + i]}\","; done
  cluster="{\"ps\":[${ps%,}],\"worker\":[${wk%,}]}"
}
task() {  # type index extra-args...
  local type="$1" index="$2"; shift 2
  TF_CONFIG="{\"cluster\":$cluster,\"task\":{\"type\":\"$type\",\"index\":$index}}" \
    timeout 200 "$bin/mnist_train" --mode ps --output-dir "$tmp/out-$type$index" "$@" \
    >"$tmp/$type$index.log" 2>&1
}
run_job() {  # nps nw bar extra-args...
  local nps="$1" nw="$2" bar="$3"; shift 3
  make_cluster "$nps" "$nw"
  local pids=() i rc=0
  for ((i = nw - 1; i >= 0; i--)); do task worker "$i" "${data[@]}" "$@" & pids+=($!); done
  sleep 0.3  # workers first: tasks may start in any order
  for ((i = 0; i < nps; i++)); do task ps "$i" "$@" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  ((rc == 0)) || fail "a task exited $rc"
  summary="$(tail -n 1 "$tmp/worker0.log")"
  echo "$summary"
  python3 -c "
import json, sys
s = json.loads(sys.argv[1]); bar = float(sys.argv[2]) if sys.argv[3] == '1' else 0.9
assert s['mode'] == 'ps' and s['world_size'] == $nw, s
assert s['test_accuracy'] >= bar, 'accuracy %s < %s' % (s['test_accuracy'], bar)
" "$summary" "$bar" "$real" || fail "summary check"
  [[ -f "$tmp/out-worker0/model/checkpoint.bin" ]] || fail "the chief wrote no checkpoint"
  [[ ! -e "$tmp/out-worker1/model" ]] || fail "a non-chief worker wrote outputs"
  (($(segments) == 0)) || fail "shared-memory segments left in /dev/shm"
}

case "$case_" in
sync1x2)
  run_job 1 2 0.97 --epochs 3 --verbose
  grep -q "through shared memory" "$tmp/worker1.log" || fail "no transport line"
  grep -q "1 ps task(s), 1 through shared memory" "$tmp/worker1.log" ||
    fail "the workers did not use shared memory: $(grep 'through shared' "$tmp/worker1.log")"
  ;;
sync1x2tcp)
  DTRAIN_PS_SHM=0 run_job 1 2 0.95 --epochs 1 --verbose --timeline "$tmp/timeline.json"
  grep -q "1 ps task(s), 0 through shared memory" "$tmp/worker1.log" ||
    fail "DTRAIN_PS_SHM=0 still used shared memory"
  # The chief's timeline has the same compute spans as the other modes, plus push and wait.
  python3 - "$tmp/timeline.json" <<'PY' || fail "timeline spans"
import json, sys
names = {e["name"] for e in json.load(open(sys.argv[1]))["traceEvents"]}
missing = {"forward", "backward", "finish_step", "push", "wait"} - names
assert not missing, missing
PY
  ;;
sync2x2) run_job 2 2 0.95 --epochs 1 ;;
# Async runs are timing-dependent (measured 0.970-0.977 over 6 runs): the guard sits below that.
async1x2) run_job 1 2 0.965 --epochs 3 --ps-async ;;
timeout)
  make_cluster 1 1
  start=$SECONDS
  task worker 0 --synthetic-data 600 --start-timeout 2 && fail "worker exited 0 without its ps"
  ((SECONDS - start < 20)) || fail "took $((SECONDS - start)) s"
  grep -q "ps:0 (127.0.0.1:" "$tmp/worker0.log" || fail "error does not name the ps task"
  cat "$tmp/worker0.log"
  ;;
sigtermstart)
  # It waited out --start-timeout, and the launcher's SIGKILL then left its segment behind.
  make_cluster 1 1
  task worker 0 --synthetic-data 600 --start-timeout 60 & w=$!
  for _ in $(seq 100); do (($(segments) > 0)) && break; sleep 0.1; done
  (($(segments) > 0)) || fail "the worker offered no shared memory"
  start=$SECONDS
  pkill -TERM -f "^$bin/mnist_train .*$tmp/out-worker0" || fail "worker not running"
  wait $w; rc=$?
  ((rc == 143)) || fail "exit $rc after SIGTERM, not 143"
  ((SECONDS - start < 5)) || fail "took $((SECONDS - start)) s to stop"
  grep -q "stopped by SIGTERM while starting" "$tmp/worker0.log" || fail "no line saying why it stopped"
  (($(segments) == 0)) || fail "$(segments) shared-memory segment(s) left in /dev/shm"
  cat "$tmp/worker0.log"
  task worker 0 --synthetic-data 600 --max-staleness 2; rc=$?
  ((rc == 2)) || fail "--max-staleness without --ps-async: exit $rc, not 2"
  grep -q "give --ps-async too" "$tmp/worker0.log" || fail "no message saying --ps-async is needed"
  ;;
portbusy)
  make_cluster 1 1
  port="$(echo "$cluster" | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2)"
  python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',$port)); s.listen(); time.sleep(20)" &
  holder=$!
  sleep 0.5
  task ps 0 --start-timeout 5 && fail "ps exited 0 on a busy port"
  kill $holder
  grep -q "$port" "$tmp/ps0.log" && grep -q "already in use" "$tmp/ps0.log" || fail "error does not name the port"
  cat "$tmp/ps0.log"
  ;;
vanish)
  make_cluster 1 2
  task ps 0 --step-timeout 3 & ps=$!
  task worker 0 --synthetic-data 60000 --epochs 100 --step-timeout 3 & w0=$!
  task worker 1 --synthetic-data 60000 --epochs 100 --step-timeout 3 & w1=$!
  sleep 2
  pkill -9 -f "^$bin/mnist_train .*$tmp/out-worker1" || fail "worker 1 not running"
  start=$SECONDS
  wait $ps; rc=$?
  ((rc != 0)) || fail "ps exited 0"
  wait $w0; wait $w1
  ((SECONDS - start < 30)) || fail "took $((SECONDS - start)) s"
  # Killed mid-step (a missing gradient) or between steps (a missing metrics sum).
  grep -qE "no (gradient|answer) from worker\(s\) 1 " "$tmp/ps0.log" || fail "the server did not name worker 1"
  (($(segments) == 0)) || fail "a killed worker left its shared-memory segment behind"
  tail -n 2 "$tmp/ps0.log"
  ;;
*) fail "unknown case $case_" ;;
esac
echo "$case_ ok"
