#!/usr/bin/env bash
# Ours and diffusers measured in the same run, alternating per mode so load drift on a shared
# machine hits both sides alike. Usage: scripts/bench/run.sh [outfile]   (needs a release build:
#   cargo build --release -p sdapi-server --bin bench --bin sdapi; and scripts/bench/setup-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/bench-results.jsonl}
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/bench}
PY=${BENCH_VENV:-/tmp/venv-bench}/bin/python
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-$(nproc)}
: > "$OUT"
ours() { "$BIN" "$@" | sed 's/^{/{"impl":"ours",/' | tee -a "$OUT"; }
ref() { "$PY" scripts/bench/reference.py "$@" | tee -a "$OUT"; }
ours unet --latent 32 --iters 5; ref unet --latent 32 --iters 5
ours ops --latent 32 --iters 5;  ref ops --latent 32 --iters 5
ours unet --latent 32 --iters 5; ref unet --latent 32 --iters 5   # second round: drift check
ours parts --latent 32 --iters 3; ref parts --latent 32 --iters 3
T=${TXT2IMG_ITERS:-3}   # ~4 min per SD 1.5 image on 2 cores, per side
ours txt2img --size 256 --steps 20 --iters $T; ref txt2img --size 256 --steps 20 --iters $T
ours overhead --iters 10 --steps 20
ours coldstart --iters 5
python3 scripts/bench/compare.py "$OUT"
