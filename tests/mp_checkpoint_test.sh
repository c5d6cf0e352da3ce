#!/usr/bin/env bash
# Step checkpoints (--checkpoint-every-steps) and the checkpoint on SIGTERM:
#   local      one process killed with SIGKILL at a random moment, resumed: ends with the
#              parameters and optimizer state of an uninterrupted run, bit for bit, having redone
#              fewer steps than the checkpoint interval
#   allreduce  the same with 2 ranks (rank 1 killed; mpirun ends the job)
#   ps         a parameter-server job (1 ps + 2 workers, sync, through dtrainrun --max-restarts 1)
#              whose ps task is killed with SIGKILL at a random moment: the launcher restarts it,
#              the chief resumes from its latest step checkpoint (the servers' shards gathered
#              into it), and the job ends bit for bit where an uninterrupted one does
#   sigterm    SIGTERM to a training process: it checkpoints the step it is at and exits 143;
#              resumed, it ends bit for bit where an uninterrupted run does; then the same with
#              2 ranks, SIGTERM to both (as mpirun forwards it): they agree on the step to stop at
# Usage: mp_checkpoint_test.sh BIN_DIR SOURCE_DIR CASE
set -uo pipefail
bin="$1"; src="$2"; case_="$3"
tmp="$(mktemp -d)"
trap 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none --timeout 200)
every=7  # does not divide the 60 steps of an epoch (2 ranks) or 120 (1 rank)
train=("$bin/mnist_train" --synthetic-data 6000 --epochs 40 --seed 3)

params() {  # checkpoint -> "global_step step_in_epoch" on stdout; --same A B compares bitwise
  python3 - "$@" <<'PY'
import json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack_from("<Q", b, 12)[0]
    return json.loads(b[20:20 + n]), b[20 + n:-4]
if sys.argv[1] == "--same":
    (ma, a), (mb, b) = load(sys.argv[2]), load(sys.argv[3])
    assert ma["global_step"] == mb["global_step"], (ma["global_step"], mb["global_step"])
    if a != b:
        print("parameters differ after", ma["global_step"], "steps"); sys.exit(1)
    print("same parameters and optimizer state (bitwise) after", ma["global_step"], "steps")
else:
    m, _ = load(sys.argv[1])
    print(m["global_step"], m.get("extra", {}).get("step_in_epoch", 0))
PY
}

# run_killed NAME SIGNAL LAUNCH... : starts the job, sends SIGNAL to its process (or rank 1)
# after a random 0.8-2.3 s, waits for it, resumes it to the end; prints how many steps were redone.
interrupted() {
  local sig="$1"; shift
  "$@" --output-dir "$tmp/cut" >"$tmp/cut.log" 2>&1 &
  local job=$!
  sleep "$(python3 -c 'import random; print(0.8 + 1.5 * random.random())')"
  local victim
  # The training process itself (not mpirun), and under mpirun rank 1.
  victim="$(pgrep -f "mnist_train.*$tmp/cut" | while read -r p; do
    [[ "$(tr '\0' '\n' </proc/$p/cmdline 2>/dev/null | head -n 1)" == */mnist_train ]] || continue
    if tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -q OMPI_COMM_WORLD_RANK=0; then continue; fi
    echo "$p"; done | tail -n 1)"
  [[ -n "$victim" ]] || fail "no process to interrupt (the job ended too early?)"
  kill -"$sig" "$victim"
  wait $job; echo "interrupted job exited $?" >&2
}

case "$case_" in
local|allreduce)
  launch=("${train[@]}" --checkpoint-every-steps $every)
  [[ $case_ == allreduce ]] && launch=("${mpi[@]}" -np 2 "${train[@]}" --checkpoint-every-steps $every)
  "${launch[@]}" --output-dir "$tmp/whole" >"$tmp/whole.log" 2>&1 || fail "uninterrupted run exited $?"
  interrupted KILL "${launch[@]}"
  read -r ck_step ck_in <<<"$(params "$tmp/cut/model/checkpoint.bin")"
  "${launch[@]}" --output-dir "$tmp/cut" --resume >"$tmp/resume.log" 2>&1 || fail "resume exited $?"
  grep -q "resuming from .*checkpoint.bin" "$tmp/resume.log" || fail "did not resume"
  params --same "$tmp/whole/model/checkpoint.bin" "$tmp/cut/model/checkpoint.bin" || fail "resumed run differs"
  echo "$case_ ok: killed after the checkpoint at step $ck_step ($ck_in steps into its epoch)"
  ;;
ps)
  launch=("$bin/dtrainrun" --mode ps --num-ps 1 --num-workers 2 --max-restarts 1 --log-dir "$tmp/logs" --
          "$bin/mnist_train" --synthetic-data 6000 --epochs 20 --seed 3 --checkpoint-every-steps $every)
  timeout 200 "${launch[@]}" --output-dir "$tmp/whole" >"$tmp/whole.log" 2>&1 || { rc=$?; cat "$tmp/whole.log"; fail "uninterrupted run exited $rc"; }
  grep -q "restarting" "$tmp/whole.log" && fail "the uninterrupted run restarted"
  timeout 200 "${launch[@]}" --output-dir "$tmp/cut" >"$tmp/cut.log" 2>&1 &
  job=$!
  sleep "$(python3 -c 'import random; print(1.0 + 1.5 * random.random())')"
  victim="$(pgrep -f "mnist_train.*$tmp/cut" | while read -r p; do
    tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -q '"type":"ps"' && echo "$p"; done | head -n 1)"
  [[ -n "$victim" ]] || fail "no ps task to kill (the job ended too early?)"
  kill -KILL "$victim"
  wait $job; rc=$?
  ((rc == 0)) || { cat "$tmp/cut.log"; fail "the restarted job exited $rc"; }
  grep -q "restarting from the latest checkpoint" "$tmp/cut.log" || { cat "$tmp/cut.log"; fail "the launcher did not restart"; }
  line="$(grep -o "resuming from .*" "$tmp/cut.log" | head -n 1)"
  [[ -n "$line" ]] || { cat "$tmp/cut.log"; fail "the chief did not resume from a checkpoint"; }
  params --same "$tmp/whole/model/checkpoint.bin" "$tmp/cut/model/checkpoint.bin" || fail "resumed ps job differs"
  echo "ps ok: ps:0 killed; the job went on ${line#resuming from *checkpoint.bin }"
  ;;
sigterm)
  "${train[@]}" --output-dir "$tmp/whole" >"$tmp/whole.log" 2>&1 || fail "uninterrupted run exited $?"
  "${train[@]}" --output-dir "$tmp/cut" >"$tmp/cut.log" 2>&1 &
  job=$!
  sleep "$(python3 -c 'import random; print(0.8 + 1.5 * random.random())')"
  kill -TERM $job
  wait $job; rc=$?
  ((rc == 143)) || { cat "$tmp/cut.log"; fail "exit $rc after SIGTERM, not 143"; }
  grep -q "stopped by SIGTERM after step [0-9]*; checkpoint written" "$tmp/cut.log" ||
    { cat "$tmp/cut.log"; fail "no line saying where it stopped"; }
  read -r ck_step ck_in <<<"$(params "$tmp/cut/model/checkpoint.bin")"
  grep -q "after step $ck_step;" "$tmp/cut.log" || fail "the checkpoint is not at the step it stopped"
  "${train[@]}" --output-dir "$tmp/cut" --resume >"$tmp/resume.log" 2>&1 ||
    fail "resume exited $?"
  params --same "$tmp/whole/model/checkpoint.bin" "$tmp/cut/model/checkpoint.bin" || fail "resumed run differs"
  echo "sigterm ok: stopped and checkpointed at step $ck_step ($ck_in into its epoch), nothing lost"
  # 2 ranks: SIGTERM to each, a little apart; they stop together and the chief checkpoints.
  "${mpi[@]}" -np 2 "${train[@]}" --output-dir "$tmp/whole2" >"$tmp/whole2.log" 2>&1 || fail "2-rank run exited $?"
  "${mpi[@]}" -np 2 "${train[@]}" --output-dir "$tmp/cut2" >"$tmp/cut2.log" 2>&1 &
  job=$!
  sleep "$(python3 -c 'import random; print(0.8 + 1.5 * random.random())')"
  for p in $(pgrep -f "mnist_train.*$tmp/cut2"); do
    [[ "$(tr '\0' '\n' </proc/$p/cmdline 2>/dev/null | head -n 1)" == */mnist_train ]] || continue
    kill -TERM "$p"; sleep 0.01
  done
  wait $job; rc=$?
  ((rc != 0)) || fail "2 ranks: exited 0 after SIGTERM"
  grep -q "stopped by SIGTERM after step [0-9]*; checkpoint written" "$tmp/cut2.log" ||
    { cat "$tmp/cut2.log"; fail "2 ranks: the chief wrote no checkpoint on SIGTERM"; }
  read -r ck_step ck_in <<<"$(params "$tmp/cut2/model/checkpoint.bin")"
  "${mpi[@]}" -np 2 "${train[@]}" --output-dir "$tmp/cut2" --resume >"$tmp/resume2.log" 2>&1 ||
    fail "2 ranks: resume exited $?"
  params --same "$tmp/whole2/model/checkpoint.bin" "$tmp/cut2/model/checkpoint.bin" ||
    fail "2 ranks: resumed run differs"
  echo "sigterm ok (2 ranks): both stopped at step $ck_step ($ck_in into its epoch), nothing lost"
  ;;
*) fail "unknown case $case_" ;;
esac
