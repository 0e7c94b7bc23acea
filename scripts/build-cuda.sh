#!/usr/bin/env bash
# CUDA build of `sdapi` (and `bench`) on a machine WITHOUT a GPU (docs/cuda.md).
#   1. CUDA 13.0 toolkit from PyPI (cuda-toolkit==13.0.2: nvcc 13.0.88, matching driver 580 / CUDA 13.0;
#      nvcc >= 13.1 would emit PTX the 580 driver cannot JIT) into $CUDA_DIR
#   2. unversioned .so links and a libcuda.so link stub (the driver library is in no wheel)
#   3. cargo build --release --features "$SDAPI_CUDA_FEATURES" (default cuda,cudnn) with CUDA_COMPUTE_CAP=90
#      (H100/H200; no nvidia-smi here); cuDNN is linked against a stub too (the real libcudnn.so.9
#      comes with PyTorch's nvidia-cudnn wheel on the GPU machine)
#   4. xz the binaries (~95 MB -> ~18 MB; gzip -9 left 28 MB) for transfer: <target>/release/{sdapi,bench}-cuda.xz
# Takes ~23 min of both cores on a clean target (mostly nvcc on candle-kernels). Cache the target dir.
# Usage: scripts/build-cuda.sh [--toolkit-only]
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_DIR=${CUDA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sdapi-cuda13}   # outside the repo: 1.2 GB
TOOLKIT="cuda-toolkit[nvcc,nvvm,crt,cudart,cccl,nvrtc,curand,cublas]==13.0.2"
PY=${PYTHON:-python3}

if [ ! -x "$CUDA_DIR/nvidia/cu13/bin/nvcc" ]; then
  echo "== installing $TOOLKIT into $CUDA_DIR (~1.2 GB)"
  "$PY" -m pip install --quiet --disable-pip-version-check --target "$CUDA_DIR" "$TOOLKIT"
fi
C="$CUDA_DIR/nvidia/cu13"
"$C/bin/nvcc" --version | grep -q "release 13.0" || { echo "nvcc is not 13.0.x: $("$C/bin/nvcc" --version | tail -1)" >&2; exit 1; }

# The linker wants unversioned names; the wheels ship only lib*.so.<major>.
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  [ -e "$C/lib/$l" ] && ln -sf "$l" "$C/lib/${l%.so.*}.so"
done

# Libraries that come with the driver (libcuda.so.1) or with PyTorch's wheels (libcudnn.so.9) at run
# time are linked against stubs exporting every entry point cudarc binds (cudarc finds lib/stubs
# under CUDA_HOME). The real libraries replace them at run time.
cudarc_src() {
  local d
  d=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$d" ]; then
    cargo fetch --locked >/dev/null
    d=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)
  fi
  echo "$d"
}
# stub NAME SONAME BINDINGS PREFIX: lib/stubs/libNAME.so with every `pub unsafe fn PREFIX*` of BINDINGS.
stub() {
  local name=$1 soname=$2 bindings=$3 prefix=$4
  [ -e "$C/lib/stubs/lib$name.so" ] && return
  mkdir -p "$C/lib/stubs"
  grep -ohE "^pub unsafe fn $prefix[A-Za-z0-9_]+" "$(cudarc_src)/src/$bindings" | awk '{print $4}' | sort -u \
    | sed 's/.*/void &(void) {}/' > "$C/lib/stubs/$name-stub.c"
  gcc -shared -fPIC -Wl,-soname,"$soname" -o "$C/lib/stubs/lib$name.so" "$C/lib/stubs/$name-stub.c"
  echo "== lib$name stub: $(grep -c . "$C/lib/stubs/$name-stub.c") symbols"
}
stub cuda libcuda.so.1 driver/sys/mod.rs cu
stub cudnn libcudnn.so.9 cudnn/sys/mod.rs cudnn

[ "${1:-}" = "--toolkit-only" ] && { echo "toolkit ready at $C"; exit 0; }

export CUDA_HOME="$C" PATH="$C/bin:$PATH" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
FEATURES=${SDAPI_CUDA_FEATURES:-cuda,cudnn}
echo "== cargo build --release --features $FEATURES"
cargo build --release --locked --features "$FEATURES" -p sdapi-server --bin sdapi --bin bench
TARGET=${CARGO_TARGET_DIR:-target}/release
for b in sdapi bench; do
  xz -6 -T0 -c "$TARGET/$b" > "$TARGET/$b-cuda.xz"
done
ls -l "$TARGET"/*-cuda.xz
echo "run on the GPU machine with LD_LIBRARY_PATH=<site-packages>/nvidia/cu13/lib (see docs/cuda.md)"
