#!/usr/bin/env bash
# GPU check (docs/cuda.md): CUDA parity on the fixtures and a generation against diffusers fp16 SDPA
# on the same GPU, one JSON file of results. Needs: an NVIDIA GPU + driver, python3 with torch
# (CUDA) and the packaged binaries from scripts/build-cuda.sh. diffusers may come as wheels.
#   scripts/gpu-check/gpu-check.sh [--bin-dir DIR] [--wheels DIR] [check.py options, e.g. --out F]
#   scripts/gpu-check/gpu-check.sh --smoke --bin-dir target/debug     # CPU, tiny shapes (CI)
# --bin-dir holds sdapi + bench, or sdapi-cuda(.xz|.gz) + bench-cuda(.xz|.gz) (default: target/release).
# --wheels DIR: pip-installs DIR/*.whl (no index) into a temporary folder when diffusers is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

# The binaries: plain, or the packed CUDA build (.xz or .gz) unpacked into the check's temp dir.
pick() {
  local name=$1
  for c in "$BIN_DIR/$name" "$BIN_DIR/$name-cuda"; do [ -x "$c" ] && { echo "$c"; return; }; done
  local out=${TMPDIR:-/tmp}/gpu-check-bin/$name-cuda
  mkdir -p "$(dirname "$out")"
  if [ -f "$BIN_DIR/$name-cuda.xz" ]; then
    # Python's lzma: the GPU image need not have the xz tool.
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$BIN_DIR/$name-cuda.xz" "$out" && chmod +x "$out" && { echo "$out"; return; }
  fi
  if [ -f "$BIN_DIR/$name-cuda.gz" ]; then
    gunzip -c "$BIN_DIR/$name-cuda.gz" > "$out" && chmod +x "$out" && { echo "$out"; return; }
  fi
  echo "no $name, $name-cuda, $name-cuda.xz or $name-cuda.gz in $BIN_DIR" >&2; exit 2
}
SDAPI=$(pick sdapi)
BENCH=$(pick bench)

# diffusers is not part of every PyTorch image: install carried wheels when it is missing.
if [ -n "$WHEELS" ] && ! "$PY" -c "import diffusers" 2>/dev/null; then
  SITE=${TMPDIR:-/tmp}/gpu-check-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi

# The CUDA binaries link libcudart/libcublas/libcurand (and cuDNN with that feature) dynamically;
# PyTorch's nvidia-* wheels ship them. Put every nvidia/*/lib of the interpreter on the path.
if NV=$("$PY" - <<'PYEOF' 2>/dev/null
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib")))
print(":".join(dirs))
PYEOF
); then
  [ -n "$NV" ] && export LD_LIBRARY_PATH=$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

exec "$PY" scripts/gpu-check/check.py --sdapi "$SDAPI" --bench "$BENCH" --python "$PY" ${ARGS[@]+"${ARGS[@]}"}
