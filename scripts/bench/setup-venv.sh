#!/usr/bin/env bash
# Creates the PyTorch/diffusers venv for reference.py (never used by CI or tests).
# PyPI's Linux torch wheel is the CUDA build: it will not import without its nvidia-* wheels
# (libcublasLt etc. are preloaded at import), so they come along (~3 GB) although only the CPU is used.
# `torch --no-deps` alone fails at import with "libcublasLt.so.*[0-9] not found".
set -euo pipefail
VENV=${BENCH_VENV:-/tmp/venv-bench}
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet "torch==2.15.0" "diffusers==0.42.1" transformers Pillow
"$VENV/bin/python" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
