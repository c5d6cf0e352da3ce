#!/usr/bin/env bash
# dtrain.torch (python/dtrain/torch) under mpirun, with Debian's python3-torch:
#   api    every API call and its errors (tests/torch_api_test.py), 2 ranks
#   match  examples/python/torch_mnist.py: 2 ranks at batch 25 end with the parameters of one
#          process at batch 50 (float tolerance 1e-5)
#   kill   SIGKILL of rank 1 ends the job within 30 s, non-zero, nothing left behind
# Exits 77 (skipped) where python3-torch or the module is missing.
# Usage: python_torch_test.sh BUILD_DIR SOURCE_DIR CASE
set -uo pipefail
build="$1"; src="$2"; case_="$3"
tmp="$(mktemp -d)"
trap 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
py=/usr/bin/python3
export PYTHONPATH="$build/python"
if ! "$py" -c "import torch" 2>/dev/null; then echo "SKIP: python3-torch is not installed"; exit 77; fi
[[ -f "$build/python/dtrain/torch/__init__.py" ]] || { echo "SKIP: dtrain.torch was not built (pybind11-dev)"; exit 77; }
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none --timeout 200 -x PYTHONPATH)
example=("$py" "$src/examples/python/torch_mnist.py" --synthetic-data 3000 --epochs 2 --seed 9)

case "$case_" in
api)
  "${mpi[@]}" -np 2 "$py" "$src/tests/torch_api_test.py" >"$tmp/out" 2>&1 || { cat "$tmp/out"; fail "api test exited $?"; }
  [[ $(grep -o "every dtrain.torch call checked" "$tmp/out" | wc -l) == 2 ]] || { cat "$tmp/out"; fail "not both ranks"; }
  echo "api ok"
  ;;
match)
  "${example[@]}" --batch-size 50 --output-dir "$tmp/one" >"$tmp/one.log" 2>&1 || { cat "$tmp/one.log"; fail "one process exited $?"; }
  "${mpi[@]}" -np 2 "${example[@]}" --batch-size 25 --output-dir "$tmp/two" >"$tmp/two.log" 2>&1 ||
    { cat "$tmp/two.log"; fail "2 ranks exited $?"; }
  "$py" - "$tmp/one/params.bin" "$tmp/two/params.bin" <<'PY' || fail "parameters differ"
import sys
import numpy as np
a, b = (np.fromfile(p, dtype=np.float32) for p in sys.argv[1:3])
assert a.shape == b.shape, (a.shape, b.shape)
diff = float(np.abs(a - b).max())
print("2 ranks x batch 25 vs 1 x batch 50: max |difference| %.2e over %d parameters" % (diff, a.size))
assert diff < 1e-5, diff
PY
  grep -q '"world_size": 2' "$tmp/two.log" || fail "not 2 ranks"
  ;;
kill)
  "${mpi[@]}" -np 2 "$py" "$src/examples/python/torch_mnist.py" --synthetic-data 3000 --epochs 1000 \
    --output-dir "$tmp/k" >"$tmp/k.log" 2>&1 & job=$!
  victim=""
  for _ in $(seq 150); do
    for p in $(pgrep -f "torch_mnist.py.*$tmp/k"); do
      tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -q OMPI_COMM_WORLD_RANK=1 && victim=$p
    done
    [[ -n "$victim" ]] && grep -q "epoch 1/" "$tmp/k.log" && break
    sleep 0.2
  done
  [[ -n "$victim" ]] || { cat "$tmp/k.log"; fail "rank 1 never started"; }
  kill -9 "$victim"
  start=$SECONDS
  while kill -0 $job 2>/dev/null && ((SECONDS - start < 30)); do sleep 0.2; done
  kill -0 $job 2>/dev/null && fail "job still running 30 s after SIGKILL of rank 1"
  wait $job; rc=$?
  ((rc != 0)) || fail "exited 0"
  sleep 0.5
  [[ -z "$(pgrep -f "$tmp/k" || true)" ]] || fail "processes left behind"
  echo "kill ok: the job ended $((SECONDS - start)) s after SIGKILL of rank 1, exit $rc"
  ;;
*) fail "unknown case $case_" ;;
esac
