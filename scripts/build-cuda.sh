#!/usr/bin/env bash
# CUDA build of `sdapi` (and `bench`) on a machine WITHOUT a GPU (docs/cuda.md).
#   1. CUDA 13.0 toolkit from PyPI (cuda-toolkit==13.0.2: nvcc 13.0.88, matching driver 580 / CUDA 13.0;
#      nvcc >= 13.1 would emit PTX the 580 driver cannot JIT) into $CUDA_DIR
#   2. unversioned .so links and a libcuda.so link stub (the driver library is in no wheel)
#   3. cargo build --release --features cuda with CUDA_COMPUTE_CAP=90 (H100/H200; no nvidia-smi here)
#   4. gzip -9 the binaries (~60 MB -> ~15 MB) for transfer: <target>/release/{sdapi,bench}-cuda.gz
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

# libcuda.so.1 comes with the driver at run time; link against a stub exporting every cu* entry point
# cudarc binds (cudarc finds lib/stubs under CUDA_HOME). The real driver replaces it at run time.
if [ ! -e "$C/lib/stubs/libcuda.so" ]; then
  CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$CUDARC_SRC" ]; then
    cargo fetch --locked >/dev/null
    CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)
  fi
  mkdir -p "$C/lib/stubs"
  grep -ohE "^pub unsafe fn cu[A-Za-z0-9_]+" "$CUDARC_SRC/src/driver/sys/mod.rs" | awk '{print $4}' | sort -u \
    | sed 's/.*/void &(void) {}/' > "$C/lib/stubs/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$C/lib/stubs/libcuda.so" "$C/lib/stubs/stub.c"
  echo "== libcuda stub: $(grep -c . "$C/lib/stubs/stub.c") symbols"
fi

[ "${1:-}" = "--toolkit-only" ] && { echo "toolkit ready at $C"; exit 0; }

export CUDA_HOME="$C" PATH="$C/bin:$PATH" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
cargo build --release --locked --features cuda -p sdapi-server --bin sdapi --bin bench
TARGET=${CARGO_TARGET_DIR:-target}/release
for b in sdapi bench; do
  gzip -9 -c "$TARGET/$b" > "$TARGET/$b-cuda.gz"
done
ls -l "$TARGET"/*-cuda.gz
echo "run on the GPU machine with LD_LIBRARY_PATH=<site-packages>/nvidia/cu13/lib (see docs/cuda.md)"
