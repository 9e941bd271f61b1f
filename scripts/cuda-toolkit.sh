#!/usr/bin/env bash
# A CUDA compiler without a system toolkit: downloads NVIDIA's CUDA 13.0 compiler, runtime headers and libdevice
# from PyPI (nvidia-cuda-nvcc, -runtime, -cccl, -crt, nvidia-nvvm; about 350 MB unpacked) into .cuda-toolkit/ and
# prints the environment that builds the addon with `--features cuda`. Run it where PyPI is reachable; the folder
# then travels with the checkout to a GPU machine with no network (scripts/gpu-check.sh looks for it there).
# Usage: bash scripts/cuda-toolkit.sh   then   eval "$(bash scripts/cuda-toolkit.sh --env)"
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$PWD/.cuda-toolkit
top=$dir/nvidia/cu13
if [[ ${1:-} == --env ]]; then
  [[ -x $top/bin/nvcc ]] || { echo "echo 'no toolkit in $dir: run bash scripts/cuda-toolkit.sh first' >&2; false"; exit 0; }
  echo "export PATH=$top/bin:\$PATH CUDA_ROOT=$top CUDA_PATH=$top CUDA_HOME=$top"
  exit 0
fi
if [[ -x $top/bin/nvcc ]]; then
  echo "cuda-toolkit: $top/bin/nvcc is there ($("$top/bin/nvcc" --version | tail -1))"
  exit 0
fi
pip=$(command -v pip3 || command -v pip || true)
[[ -n $pip ]] || { echo "cuda-toolkit: needs pip (python3 -m pip) to download the wheels" >&2; exit 1; }
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# The compiler driver, cicc/libdevice, the runtime and C++ headers: what nvcc needs to turn .cu into PTX. 13.0:
# the newest release cudarc (candle's CUDA layer) knows is 13.4, and 13.0 runs on any 13.x driver.
v=${CUDA_TOOLKIT_VERSION:-13.0}
"$pip" download --quiet --no-deps --only-binary=:all: -d "$wheels" \
  "nvidia-cuda-nvcc==$v.*" "nvidia-cuda-runtime==$v.*" "nvidia-cuda-cccl==$v.*" "nvidia-cuda-crt==$v.*" "nvidia-nvvm==$v.*"
mkdir -p "$dir"
for w in "$wheels"/*.whl; do python3 -m zipfile -e "$w" "$dir"; done
chmod +x "$top"/bin/* "$top"/nvvm/bin/* 2>/dev/null || true
echo "cuda-toolkit: $("$top/bin/nvcc" --version | tail -1) in $top"
echo "build with: eval \"\$(bash scripts/cuda-toolkit.sh --env)\"; CUDA_COMPUTE_CAP=90 npm run build:native:cuda"
