#!/usr/bin/env bash
# dtrainrun end to end:
#   allreduce  a local 2-rank job: prefixed console lines, logs/worker:r/, outputs, accuracy
#   ps         a local 1 ps + 2 worker job
#   dryrun     --dry-run prints every task's command and environment and starts nothing
#   badinput   bad flags and cluster specs exit 2 with a message saying what is wrong
#   killworker SIGKILL of a worker ends the job within 10 s, naming that worker (both modes)
#   sigterm    SIGTERM to the launcher stops the job and leaves no process behind
#   restart    --max-restarts 1 resumes after a kill and finishes with the accuracy bar
#   restartother a restart never continues another job's checkpoint left in the output folder
#              (the first attempt failed before writing its own: the restart starts from
#              scratch), unless the command asks for it with --resume
#   psresume   a ps job resumed from its checkpoint ends where an uninterrupted one does
#   rejoin     --rejoin-workers 1, an async ps job (1 ps + 3 workers): worker 1 killed mid-training
#              is started again, rejoins where the servers saw it last, and the job finishes
#              with the accuracy bar while the other tasks ran on (same processes throughout);
#              in a sync job the rejoin is refused, saying why, and the job ends
#   secure     a --secure ps job: the launcher's CURVE keys reach every task and training runs
#   lastlines  what a task writes just before it fails (30,000 lines, an error line, a last line
#              without a newline) all reaches its logs and the console, five times over (the
#              launcher stopped reading when a failed task was reaped). ps-mode tasks: under
#              mpirun, Open MPI 4.1 itself drops such output of processes that are not MPI
#              programs (`mpirun -np 2 sh -c 'seq 1 30000'` prints ~18,000 lines a rank)
#   stall      SIGSTOP of rank 1 of 3: the stall watchdog ends the job within --stall-timeout +
#              10 s (exit 124), every surviving rank's last line and the launcher's summary name
#              rank 1, nothing is left
# Usage: mp_launcher_test.sh BIN_DIR SOURCE_DIR CASE
set -uo pipefail
bin="$1"; src="$2"; case_="$3"
tmp="$(mktemp -d)"
trap 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; tail -n 20 "$tmp"/console 2>/dev/null >&2; exit 1; }
if [[ -f "$src/data/mnist/train-images-idx3-ubyte" || -f "$src/data/mnist/train-images-idx3-ubyte.gz" ]]; then
  data=(--data-folder "$src/data/mnist"); real=1
else
  data=(--synthetic-data 12000); real=0
fi
run=("$bin/dtrainrun" --output-dir "$tmp/job" --grace-period 2)
train=("$bin/mnist_train" "${data[@]}" --output-dir "$tmp/job/outputs")
check_summary() {  # file bar
  python3 - "$1" "$2" "$real" <<'PY' || fail "summary check"
import json, sys
lines = [l for l in open(sys.argv[1]) if '"event":"summary"' in l]
assert lines, "no summary line"
s = json.loads(lines[-1].split("] ", 1)[1])
bar = float(sys.argv[2]) if sys.argv[3] == "1" else 0.9
assert s["test_accuracy"] >= bar, f"accuracy {s['test_accuracy']} < {bar}"
print("summary ok:", s["mode"], s["world_size"], s["test_accuracy"])
PY
}
pid_of_task() {  # pattern-in-environ -> pid of that mnist_train under $tmp
  local p
  for p in $(pgrep -f "$tmp/job/outputs"); do
    grep -q mnist_train /proc/$p/cmdline 2>/dev/null || continue
    if tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -q "$1"; then echo "$p"; return; fi
  done
}

case "$case_" in
lastlines)
  task='seq 1 30000; echo LAST-LINE >&2; printf "no newline"; exit 3'
  for i in 1 2 3 4 5; do
    for mode in "--mode ps --num-ps 1 --num-workers 1" "--mode ps --num-ps 1 --num-workers 2"; do
      d="$tmp/ll$i"; rm -rf "$d"
      # shellcheck disable=SC2086
      "$bin/dtrainrun" --log-dir "$d" $mode -- sh -c "$task" >"$tmp/console" 2>&1; rc=$?
      ((rc == 3)) || fail "$mode: exit $rc, not 3"
      # The task that failed first wrote everything (the others were stopped on its failure).
      failed="$(sed -n 's/^\[dtrainrun\] task \([a-z]*:[0-9]*\) exited with code 3.*/\1/p' "$tmp/console")"
      [[ -n "$failed" ]] || fail "$mode: the console names no failed task"
      for w in "$d/logs/$failed"; do
        n="$(grep -c . "$w/stdout")"
        ((n == 30001)) || fail "$mode, try $i: $w/stdout has $n of its 30,001 lines"
        [[ "$(tail -n 1 "$w/stdout")" == *"no newline" ]] || fail "$mode: $w/stdout lost its last line"
        grep -q "LAST-LINE" "$w/stderr" || fail "$mode, try $i: $w/stderr lost its error line"
      done
      grep -A20 "last lines of" "$tmp/console" | grep -q "LAST-LINE" ||
        fail "$mode, try $i: the summary does not show the failed task's last lines"
    done
  done
  echo "lastlines ok"
  ;;
stall)
  "${run[@]}" -np 3 -- "${train[@]}" --epochs 1000 --stall-warning 2 --stall-timeout 8 \
    >"$tmp/console" 2>&1 & job=$!
  victim=""
  for _ in $(seq 100); do
    victim="$(pid_of_task OMPI_COMM_WORLD_RANK=1)"
    [[ -n "$victim" ]] && grep -q "epoch 1/" "$tmp/console" && break
    sleep 0.2
  done
  [[ -n "$victim" ]] || fail "rank 1 never started"
  kill -STOP "$victim"
  start=$SECONDS
  while kill -0 $job 2>/dev/null && ((SECONDS - start < 30)); do sleep 0.2; done
  kill -0 $job 2>/dev/null && fail "job still running 30 s after SIGSTOP of rank 1"
  wait $job; rc=$?
  ((rc == 124)) || fail "exit $rc, not 124"
  took=$((SECONDS - start))
  ((took <= 18)) || fail "ended $took s after the stop (--stall-timeout 8 + 10)"
  grep -q "^\[dtrainrun\] the job stalled (worker:[02]'s watchdog): waited [0-9]* s in '.*'.*rank 1 (" \
    "$tmp/console" || fail "the launcher's summary does not name rank 1"
  for r in 0 2; do
    last="$(grep -v '^\s*$' "$tmp/job/logs/worker:$r/stderr" | tail -n 1)"
    [[ "$last" == *"stall: "*"rank 1 ("* ]] || fail "worker:$r's last line does not name rank 1: $last"
  done
  sleep 0.5
  [[ -z "$(pgrep -f "$tmp/job" || true)" ]] || fail "processes left behind"
  echo "stall ok: SIGSTOP of rank 1 ended the job after $took s, exit $rc"
  grep "stall: ending" "$tmp/console" | head -2
  ;;
allreduce)
  "${run[@]}" -np 2 -- "${train[@]}" --epochs 3 >"$tmp/console" 2>&1 || fail "job exited $?"
  grep -q "^\[worker:0\] epoch 3/3" "$tmp/console" || fail "no prefixed epoch line"
  [[ -s "$tmp/job/logs/worker:0/stdout" ]] || fail "no logs/worker:0/stdout"
  grep -q "epoch 3/3" "$tmp/job/logs/worker:0/stdout" || fail "log file lacks the epoch line"
  [[ -f "$tmp/job/outputs/model/checkpoint.bin" ]] || fail "no checkpoint"
  check_summary "$tmp/console" 0.97
  ;;
ps)
  "${run[@]}" --mode ps --num-ps 1 --num-workers 2 -- "${train[@]}" --epochs 2 >"$tmp/console" 2>&1 ||
    fail "job exited $?"
  for t in ps:0 worker:0 worker:1; do [[ -d "$tmp/job/logs/$t" ]] || fail "no logs/$t"; done
  check_summary "$tmp/console" 0.97
  ;;
dryrun)
  out="$("${run[@]}" --dry-run --mode ps --num-ps 2 --num-workers 2 -- "${train[@]}")" || fail "dry run failed"
  echo "$out"
  [[ $(grep -c '^\[ps:[01]\] .*TF_CONFIG=.*"type":"ps"' <<<"$out") == 2 ]] || fail "ps tasks"
  [[ $(grep -c '^\[worker:[01]\] .*TF_CONFIG=.*"type":"worker"' <<<"$out") == 2 ]] || fail "workers"
  grep -q "DTRAIN_JOB_ID=" <<<"$out" || fail "no job id"
  # Any program can be the command: nothing is appended to it, settings go in the environment.
  out="$("${run[@]}" --dry-run --mode ps --num-ps 1 --num-workers 1 --secure -- python3 train.py --lr 1)"
  [[ $(grep -c "DTRAIN_SECURE=1 DTRAIN_START_TIMEOUT=60 .*python3 train.py --lr 1\$" <<<"$out") == 2 ]] ||
    { echo "$out"; fail "flags appended to a foreign command"; }
  out="$("${run[@]}" --dry-run --node-count 2 --process-count-per-node 4 -H n1,n2 -- "${train[@]}")"
  echo "$out"
  grep -q "mpirun -np 8 -H n1:4,n2:4 .*--bind-to none --tag-output" <<<"$out" || fail "mpirun line"
  echo '{"cluster":{"ps":["127.0.0.1:5000"],"chief":["127.0.0.1:5001"],"worker":["127.0.0.1:5002"]}}' >"$tmp/c.json"
  out="$("${run[@]}" --dry-run --mode ps --cluster-spec "$tmp/c.json" -- "${train[@]}")"
  grep -q '^\[chief:0\]' <<<"$out" || fail "chief from the cluster spec"
  [[ -z "$(pgrep -f "$tmp/job" || true)" ]] || fail "dry run started processes"
  ;;
badinput)
  expect() {  # message args...
    local msg="$1"; shift
    "$bin/dtrainrun" "$@" >"$tmp/out" 2>&1; local rc=$?
    ((rc == 2)) || { cat "$tmp/out"; fail "exit $rc for: $*"; }
    grep -q -- "$msg" "$tmp/out" || { cat "$tmp/out"; fail "no '$msg' for: $*"; }
  }
  echo '{"cluster":{"ps":["127.0.0.1:5000"],"worker":["127.0.0.1:5000"]}}' >"$tmp/dup.json"
  echo '{"cluster":{"worker":["127.0.0.1:5001"]}}' >"$tmp/nops.json"
  echo '{"cluster":{"ps":["127.0.0.1:5000"],"worker":["127.0.0.1"]}}' >"$tmp/noport.json"
  echo '{"cluster": {"ps": ["127.0.0.1:5000"],,}}' >"$tmp/bad.json"
  expect "used twice" --mode ps --cluster-spec "$tmp/dup.json" -- x
  expect "at least one ps" --mode ps --cluster-spec "$tmp/nops.json" -- x
  expect "is not host:port" --mode ps --cluster-spec "$tmp/noport.json" -- x
  expect "line 1, column" --mode ps --cluster-spec "$tmp/bad.json" -- x
  expect "does not match --node-count 2 x --process-count-per-node 4 = 8" --node-count 2 --process-count-per-node 4 -np 6 -- x
  expect "needs both" --node-count 2 -- x
  expect "names 1 host" --node-count 2 --process-count-per-node 1 -H a -- x
  expect "for --mode allreduce" --mode ps -np 2 -- x
  expect "mode: .* not in" --mode nope -- x
  # Negative counts were taken as 2^64-1 (--max-restarts -1 restarted without end).
  for flag in -np --node-count --process-count-per-node --max-restarts --min-np --max-np --rejoin-workers; do
    expect "must be at least 0, got -1" $flag -1 -- x
  done
  # Flags that would do nothing are errors, and a dry run makes the checks a real run makes.
  echo '{"cluster":{"ps":["127.0.0.1:5000"],"worker":["127.0.0.1:5001"]}}' >"$tmp/ok.json"
  expect "--num-ps is for --mode ps" -np 2 --num-ps 2 -- x
  expect "--num-workers makes the tasks of a job on this machine; this job's come from --cluster-spec" \
    --mode ps --num-workers 3 --cluster-spec "$tmp/ok.json" -- x
  expect "--max-np is for an elastic job: give --min-np too" -np 2 --max-np 4 -- x
  expect "--min-np is for allreduce jobs" --dry-run --mode ps --min-np 1 -- x
  expect "--rejoin-workers is for ps jobs" --dry-run -np 2 --rejoin-workers 1 -- x
  expect "--min-np 3 but the job has 2 rank" --dry-run -np 2 --min-np 3 -- x
  expect "--secure is for --mode ps" --dry-run -np 2 --secure -- x
  expect "$tmp: is a folder, not a file" --mode ps --cluster-spec "$tmp" -- x
  printf 'a slots=2\nb sots=2\n' >"$tmp/hf"
  expect "line 2: 'sots=2' is not one of Open MPI's hostfile settings" --hostfile "$tmp/hf" -- x
  printf 'a slots=4\nb slots=4\n' >"$tmp/hf"
  expect "a has 4 slot(s) where --process-count-per-node is 2" \
    --hostfile "$tmp/hf" --node-count 2 --process-count-per-node 2 -- x
  : >"$tmp/blocked"
  expect "cannot write the log file $tmp/blocked/logs/mpirun/stdout" --log-dir "$tmp/blocked" -- true
  # A newcomer's mistakes, each with a message that says what to do.
  expect "the training command and its flags go after --" --dry-run "$bin/mnist_train" --epochs 1
  expect "unknown flag --num-worker: did you mean --num-workers?" --mode ps --num-worker 2 -- x
  "$bin/mnist_train" --epoch 1 >"$tmp/out" 2>&1; rc=$?
  ((rc == 2)) && grep -q "unknown flag --epoch: did you mean --epochs?" "$tmp/out" ||
    { cat "$tmp/out"; fail "mnist_train --epoch: exit $rc, no suggestion"; }
  TF_CONFIG="$(cat "$tmp/ok.json")" expect "TF_CONFIG names ps tasks: add --mode ps" --dry-run -- x
  echo '{"cluster":{"ps":["127.0.0.1:5000"],"worker":["127.0.0.1:5001"]},"task":{"type":"ps","index":0}}' >"$tmp/task.json"
  expect "names a task: that is one task's configuration" --mode ps --cluster-spec "$tmp/task.json" -- x
  expect "--start-timeout is for --mode ps (mpirun starts" -np 2 --start-timeout 5 -- x
  # A rank that aborts the job (its error on it alone) is named, with its own last lines.
  "$bin/dtrainrun" --log-dir "$tmp/ab" -np 2 -- "$bin/mnist_train" --data-folder "$tmp/none" \
    --output-dir "$tmp/ab/outputs" >"$tmp/out" 2>&1 && fail "a job with no data exited 0"
  # Both ranks see it; whichever aborts first is named (by the rank's own error line when
  # Open MPI loses its MPI_ABORT report: "ORTE_ERROR_LOG: Data unpack would read past end of
  # buffer ... show_help.c", one run in six here).
  grep -qE "task worker:[01] (exited with code 2 \(MPI_Abort\)|reported an error; mpirun exited with code 2)" \
    "$tmp/out" || { cat "$tmp/out"; fail "the aborting rank is not named"; }
  grep -A3 "last lines of worker:[01]" "$tmp/out" | grep -q "does not exist" ||
    { cat "$tmp/out"; fail "its last lines are not its error"; }
  # ps-mode settings in a job of another mode are errors (--secure looked as if it encrypted).
  "$bin/mnist_train" --synthetic-data 600 --output-dir "$tmp/sec" --secure >"$tmp/out" 2>&1; rc=$?
  ((rc == 2)) && grep -q "encrypts a ps job's traffic; this is a local job" "$tmp/out" ||
    { cat "$tmp/out"; fail "--secure outside ps mode: exit $rc"; }
  "$bin/mnist_train" --synthetic-data 600 --output-dir "$tmp/sec" --ps-async >"$tmp/out" 2>&1; rc=$?
  ((rc == 2)) && grep -q "are for ps mode; this is a local job" "$tmp/out" ||
    { cat "$tmp/out"; fail "--ps-async outside ps mode: exit $rc"; }
  # Slurm's variables are read only when they would name the hosts.
  SLURM_JOB_NODELIST='n[1-' "$bin/dtrainrun" --dry-run -H a,b -- x >"$tmp/out" 2>&1 ||
    { cat "$tmp/out"; fail "a malformed Slurm variable stopped a job given -H"; }
  SLURM_JOB_NODELIST='n[1-' expect "SLURM_JOB_NODELIST='n\[1-': unbalanced brackets" --dry-run -- x
  # Every task exited 0 while a grandchild kept their output open: the launcher waited for it.
  start=$SECONDS
  nap="sleep 300.$$"  # this test's own, for pgrep
  timeout 20 "$bin/dtrainrun" --log-dir "$tmp/bg" --mode ps --num-workers 1 -- sh -c "$nap & echo done" \
    >"$tmp/out" 2>&1 || { cat "$tmp/out"; fail "a background grandchild: exit $? after $((SECONDS - start)) s"; }
  ((SECONDS - start < 10)) || fail "a background grandchild kept the launcher $((SECONDS - start)) s"
  pgrep -f "^$nap" >/dev/null && { pkill -f "^$nap"; fail "the grandchild was left running"; }
  echo "badinput ok"
  ;;
killworker)
  for mode in allreduce ps; do
    rm -rf "$tmp/job"
    if [[ $mode == allreduce ]]; then
      "${run[@]}" -np 2 -- "${train[@]}" --epochs 1000 >"$tmp/console" 2>&1 & job=$!
      marker=OMPI_COMM_WORLD_RANK=1
    else
      "${run[@]}" --mode ps --num-ps 1 --num-workers 2 -- "${train[@]}" --epochs 1000 >"$tmp/console" 2>&1 & job=$!
      marker='"type":"worker"}'
    fi
    victim=""
    for _ in $(seq 100); do
      if [[ $mode == ps ]]; then
        for p in $(pgrep -f "$tmp/job/outputs"); do
          tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -q '"index":1,"type":"worker"' && victim=$p
        done
      else
        victim="$(pid_of_task "$marker")"
      fi
      [[ -n "$victim" ]] && break
      sleep 0.2
    done
    [[ -n "$victim" ]] || fail "$mode: worker 1 never started"
    sleep 1
    kill -9 "$victim"
    start=$SECONDS
    for _ in $(seq 100); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
    kill -0 $job 2>/dev/null && fail "$mode: job still running 10 s after SIGKILL of worker 1"
    wait $job; rc=$?
    ((rc != 0)) || fail "$mode: job exited 0"
    grep -q "task worker:1 was killed by signal 9" "$tmp/console" || fail "$mode: worker 1 not named"
    sleep 0.5
    [[ -z "$(pgrep -f "$tmp/job" || true)" ]] || fail "$mode: processes left behind"
    echo "$mode: ended $((SECONDS - start)) s after the kill, exit $rc"
  done
  ;;
sigterm)
  for mode in allreduce ps; do
    rm -rf "$tmp/job"  # each mode's logs of its own
    if [[ $mode == allreduce ]]; then
      "${run[@]}" -np 2 -- "${train[@]}" --epochs 1000 >"$tmp/console" 2>&1 & job=$!
    else
      "${run[@]}" --mode ps --num-ps 1 --num-workers 2 -- "${train[@]}" --epochs 1000 >"$tmp/console" 2>&1 & job=$!
    fi
    for _ in $(seq 100); do grep -q "epoch 1/" "$tmp/console" 2>/dev/null && break; sleep 0.2; done
    kill -TERM $job
    for _ in $(seq 100); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
    kill -0 $job 2>/dev/null && fail "$mode: launcher still running 10 s after SIGTERM"
    wait $job; rc=$?
    ((rc == 143)) || fail "$mode: exit $rc, expected 143"
    sleep 0.5
    left="$(pgrep -f "$tmp/job" || true)"
    [[ -z "$left" ]] || fail "$mode: processes left behind: $left"
    # A ps chief says it stopped (waiting on servers stopped with it, it was SIGKILLed by the
    # launcher after --grace-period, saying nothing). Allreduce ranks get their SIGTERM from
    # mpirun, which SIGKILLs them soon after on its own clock.
    if [[ $mode == ps ]]; then
      grep -q "stopped by SIGTERM" "$tmp/job/logs/worker:0/stderr" ||
        fail "$mode: the chief did not say it stopped: $(tail -n 3 "$tmp/job/logs/worker:0/stderr")"
    fi
    echo "$mode: stopped cleanly"
  done
  # A ps chief stopped by a SIGTERM of its own writes no checkpoint (the servers hold the state)
  # and says which one it keeps (it said "checkpoint written").
  rm -rf "$tmp/job"
  "${run[@]}" --mode ps --num-ps 1 --num-workers 2 -- "${train[@]}" --epochs 1000 >"$tmp/console" 2>&1 &
  job=$!
  for _ in $(seq 100); do grep -q "epoch 1/" "$tmp/console" 2>/dev/null && break; sleep 0.2; done
  chief="$(pid_of_task '"index":0,"type":"worker"')"
  [[ -n "$chief" ]] || fail "ps: no chief to stop"
  kill -TERM "$chief"
  for _ in $(seq 300); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
  kill -0 $job 2>/dev/null && { kill -TERM $job; fail "ps: the job still ran 30 s after its chief's SIGTERM"; }
  wait $job
  line="$(grep -o "stopped by SIGTERM after step .*" "$tmp/console")"
  [[ "$line" == *"; keeping the last checkpoint (step "[0-9]*"; --resume continues from there)" ]] ||
    fail "ps: the chief's stop line does not name the checkpoint it keeps: $line"
  echo "ps chief: $line"
  ;;
restart)
  "${run[@]}" -np 2 --max-restarts 1 -- "${train[@]}" --epochs 3 >"$tmp/console" 2>&1 & job=$!
  for _ in $(seq 300); do [[ -f "$tmp/job/outputs/model/checkpoint.bin" ]] && break; sleep 0.1; done
  [[ -f "$tmp/job/outputs/model/checkpoint.bin" ]] || fail "no checkpoint appeared"
  victim="$(pid_of_task OMPI_COMM_WORLD_RANK=1)"
  [[ -n "$victim" ]] || fail "rank 1 not found"
  kill -9 "$victim"
  wait $job || fail "job exited $? after a restart"
  grep -q "restarting from the latest checkpoint" "$tmp/console" || fail "no restart"
  grep -q "resuming from" "$tmp/console" || fail "the restart did not resume"
  python3 -c "
import json
lines = [json.loads(l) for l in open('$tmp/job/outputs/metrics.jsonl')]
assert [l['epoch'] for l in lines] == [1, 2, 3], lines
" || fail "metrics.jsonl epochs"
  check_summary "$tmp/console" 0.97
  ;;
restartother)
  # Job A leaves a checkpoint (1 rank, epoch 1 of 1); job B, 2 ranks in the same folder, fails
  # before its first checkpoint and is restarted.
  cat >"$tmp/failfirst.sh" <<'SH'
#!/usr/bin/env bash
[[ -n "${DTRAIN_RESUME:-}" ]] || { echo "first attempt fails on purpose" >&2; exit 3; }
exec "$@"
SH
  chmod +x "$tmp/failfirst.sh"
  short=(--max-steps-per-epoch 40)
  for out in job job2; do
    "$bin/mnist_train" "${data[@]}" --output-dir "$tmp/$out/outputs" --epochs 1 --seed 7 \
      "${short[@]}" >"$tmp/console" 2>&1 || fail "job A ($out)"
  done
  "${run[@]}" -np 2 --max-restarts 1 -- "$tmp/failfirst.sh" "${train[@]}" --epochs 1 \
    "${short[@]}" >"$tmp/console" 2>&1 || fail "job B exited $?"
  grep -q "restarting from the latest checkpoint" "$tmp/console" || fail "no restart"
  if grep -q "resuming from" "$tmp/console"; then fail "job B's restart continued job A's checkpoint"; fi
  grep -q "was written by another job" "$tmp/console" || fail "no line saying whose checkpoint it is"
  python3 -c "
import json
lines = [json.loads(l) for l in open('$tmp/job/outputs/metrics.jsonl')]
assert [(l['epoch'], l['world_size']) for l in lines] == [(1, 2)], lines
" || fail "job B's metrics.jsonl is not its own epoch"
  # Asked for: --resume on the command continues A's checkpoint, at the restart too.
  "$bin/dtrainrun" --output-dir "$tmp/job2" --grace-period 2 -np 2 --max-restarts 1 -- \
    "$tmp/failfirst.sh" "$bin/mnist_train" "${data[@]}" --output-dir "$tmp/job2/outputs" \
    --epochs 2 --resume "${short[@]}" >"$tmp/console" 2>&1 || fail "job B' exited $?"
  grep -q "resuming from" "$tmp/console" || fail "--resume did not continue job A's checkpoint"
  python3 -c "
import json
lines = [json.loads(l) for l in open('$tmp/job2/outputs/metrics.jsonl')]
assert [(l['epoch'], l['world_size']) for l in lines] == [(1, 1), (2, 2)], lines
" || fail "job B' metrics.jsonl"
  echo "restartother: a restart started from scratch; --resume continued the checkpoint asked for"
  ;;
psresume)
  ps=(--mode ps --num-ps 2 --num-workers 2 --)
  last_loss() { python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])['loss'])" "$1"; }
  "$bin/dtrainrun" --output-dir "$tmp/a" "${ps[@]}" "$bin/mnist_train" "${data[@]}" --epochs 2 \
    --output-dir "$tmp/a/outputs" >"$tmp/console" 2>&1 || fail "uninterrupted job"
  "$bin/dtrainrun" --output-dir "$tmp/b" "${ps[@]}" "$bin/mnist_train" "${data[@]}" --epochs 1 \
    --output-dir "$tmp/b/outputs" >"$tmp/console" 2>&1 || fail "first half"
  "$bin/dtrainrun" --output-dir "$tmp/b" "${ps[@]}" "$bin/mnist_train" "${data[@]}" --epochs 2 \
    --resume --output-dir "$tmp/b/outputs" >"$tmp/console" 2>&1 || fail "resumed half"
  grep -q "resuming from" "$tmp/console" || fail "did not resume"
  a="$(last_loss "$tmp/a/outputs/metrics.jsonl")"; b="$(last_loss "$tmp/b/outputs/metrics.jsonl")"
  [[ "$a" == "$b" ]] || fail "resumed loss $b differs from uninterrupted $a"
  echo "psresume: epoch-2 loss $a both ways"
  ;;
rejoin)
  "${run[@]}" --rejoin-workers 1 --mode ps --num-ps 1 --num-workers 3 -- "${train[@]}" --epochs 3 \
    --ps-async >"$tmp/console" 2>&1 &
  job=$!
  for _ in $(seq 100); do grep -q "epoch 1/3" "$tmp/console" && break; sleep 0.1; done
  victim="$(pid_of_task '"index":1,"type":"worker"')"
  others="$(pid_of_task '"index":0,"type":"worker"') $(pid_of_task '"index":2,"type":"worker"') $(pid_of_task '"type":"ps"')"
  [[ -n "$victim" && $(wc -w <<<"$others") == 3 ]] || fail "tasks not found"
  kill -9 "$victim"
  for _ in $(seq 100); do grep -q "rejoins the job at step" "$tmp/console" && break; sleep 0.1; done
  for p in $others; do kill -0 "$p" 2>/dev/null || fail "task $p did not keep running through the rejoin"; done
  wait $job || fail "job exited $? after the rejoin"
  grep -q "worker:1 was killed by signal 9 (Killed); starting it again to rejoin the job" "$tmp/console" || fail "no rejoin line"
  grep -q "worker 1 (worker:1 (127.0.0.1:[0-9]*)) rejoined (a new process) after [0-9]* steps" "$tmp/console" || fail "the ps task did not see the rejoin"
  line="$(grep -o "worker 1 rejoins the job at step .*" "$tmp/console")"
  [[ -n "$line" ]] || fail "worker 1 did not say where it rejoined"
  # An asynchronous job through a kill, 4 processes on 2 cores: its test accuracy after 3
  # epochs spreads with the timing (0.961-0.978 in 20 runs here, 0.9536 once in CI; 0.975-0.977
  # without the kill), so the bar is lower than a synchronous job's.
  check_summary "$tmp/console" 0.94
  # Synchronous jobs cannot take a worker back: said, and the job ends.
  "${run[@]}" --rejoin-workers 1 --mode ps --num-ps 1 --num-workers 2 -- "${train[@]}" --epochs 20 \
    --step-timeout 20 >"$tmp/console" 2>&1 &
  job=$!
  for _ in $(seq 100); do grep -q "epoch 1/20" "$tmp/console" && break; sleep 0.1; done
  kill -9 "$(pid_of_task '"index":1,"type":"worker"')"
  wait $job && fail "a sync job with a lost worker exited 0"
  grep -q "only asynchronous jobs (--ps-async) take a worker back" "$tmp/console" || fail "no reason given"
  echo "rejoin ok: $line"
  ;;
secure)
  "${run[@]}" --mode ps --secure --num-ps 1 --num-workers 2 -- "${train[@]}" --epochs 1 \
    --max-steps-per-epoch 100 >"$tmp/console" 2>&1 || fail "secure job exited $?"
  out="$("${run[@]}" --dry-run --mode ps --secure --num-ps 1 --num-workers 1 -- x)"
  grep -q '^\[ps:0\] .*DTRAIN_PS_SERVER_SECRET_KEY=' <<<"$out" || fail "ps task lacks its secret key"
  grep '^\[worker:0\]' <<<"$out" | grep -q 'SERVER_SECRET' && fail "a worker got the server's secret"
  # --secure reaches the task as DTRAIN_SECURE=1 (nothing is appended to the command, #14).
  grep -q '^\[worker:0\] .*DTRAIN_SECURE=1 .*DTRAIN_PS_CLIENT_SECRET_KEY=' <<<"$out" || fail "worker keys"
  # The dry run names the secret variables but shows no secret key (a 40-character Z85 value).
  grep -q "SECRET_KEY='\?<secret>" <<<"$out" || fail "dry run does not mark the secrets"
  if grep -oE "SECRET_KEY='?[^ ']{40}" <<<"$out"; then fail "dry run printed a secret key"; fi
  grep -q '"event":"summary"' "$tmp/console" || fail "no summary"
  echo "secure ok"
  ;;
*) fail "unknown case $case_" ;;
esac
echo "$case_ ok"
