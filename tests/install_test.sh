#!/usr/bin/env bash
# The installed library: `cmake --install` into a fresh prefix, then examples/custom_model.cc
# built out of tree against it with find_package(dtrain) (target dtrain::dtrain) and with
# pkg-config, and both programs train; the installed mnist_train and dtrainrun run a 2-rank job.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build="$1"; src="$2"
tmp="$(mktemp -d)"
trap 'pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
prefix="$tmp/prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; }
[[ -f "$prefix/include/dtrain/dtrain/dtrain.h" ]] || fail "no umbrella header"
[[ -f "$prefix/lib/cmake/dtrain/dtrainConfig.cmake" ]] || fail "no CMake package"
[[ -f "$prefix/lib/pkgconfig/dtrain.pc" ]] || fail "no pkg-config file"
# Nothing in the installed headers may point back into the source or build tree.
grep -rl -e "$src" -e "$build" "$prefix/include" "$prefix/lib/cmake" "$prefix/lib/pkgconfig" &&
  fail "installed files name the source or build folder"

mkdir -p "$tmp/consumer"
cp "$src/examples/custom_model.cc" "$tmp/consumer/"
cat >"$tmp/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.22)
project(consumer CXX)
find_package(dtrain 0.7 REQUIRED)
add_executable(custom_model custom_model.cc)
target_link_libraries(custom_model PRIVATE dtrain::dtrain)
CM
cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; fail "configure the consumer"; }
cmake --build "$tmp/consumer/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "build the consumer"; }
"$tmp/consumer/build/custom_model" --synthetic-data 3000 --epochs 2 --output-dir "$tmp/out1" \
  >"$tmp/run1.log" 2>&1 || { cat "$tmp/run1.log"; fail "the CMake-built consumer exited $?"; }
grep -q '"event":"summary"' "$tmp/run1.log" || fail "the CMake-built consumer printed no summary"

PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --exists dtrain || fail "pkg-config cannot find dtrain"
# shellcheck disable=SC2046
g++ -O2 -o "$tmp/custom_model_pc" "$tmp/consumer/custom_model.cc" \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs dtrain) \
  >"$tmp/pc.log" 2>&1 || { cat "$tmp/pc.log"; fail "build with pkg-config"; }
"$tmp/custom_model_pc" --synthetic-data 3000 --epochs 2 --output-dir "$tmp/out2" >"$tmp/run2.log" 2>&1 ||
  { cat "$tmp/run2.log"; fail "the pkg-config-built consumer exited $?"; }
cmp <(grep '"event":"summary"' "$tmp/run1.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["test_loss"])') \
    <(grep '"event":"summary"' "$tmp/run2.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["test_loss"])') ||
  fail "the two consumers trained differently"

"$prefix/bin/dtrainrun" --output-dir "$tmp/job" -np 2 -- "$prefix/bin/mnist_train" \
  --synthetic-data 3000 --epochs 1 --output-dir "$tmp/job/outputs" >"$tmp/job.log" 2>&1 ||
  { tail -20 "$tmp/job.log"; fail "the installed dtrainrun + mnist_train exited $?"; }
grep -q '"world_size":2' "$tmp/job.log" || fail "the installed job did not run 2 ranks"
# The Python package, where the prefix's python3 looks (lib/python3.X/dist-packages).
if [[ -d "$build/python/dtrain" ]] && /usr/bin/python3 -c "import torch" 2>/dev/null; then
  site="$(ls -d "$prefix"/lib/python3*/dist-packages 2>/dev/null | head -1)"
  [[ -n "$site" ]] || fail "dtrain.torch was built but not installed"
  (cd "$tmp" && PYTHONPATH="$site" /usr/bin/python3 -c \
    "import dtrain.torch as dt; dt.init(); assert dt.size() == 1; dt.shutdown()") ||
    fail "the installed dtrain.torch does not import"
fi
echo "install ok: find_package(dtrain) and pkg-config consumers built and trained; installed binaries ran a 2-rank job"
