#!/usr/bin/env bash
# dtrain's Kubernetes manifests (docs/kubernetes/*.yaml) checked without a cluster: against JSON
# Schemas written from Kubeflow's CRDs (tests/k8s/*.schema.json), with mutated copies that must
# fail, the flags they give mnist_train against its --help, the operators' and dtrain's cross-field
# rules, and their command lines run on this machine. See tests/k8s/check_manifests.py.
#   tests/k8s_manifests_test.sh BUILD_DIR SOURCE_DIR
# Exits 77 (skipped) where Debian's python3-jsonschema or python3-yaml is missing.
set -euo pipefail
if (($# != 2)); then
  echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
build="$(cd "$1" && pwd)"
src="$(cd "$2" && pwd)"
py=/usr/bin/python3  # Debian's, where python3-jsonschema and python3-yaml install
for mod in jsonschema:python3-jsonschema yaml:python3-yaml; do
  if ! "$py" -c "import ${mod%%:*}" 2>/dev/null; then
    echo "SKIP: ${mod#*:} is not installed (apt-get install python3-jsonschema python3-yaml)"
    exit 77
  fi
done
for bin in mnist_train dtrainrun; do
  [[ -x "$build/bin/$bin" ]] || { echo "FAIL: $build/bin/$bin is missing (build it first)"; exit 1; }
done
exec "$py" "$src/tests/k8s/check_manifests.py" "$build" "$src"
