#!/usr/bin/env bash
# Multi-process tests of allreduce mode through mpirun and mnist_train:
#   e2e       2 ranks train (real MNIST when present) reducing through shared memory, chief-only
#             outputs, timeline; then the MPI_Allreduce path's timeline with several buckets a step
#   mismatch  ranks started with different batch sizes stop with an error naming rank and field
#   kill      SIGKILL of rank 1 ends the whole job within a bounded time, no process left behind
#   settings  ranks with another training set or fusion threshold stop naming the field; the
#             stall watchdog off on one rank only does not misalign the start-up collectives; a
#             SIGTERM is honoured with fewer than 8 steps per epoch
#   smallshm  a /dev/shm too small for the shared-memory allreduce: a note, and MPI_Allreduce
#   onefails  an error only rank 1 sees (its data folder is missing) ends every rank, no hang
#   startfail a start-up failure on rank 1 only (its --device cuda, no GPU) ends every rank, no hang
#   gpu       --device cuda: a local CNN run and 2 ranks over NCCL (1 with one GPU) reach the bar; exits 77
#             (ctest: skipped) when no GPU is usable, and checks that the refusal says why
# Usage: mp_allreduce_test.sh BIN_DIR SOURCE_DIR CASE
set -uo pipefail
bin="$1"; src="$2"; case_="$3"
tmp="$(mktemp -d)"
trap 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none --timeout 200)
fail() { echo "FAIL: $*" >&2; exit 1; }

if [[ -f "$src/data/mnist/train-images-idx3-ubyte" || -f "$src/data/mnist/train-images-idx3-ubyte.gz" ]]; then
  data=(--data-folder "$src/data/mnist"); real=1
else
  data=(--synthetic-data 12000); real=0
fi

# one_rank_fails PATTERN WHAT MPIRUN-ARGS...: an MPMD job where only rank 1 fails must end every
# rank within 30 s, non-zero, with rank 1's error (matching PATTERN) and no process left.
one_rank_fails() {
  local pattern="$1" what="$2" start=$SECONDS rc
  shift 2
  "${mpi[@]}" "$@" >"$tmp/stdout" 2>"$tmp/stderr"
  rc=$?
  ((rc != 0)) || fail "exited 0"
  grep -q -- "$pattern" "$tmp/stderr" || { cat "$tmp/stderr"; fail "no message naming $what"; }
  ((SECONDS - start < 30)) || fail "took $((SECONDS - start)) s"
  [[ -z "$(pgrep -f "$tmp/o" || true)" ]] || fail "processes left behind"
  echo "$case_ ok: exit $rc after $((SECONDS - start)) s"
}

case "$case_" in
gpu)
  if ! "$bin/dtrain_bench" train --device cuda --steps 1 --repeats 1 >"$tmp/probe" 2>&1; then
    cat "$tmp/probe"
    grep -q -- "--device cuda: " "$tmp/probe" || fail "the refusal does not say why"
    [[ "${DTRAIN_REQUIRE_GPU:-0}" == 1 ]] && fail "DTRAIN_REQUIRE_GPU=1 but no usable GPU: $(grep -- '--device cuda: ' "$tmp/probe")"
    echo "SKIP: no usable GPU"
    exit 77
  fi
  "$bin/mnist_train" "${data[@]}" --device cuda --model cnn --epochs 1 --output-dir "$tmp/cnn" \
    >"$tmp/cnn.out" 2>&1 || { cat "$tmp/cnn.out"; fail "CNN on the GPU exited $?"; }
  gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
  if [[ -n "${CUDA_VISIBLE_DEVICES+x}" ]]; then  # what the ranks can see, not the machine's
    visible="$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c . || true)"
    ((visible < ${gpus:-0})) && gpus="$visible"
  fi
  ranks=$(( ${gpus:-0} >= 2 ? 2 : 1 ))  # NCCL needs a GPU per rank
  # Buckets of 0.25 MB: the MLP's 1.07 MB leave in several buckets during backward (the bucketed
  # NCCL path), also on a one-GPU machine.
  "${mpi[@]}" -np $ranks "$bin/mnist_train" "${data[@]}" --device cuda --mode allreduce --epochs 3 \
    --fusion-threshold-mb 0.25 --output-dir "$tmp/mlp" >"$tmp/mlp.out" 2>&1 || { cat "$tmp/mlp.out"; fail "$ranks GPU rank(s) exited $?"; }
  python3 - "$(tail -n 1 "$tmp/cnn.out")" "$(tail -n 1 "$tmp/mlp.out")" "$real" "$ranks" <<'PY' || exit 1
import json, sys
cnn, mlp, real = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1"
assert cnn["device"].startswith("cuda:") and mlp["device"].startswith("cuda:"), (cnn, mlp)
assert mlp["mode"] == "allreduce" and mlp["world_size"] == int(sys.argv[4]), mlp
assert cnn["test_accuracy"] >= (0.98 if real else 0.9), cnn
assert mlp["test_accuracy"] >= (0.97 if real else 0.9), mlp
print("gpu ok: CNN 1 epoch %.4f at %.0f samples/s; MLP %s rank(s) %.4f at %.0f samples/s" %
      (cnn["test_accuracy"], cnn["samples_per_sec"], sys.argv[4], mlp["test_accuracy"],
       mlp["samples_per_sec"]))
PY
  echo "($gpus GPU(s) visible)"
  ;;
e2e)
  # The default (one machine: shared-memory reduction) for the accuracy and outputs, then a short
  # run over MPI_Allreduce with 0.25 MB buckets for the bucket spans.
  out="$tmp/out"
  "${mpi[@]}" -np 2 "$bin/mnist_train" "${data[@]}" --epochs 3 --output-dir "$out" \
    --timeline "$tmp/timeline.json" --verbose >"$tmp/stdout" 2>"$tmp/stderr" ||
    { cat "$tmp/stderr"; fail "training exited $?"; }
  grep -q "allreduce over shared memory" "$tmp/stderr" || fail "not reduced through shared memory"
  DTRAIN_ALLREDUCE_SHM=0 "${mpi[@]}" -x DTRAIN_ALLREDUCE_SHM -np 2 "$bin/mnist_train" "${data[@]}" \
    --epochs 1 --max-steps-per-epoch 40 --output-dir "$tmp/out-mpi" --fusion-threshold-mb 0.25 \
    --timeline "$tmp/timeline-mpi.json" >"$tmp/stdout-mpi" 2>"$tmp/stderr-mpi" ||
    { cat "$tmp/stderr-mpi"; fail "training over MPI_Allreduce exited $?"; }
  summary="$(tail -n 1 "$tmp/stdout")"
  echo "$summary"
  python3 - "$summary" "$out" "$tmp/timeline.json" "$real" "$tmp/stdout" "$tmp/timeline-mpi.json" <<'PY' || exit 1
import json, os, sys
s = json.loads(sys.argv[1]); out = sys.argv[2]; real = sys.argv[4] == "1"
assert s["mode"] == "allreduce" and s["world_size"] == 2, s
bar = 0.97 if real else 0.9
assert s["test_accuracy"] >= bar, f"test accuracy {s['test_accuracy']} < {bar}"
lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
assert [l["epoch"] for l in lines] == [1, 2, 3], lines
assert os.path.exists(os.path.join(out, "model", "checkpoint.bin"))
epoch_lines = [l for l in open(sys.argv[5]) if l.startswith("epoch ")]
assert len(epoch_lines) == 3, "only rank 0 prints epoch lines: %r" % epoch_lines
tl = json.load(open(sys.argv[3]))["traceEvents"]
names = {e["name"] for e in tl}
assert {"forward", "backward", "barrier", "optimizer"} <= names, names
opt = [e for e in tl if e["name"] == "optimizer"]
assert all(e["args"]["sums_ranks"] == 2 for e in opt), "the optimizer sums both ranks' slots"
tl = json.load(open(sys.argv[6]))["traceEvents"]
names = {e["name"] for e in tl}
assert {"forward", "backward", "allreduce", "optimizer"} <= names, names
buckets = [e for e in tl if e["name"] == "allreduce"]
assert all(e["args"]["bytes"] > 0 for e in buckets)
steps = {e["args"]["step"] for e in buckets}
assert len(buckets) > len(steps), "0.25 MB buckets: several per step"
# Spans on one row (pid, tid) must not overlap: a trace viewer draws "X" events of a row as a
# stack (buckets in flight together went on one row and were drawn as nested, wrongly).
rows = {}
for e in tl:
    rows.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"], e["name"]))
for row, spans in rows.items():
    spans.sort()
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        assert b0 >= a1 or b1 <= a1, f"row {row}: {an} [{a0}, {a1}] and {bn} [{b0}, {b1}] overlap"
print("e2e ok: accuracy %.4f; MPI path: %d allreduce spans over %d steps" %
      (s["test_accuracy"], len(buckets), len(steps)))
PY
  ;;
mismatch)
  start=$SECONDS
  "${mpi[@]}" -np 1 "$bin/mnist_train" --synthetic-data 600 --batch-size 50 --epochs 1 --output-dir "$tmp/o" : \
    -np 1 "$bin/mnist_train" --synthetic-data 600 --batch-size 32 --epochs 1 --output-dir "$tmp/o" \
    >"$tmp/stdout" 2>"$tmp/stderr"
  rc=$?
  cat "$tmp/stderr"
  ((rc != 0)) || fail "a batch-size mismatch exited 0"
  grep -q "rank 1 disagrees with rank 0 on batch_size: rank 0 has 50, rank 1 has 32" "$tmp/stderr" ||
    fail "the error does not name the rank and the field"
  ((SECONDS - start < 60)) || fail "took $((SECONDS - start)) s"
  echo "mismatch ok (exit $rc)"
  ;;
settings)
  # What decides the number and size of the collectives is checked at start-up (a rank with
  # another training set hung until --stall-timeout; another fusion threshold: MPI_ERR_TRUNCATE).
  expect_disagreement() {  # field mpirun-args...
    local field="$1" start=$SECONDS rc
    shift
    "${mpi[@]}" "$@" >"$tmp/stdout" 2>"$tmp/stderr"; rc=$?
    ((rc != 0)) || fail "$field: a mismatch exited 0"
    grep -q "rank 1 disagrees with rank 0 on $field" "$tmp/stderr" ||
      { cat "$tmp/stderr"; fail "$field: the error does not name the field"; }
    ((SECONDS - start < 60)) || fail "$field: took $((SECONDS - start)) s"
    echo "$field mismatch named"
  }
  tr=("$bin/mnist_train" --epochs 1 --output-dir "$tmp/o")
  expect_disagreement train_samples -np 1 "${tr[@]}" --synthetic-data 600 : \
    -np 1 "${tr[@]}" --synthetic-data 720
  expect_disagreement fusion_threshold_bytes \
    -np 1 env DTRAIN_ALLREDUCE_SHM=0 DTRAIN_FUSION_THRESHOLD=64K "${tr[@]}" --synthetic-data 600 : \
    -np 1 env DTRAIN_ALLREDUCE_SHM=0 "${tr[@]}" --synthetic-data 600
  # The stall watchdog off on one rank only (a variable mpirun did not carry to its machine): it
  # still makes the start-up collectives the others make.
  "${mpi[@]}" -np 1 "${tr[@]}" --synthetic-data 600 : \
    -np 1 env DTRAIN_STALL_WARNING=0 DTRAIN_STALL_TIMEOUT=0 "${tr[@]}" --synthetic-data 600 \
    >"$tmp/stdout" 2>"$tmp/stderr" || { cat "$tmp/stderr"; fail "watchdog off on rank 1: exit $?"; }
  # SIGTERM with fewer steps per epoch than the stop check's period: seen, checkpointed.
  "${mpi[@]}" -np 2 "$bin/mnist_train" --synthetic-data 2000 --max-steps-per-epoch 5 \
    --epochs 100000 --output-dir "$tmp/short" >"$tmp/stdout" 2>"$tmp/stderr" & job=$!
  for _ in $(seq 100); do grep -q "^epoch 3/" "$tmp/stdout" && break; sleep 0.1; done
  grep -q "^epoch 3/" "$tmp/stdout" || { cat "$tmp/stderr"; fail "the short-epoch job did not start"; }
  for p in $(pgrep -f "mnist_train.*$tmp/short"); do
    [[ "$(tr '\0' '\n' </proc/$p/cmdline 2>/dev/null | head -n 1)" == */mnist_train ]] && kill -TERM "$p"
  done
  start=$SECONDS
  wait $job; rc=$?
  ((rc != 0)) || fail "exit 0 after SIGTERM"
  ((SECONDS - start < 15)) || fail "SIGTERM took $((SECONDS - start)) s"
  grep -q "stopped by SIGTERM after step [0-9]*; checkpoint written" "$tmp/stdout" "$tmp/stderr" ||
    { tail -5 "$tmp/stderr"; fail "no stop at an agreed step with 5 steps per epoch"; }
  echo "settings ok"
  ;;
smallshm)
  # A /dev/shm too small for the shared-memory allreduce (Docker's 64 MB and the CNN): the job
  # says so and uses MPI_Allreduce (it failed with MPI_ERR_INTERN). Here: a 4 MB /dev/shm in a
  # mount namespace of this test, and the MLP with Adam on 2 ranks (8.5 MB).
  unshare -m true 2>/dev/null || { echo "SKIP: cannot make a mount namespace here"; exit 77; }
  unshare -m bash -c 'mount -t tmpfs -o size=4m tmpfs /dev/shm && exec "$@"' _ \
    env OMPI_MCA_btl_vader_backing_directory="$tmp" "${mpi[@]}" -np 2 "$bin/mnist_train" \
    --synthetic-data 2000 --epochs 1 --output-dir "$tmp/o" >"$tmp/stdout" 2>"$tmp/stderr" ||
    { cat "$tmp/stderr"; fail "the job failed with a small /dev/shm"; }
  grep -q "/dev/shm has [0-9]* MB free; the shared-memory allreduce .* needs about 8 MB: using MPI_Allreduce" \
    "$tmp/stderr" || { cat "$tmp/stderr"; fail "no note saying why MPI_Allreduce is used"; }
  grep -q '"event":"summary"' "$tmp/stdout" || fail "no summary"
  echo "smallshm ok"
  ;;
onefails)
  one_rank_fails "rank 1/2 .*no-such-folder does not exist" "the folder" \
    -np 1 "$bin/mnist_train" --synthetic-data 6000 --epochs 100 --output-dir "$tmp/o" : \
    -np 1 "$bin/mnist_train" --data-folder "$tmp/no-such-folder" --epochs 100 --output-dir "$tmp/o"
  ;;
startfail)
  # A failure while the job starts on one rank only (here its device: --device cuda where no GPU
  # is usable, as a GPU or NCCL start-up failure would be): it ends every rank, it does not hang
  # (it did: the others waited in the start-up check while it sat in MPI_Finalize).
  one_rank_fails "rank 1/2 .*--device cuda" "the device" \
    -np 1 "$bin/mnist_train" --synthetic-data 600 --epochs 100 --device cpu --output-dir "$tmp/o" : \
    -np 1 env CUDA_VISIBLE_DEVICES= "$bin/mnist_train" --synthetic-data 600 --epochs 100 \
    --device cuda --output-dir "$tmp/o"
  ;;
kill)
  "${mpi[@]}" -np 2 "$bin/mnist_train" --synthetic-data 60000 --epochs 1000 --output-dir "$tmp/o" \
    >"$tmp/stdout" 2>"$tmp/stderr" &
  job=$!
  victim=""
  for _ in $(seq 100); do
    for p in $(pgrep -f "$tmp/o"); do
      if tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 &&
        grep -q mnist_train /proc/$p/cmdline 2>/dev/null; then victim=$p; fi
    done
    [[ -n "$victim" ]] && grep -q "^epoch\|samples" "$tmp/stdout" 2>/dev/null && break
    [[ -n "$victim" ]] && sleep 1 && break
    sleep 0.2
  done
  [[ -n "$victim" ]] || fail "rank 1 never started"
  kill -9 "$victim"
  start=$SECONDS
  for _ in $(seq 300); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$job" 2>/dev/null; then kill -9 "$job"; fail "job still running 30 s after SIGKILL of rank 1"; fi
  wait "$job"; rc=$?
  cat "$tmp/stderr" | tail -n 5
  ((rc != 0)) || fail "job exited 0 after a rank was killed"
  sleep 0.5
  left="$(pgrep -f "$tmp/o" || true)"
  [[ -z "$left" ]] || fail "processes left behind: $left"
  echo "kill ok: job ended $((SECONDS - start)) s after SIGKILL, exit $rc"
  ;;
*) fail "unknown case $case_" ;;
esac
