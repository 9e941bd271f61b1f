#!/usr/bin/env bash
# Proves or disproves the CUDA path in one command, on a Linux machine with an NVIDIA GPU and driver, cargo and
# the checkout with ../shared beside it, with no network:
#   1. finds nvcc (PATH, $CUDA_HOME, /usr/local/cuda, or .cuda-toolkit/ from scripts/cuda-toolkit.sh) or says how
#      to get it, and the CUDA libraries candle opens at run time (cuBLAS, cuRAND, NVRTC);
#   2. builds for this GPU's compute capability only, into crate/target-cuda (reused when present);
#   3. runs the golden checks on the GPU (crate/tests/cuda.rs: both families, f32 within 1e-3, greedy tokens,
#      bf16 top-1, q8_0, batching) and the Node e2e test with device 'cuda' (when node and node_modules are here);
#   4. runs the engine bench on the GPU for the bench models that exist (../bench-models), with peak GPU memory;
# then prints one summary. Warm (target-cuda present) it takes a few minutes on 16 cores; cold, the CUDA build of
# candle's kernels adds about 15–25 minutes: prepare the warm folder with `bash scripts/gpu-check.sh --build-only`.
# Usage: bash scripts/gpu-check.sh [--build-only]
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
results=()
note() { results+=("$1"); echo "gpu-check: $1"; }
die() { echo "gpu-check: $1" >&2; exit 1; }

# 1. the GPU, the compiler, the run-time libraries
command -v nvidia-smi > /dev/null || die "no nvidia-smi: this machine has no NVIDIA driver"
IFS=, read -r gpu cap memory < <(nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader | head -1)
cap=${cap//[ .]/}
[[ $cap =~ ^[0-9]+$ ]] || die "cannot read the compute capability from nvidia-smi"
note "GPU: $gpu (compute capability $cap, $memory)"
for dir in "${CUDA_HOME:-}" /usr/local/cuda "$PWD/.cuda-toolkit/nvidia/cu13"; do
  command -v nvcc > /dev/null && break
  [[ -n $dir && -x $dir/bin/nvcc ]] && export PATH=$dir/bin:$PATH CUDA_HOME=$dir CUDA_ROOT=$dir CUDA_PATH=$dir
done
command -v nvcc > /dev/null || die "no nvcc. Either install a CUDA toolkit (Debian: apt-get install nvidia-cuda-toolkit from non-free; or NVIDIA's), or run \`bash scripts/cuda-toolkit.sh\` where PyPI is reachable and bring .cuda-toolkit/ with the checkout"
note "nvcc: $(nvcc --version | tail -1)"
# cudarc opens these by name at run time: look in the usual places, then in Python's NVIDIA wheels
libdirs=$(
  { ldconfig -p 2>/dev/null | awk '/libcublas\.so|libcurand\.so|libnvrtc\.so/ {print $NF}'
    find /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu /opt /usr/local/lib -name 'libcublas.so*' -o -name 'libcurand.so*' -o -name 'libnvrtc.so*' 2>/dev/null
  } | xargs -r -n1 dirname | sort -u | paste -sd:)
[[ -n $libdirs ]] || die "no cuBLAS/cuRAND/NVRTC libraries found (install the CUDA toolkit's libraries, or pip's nvidia-cublas, nvidia-curand, nvidia-cuda-nvrtc)"
export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# 2. the build, for this GPU only
export CUDA_COMPUTE_CAP=$cap CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/crate/target-cuda}
command -v cargo > /dev/null || die "no cargo: install Rust (rustup) or run where it is"
t=$SECONDS
cargo test --release --features cuda --manifest-path crate/Cargo.toml --test cuda --no-run 2>&1 | tail -3
[[ ${PIPESTATUS[0]} == 0 ]] || die "the CUDA build failed (above)"
have_node=false
if command -v node > /dev/null && [[ -d node_modules ]]; then
  have_node=true
  npx napi build --platform --release --esm --manifest-path crate/Cargo.toml --features node,cuda --output-dir . --js index.js --dts index.d.ts 2>&1 | tail -2
  [[ ${PIPESTATUS[0]} == 0 ]] || die "the CUDA addon build failed (above)"
fi
note "build: $((SECONDS - t)) s (target dir $CARGO_TARGET_DIR)"
[[ ${1:-} == --build-only ]] && exit 0

# 3. fidelity on the GPU
VTC_TEST_DEVICE=cuda cargo test --release --features cuda --manifest-path crate/Cargo.toml --test cuda -- --nocapture --test-threads 1 2>&1 | tee /tmp/gpu-check-cargo.log | grep -E '^(test |[a-z0-9]+/)|test result'
[[ ${PIPESTATUS[0]} == 0 ]] && note "golden checks on CUDA: passed" || note "golden checks on CUDA: FAILED (/tmp/gpu-check-cargo.log)"
if $have_node; then
  VTC_TEST_DEVICE=cuda npx ava __test__/engine.spec.ts --match '*on CUDA*' 2>&1 | tail -4
  [[ ${PIPESTATUS[0]} == 0 ]] && note "Node e2e with device 'cuda': passed" || note "Node e2e with device 'cuda': FAILED"
else
  note "Node e2e: skipped (no node or node_modules here)"
fi

# 4. speed on the GPU: ours and PyTorch on the same bench models, peak GPU memory sampled from nvidia-smi
if $have_node; then
  for model in ../bench-models/qwen3vl-1024x8 ../bench-models/glm4v-1024x8; do
    [[ -f $model/config.json ]] || { note "bench: $model missing (node bench/engine.js builds it where torch is installed)"; continue; }
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > /tmp/gpu-mem.log &
    sampler=$!
    node bench/engine.js --model "$model" --device cuda --dtype f32,bf16 --reps 3 2>&1 | tail -24
    kill $sampler 2>/dev/null
    note "bench $(basename "$model"): peak GPU memory in use $(sort -n /tmp/gpu-mem.log | tail -1) MiB (both engines' processes, one at a time)"
  done
fi

echo
echo "── gpu-check summary ($((SECONDS - start)) s) ──"
printf '  %s\n' "${results[@]}"
