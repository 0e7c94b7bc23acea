#!/usr/bin/env bash
# Only for a device tool that ships the checkout to the GPU machine with a size limit (64 MiB with
# what it carries, docs/cuda.md): the repository is ~95 MB, mostly fixture files the GPU check never
# reads (the diffusers copies of the tiny models, demo-shapes, per-stage intermediates, test data).
#   scripts/gpu-check/device-tree.sh hide      # untrack those in the index (files stay on disk),
#                                              # ignore them, copy the packed binaries into .gpu/
#   scripts/gpu-check/device-tree.sh restore   # the index and .git/info/exclude as they were
# Never commit between the two: the index then lacks those files.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}/release
EXCLUDE=.git/info/exclude
SAVED=.git/info/exclude.before-device-tree
UNUSED=(samples/models/Stable-diffusion/demo-shapes.safetensors
  tests/fixtures/a1111-parity/models/tiny-sd15-diffusers
  tests/fixtures/a1111-parity-sdxl/models/tiny-sdxl-diffusers
  tests/fixtures/a1111-parity-sd2/models/tiny-sd2v-diffusers
  tests/fixtures/pixel-ops tests/fixtures/sde-parity core/engine/tests/data core/protocol/src/prompt/tests/data)

case "${1:-}" in
  hide)
    [ -e "$SAVED" ] && { echo "already hidden: run restore first" >&2; exit 1; }
    mkdir -p .git/info .gpu && touch "$EXCLUDE" && cp "$EXCLUDE" "$SAVED"
    mapfile -t STAGES < <(git ls-files | grep '/intermediates\.safetensors$')
    git rm -r -q --cached "${UNUSED[@]}" "${STAGES[@]}"
    { printf '/%s\n' "${UNUSED[@]}"; echo intermediates.safetensors; } >> "$EXCLUDE"
    cp "$TARGET"/sdapi-cuda.xz "$TARGET"/bench-cuda.xz .gpu/
    bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb | tail -1 | cut -f1)
    echo "tree $((bytes >> 20)) MiB + .gpu $(du -sm .gpu | cut -f1) MiB (+ .whl $(du -sm .whl 2>/dev/null | cut -f1) MiB)"
    ;;
  restore)
    [ -e "$SAVED" ] || { echo "nothing to restore" >&2; exit 1; }
    git reset -q -- "${UNUSED[@]}" ':(glob)**/intermediates.safetensors'
    mv "$SAVED" "$EXCLUDE"
    ;;
  *) echo "usage: $0 hide|restore" >&2; exit 2 ;;
esac
