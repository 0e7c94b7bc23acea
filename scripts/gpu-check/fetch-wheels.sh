#!/usr/bin/env bash
# Downloads the wheels the GPU check needs beyond a PyTorch image (diffusers and importlib_metadata;
# torch, transformers, huggingface_hub >= 1.32, safetensors >= 0.8, numpy, Pillow, regex, requests,
# filelock and zipp are expected there) into DIR (default .whl), for machines without internet:
#   scripts/gpu-check/fetch-wheels.sh [DIR]   then   gpu-check.sh --wheels DIR
set -euo pipefail
DIR=${1:-.whl}
mkdir -p "$DIR"
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d "$DIR" "diffusers==0.42.1" "importlib_metadata==10.2.0"
ls -l "$DIR"
