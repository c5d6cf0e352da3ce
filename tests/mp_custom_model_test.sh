#!/usr/bin/env bash
# The bring-your-own-model example (examples/custom_model.cc) in each mode, through the public
# library only: the same flags, outputs and JSON summary as mnist_train.
#   local      one process
#   allreduce  2 ranks under mpirun: identical summary keys, mode "allreduce", world size 2
#   ps         1 ps task + 2 workers from TF_CONFIG: the ps task serves the custom model's layout
# Each reaches an accuracy bar after 2 epochs and writes the model with its own layers.
# Usage: mp_custom_model_test.sh BIN_DIR SOURCE_DIR CASE
set -uo pipefail
bin="$1"; src="$2"; case_="$3"
tmp="$(mktemp -d)"
trap 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
export DTRAIN_JOB_ID=$((RANDOM * 32768 + RANDOM))
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none --timeout 200)
fail() { echo "FAIL: $*" >&2; for f in "$tmp"/*.log; do echo "== $f"; tail -n 5 "$f"; done >&2; exit 1; }
if [[ -f "$src/data/mnist/train-images-idx3-ubyte" || -f "$src/data/mnist/train-images-idx3-ubyte.gz" ]]; then
  data=(--data-folder "$src/data/mnist"); bar=0.92
else
  data=(--synthetic-data 12000); bar=0.8
fi
common=(--epochs 2 --device cpu --output-dir "$tmp/out")

check() {  # LOG MODE WORLD
  python3 - "$(tail -n 1 "$1")" "$2" "$3" "$bar" "$tmp/out/model/model.json" <<'PY' || fail "summary check"
import json, sys
s, mode, world, bar = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
assert s["event"] == "summary" and s["mode"] == mode and s["world_size"] == world, s
assert s["epochs"] == 2 and s["test_accuracy"] >= bar, s
kinds = [l["kind"] for l in json.load(open(sys.argv[5]))["model"]["layers"]]
assert kinds == ["maxpool2", "dense", "relu", "dense"], kinds
print(mode, "world", world, "test_accuracy", s["test_accuracy"])
PY
}

case "$case_" in
local)
  timeout 120 "$bin/custom_model" "${data[@]}" "${common[@]}" >"$tmp/local.log" 2>&1 ||
    fail "exited $?"
  check "$tmp/local.log" local 1
  ;;
allreduce)
  "${mpi[@]}" -np 2 "$bin/custom_model" "${data[@]}" "${common[@]}" >"$tmp/ar.log" 2>&1 ||
    fail "mpirun exited $?"
  check "$tmp/ar.log" allreduce 2
  ;;
ps)
  ports=($(python3 -c "
import socket
s=[socket.socket() for _ in range(3)]
[x.bind(('127.0.0.1',0)) for x in s]
print(' '.join(str(x.getsockname()[1]) for x in s))"))
  cluster="{\"ps\":[\"127.0.0.1:${ports[0]}\"],\"worker\":[\"127.0.0.1:${ports[1]}\",\"127.0.0.1:${ports[2]}\"]}"
  task() {  # type index args...
    local type="$1" index="$2"; shift 2
    TF_CONFIG="{\"cluster\":$cluster,\"task\":{\"type\":\"$type\",\"index\":$index}}" \
      timeout 120 "$bin/custom_model" --mode ps "$@" >"$tmp/$type$index.log" 2>&1
  }
  pids=()
  task ps 0 "${common[@]}" & pids+=($!)
  task worker 0 "${data[@]}" "${common[@]}" & pids+=($!)
  task worker 1 "${data[@]}" --epochs 2 --device cpu --output-dir "$tmp/out1" & pids+=($!)
  rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  ((rc == 0)) || fail "a task exited $rc"
  check "$tmp/worker0.log" ps 2
  ;;
*) fail "unknown case $case_" ;;
esac
echo "$case_ ok"
