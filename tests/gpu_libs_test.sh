#!/usr/bin/env bash
# The GPU libraries are loaded only when a job uses a GPU: a CPU run of mnist_train (--device cpu,
# and auto on a machine without NVIDIA devices) maps none of libcudart, libcublas, libcudnn,
# libnccl; and --device cuda without the CUDA plugin next to the binary is a clear error naming
# what is missing.
# Usage: gpu_libs_test.sh BIN_DIR
set -uo pipefail
bin="$1"
tmp="$(mktemp -d)"
trap 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ldd "$bin/mnist_train" | grep -E "libcud|libcublas|libnccl" && fail "mnist_train links GPU libraries"
devices=(--device cpu)
[[ -e /dev/nvidiactl || -e /dev/dxg ]] || devices+=(--device auto)
for ((i = 0; i < ${#devices[@]}; i += 2)); do
  d="${devices[i+1]}"
  "$bin/mnist_train" --device "$d" --synthetic-data 3000 --epochs 200 --output-dir "$tmp/o-$d" \
    >"$tmp/$d.log" 2>&1 &
  pid=$!
  sleep 2
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/$d.log"; fail "--device $d: training ended early"; }
  if grep -E "libcudart|libcublas|libcudnn|libnccl" "/proc/$pid/maps"; then
    fail "--device $d: a CPU run mapped GPU libraries"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null
  echo "--device $d: no GPU library loaded"
done
if [[ -e "$bin/libdtrain_cuda.so" ]]; then  # a CUDA build: the same binary without its plugin
  cp "$bin/mnist_train" "$tmp/mnist_train"
  "$tmp/mnist_train" --device cuda --synthetic-data 100 --epochs 1 --output-dir "$tmp/o" \
    >"$tmp/cuda.log" 2>&1 && fail "--device cuda without the plugin exited 0"
  grep -q -- "--device cuda: .*CUDA plugin is not installed (looked for $tmp/libdtrain_cuda.so" \
    "$tmp/cuda.log" || { cat "$tmp/cuda.log"; fail "the error does not say what is missing"; }
  cat "$tmp/cuda.log"
fi
echo ok
