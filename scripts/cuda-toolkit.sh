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
# Link-time stubs, as a CUDA toolkit's lib/stubs: candle's CUDA layer links against the driver, cuBLAS, cuRAND,
# NVRTC and the runtime. Empty libraries with the real sonames let a machine without them link; at run time
# the real ones (driver, toolkit or pip wheels) are loaded by those names.
mkdir -p "$top/lib/stubs"
for lib in cuda:1 nvrtc:13 curand:10 cublas:13 cublasLt:13 cudart:13; do
  name=${lib%:*} soname=lib${lib%:*}.so.${lib#*:}
  echo 'void vtc_r1_cuda_link_stub(void) {}' | cc -shared -x c - -Wl,-soname,"$soname" -o "$top/lib/stubs/lib$name.so"
done
echo "cuda-toolkit: $("$top/bin/nvcc" --version | tail -1) in $top"
echo "build with: eval \"\$(bash scripts/cuda-toolkit.sh --env)\"; CUDA_COMPUTE_CAP=90 npm run build:native:cuda"
