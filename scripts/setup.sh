#!/usr/bin/env bash
# Installs the Debian packages dtrain needs; skips what is already installed. Idempotent.
#   scripts/setup.sh           build and test dependencies
#   scripts/setup.sh --bench   also mpi4py and matplotlib for the comparison benchmarks (PyTorch,
#                              python3-torch, is always installed: dtrain.torch's tests need it)
set -euo pipefail

packages=(build-essential cmake pkg-config git ca-certificates
  libdnnl-dev zlib1g-dev nlohmann-json3-dev libcli11-dev libgtest-dev
  libopenmpi-dev openmpi-bin libzmq3-dev cppzmq-dev
  procps  # pgrep/pkill for the multi-process tests
  pybind11-dev python3-dev python3-torch  # dtrain.torch and its tests (/usr/bin/python3)
  python3-jsonschema python3-yaml  # tests/k8s_manifests_test.sh: the Kubernetes manifests
  iproute2 openssh-server openssh-client iperf3)  # the simulated cluster (tests/cluster)
# Tools that may come from elsewhere (a Node.js install of its own, say) count when on PATH.
command -v npm >/dev/null || packages+=(npm)
command -v python3 >/dev/null || packages+=(python3)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3-mpi4py python3-matplotlib)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
