#!/usr/bin/env bash
# The CPU backend on a second instruction set: oneDNN picks its kernels by CPU features, and
# DNNL_MAX_CPU_ISA=AVX2 caps them, so this machine also runs what an AVX2-only CPU would. A few
# training steps of the MLP and the CNN under each: the job says which ISA it runs, trains, and
# agrees with the default ISA up to rounding (the kernels add in different orders).
# Usage: cpu_isa_test.sh BIN_DIR
set -uo pipefail
bin="$1"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
run() {  # NAME MODEL [env...]
  local name="$1" model="$2"; shift 2
  env "$@" timeout 120 "$bin/mnist_train" --mode local --device cpu --model "$model" \
    --synthetic-data 3000 --epochs 1 --max-steps-per-epoch 20 --verbose \
    --output-dir "$tmp/$name" >"$tmp/$name.log" 2>&1 || { cat "$tmp/$name.log"; fail "$name exited $?"; }
}
isa="$("$bin/dtrain_bench" train --steps 1 --repeats 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["cpu_isa"])')"
capped="$(DNNL_MAX_CPU_ISA=AVX2 "$bin/dtrain_bench" train --steps 1 --repeats 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["cpu_isa"])')"
echo "default ISA: $isa, capped: $capped"
[[ "$capped" == avx2* ]] || fail "DNNL_MAX_CPU_ISA=AVX2 ran $capped"
for model in mlp cnn; do
  run "$model-default" "$model"
  run "$model-avx2" "$model" DNNL_MAX_CPU_ISA=AVX2
  grep -q "CPU kernels: oneDNN avx2" "$tmp/$model-avx2.log" || fail "$model: the log does not name the avx2 kernels"
  python3 - "$(tail -n 1 "$tmp/$model-default.log")" "$(tail -n 1 "$tmp/$model-avx2.log")" "$model" <<'PY' || fail "$model: results"
import json, math, sys
a, b, model = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
assert math.isfinite(a["loss"]) and math.isfinite(b["loss"]), (a, b)
rel = abs(a["loss"] - b["loss"]) / abs(a["loss"])
print(model, "loss", a["loss"], "vs avx2", b["loss"], "relative difference", rel)
assert rel < 1e-3, rel
PY
done
echo "ok"
