"""Pieces the reference generators share (scripts/gen-brownian-refs.py, gen-sde-refs.py,
gen-pixel-op-refs.py): A1111's NV random source, a safetensors writer with a deterministic header,
and k-diffusion's sampling modules without its training-heavy package `__init__`. numpy only at
import time; `load_k_diffusion` needs torch."""

import importlib.util
import json
import os
import struct
import sys
import types

import numpy as np

# ---------------------------------------------------------------------------------------------
# A1111's NV random source (modules/rng_philox.py).

PHILOX_M = [0xD2511F53, 0xCD9E8D57]
PHILOX_W = [0x9E3779B9, 0xBB67AE85]
TWO_POW32_INV = np.array([2.3283064e-10], dtype=np.float32)
TWO_POW32_INV_2PI = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


def _uint32_pairs(x):
    """(N,) uint64 -> (2, N) uint32: [low words, high words]."""
    return x.view(np.uint32).reshape(-1, 2).transpose(1, 0)


def _philox_round(counter, key):
    v1 = _uint32_pairs(counter[0].astype(np.uint64) * PHILOX_M[0])
    v2 = _uint32_pairs(counter[2].astype(np.uint64) * PHILOX_M[1])
    counter[0] = v2[1] ^ counter[1] ^ key[0]
    counter[1] = v2[0]
    counter[2] = v1[1] ^ counter[3] ^ key[1]
    counter[3] = v1[0]


def philox_randn(seed, shape):
    """A fresh `rng_philox.Generator(seed).randn(shape)`: Philox4x32-10, counter (0, 0, i, 0), key =
    the seed's uint64 words, then the first Box-Muller value (float64 arithmetic, as numpy promotes
    uint32 x float32) cast to float32."""
    n = int(np.prod(shape))
    counter = np.zeros((4, n), dtype=np.uint32)
    counter[2] = np.arange(n, dtype=np.uint32)
    key = np.empty(n, dtype=np.uint64)
    key.fill(seed)
    key = _uint32_pairs(key)
    for _ in range(9):
        _philox_round(counter, key)
        key[0] = key[0] + PHILOX_W[0]
        key[1] = key[1] + PHILOX_W[1]
    _philox_round(counter, key)
    u = counter[0] * TWO_POW32_INV + TWO_POW32_INV / 2
    v = counter[1] * TWO_POW32_INV_2PI + TWO_POW32_INV_2PI / 2
    s = np.sqrt(-2.0 * np.log(u))
    return (s * np.sin(v)).astype(np.float32).reshape(shape)


# ---------------------------------------------------------------------------------------------
# safetensors with a deterministic header.

SAFETENSORS_DTYPES = {np.dtype(np.uint8): "U8", np.dtype(np.uint32): "U32", np.dtype(np.int64): "I64",
                      np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}


def write_safetensors(path, tensors, metadata):
    """The safetensors format with a deterministic header: 8-byte little-endian header length,
    JSON header (`__metadata__` first, sorted, then the tensors; wider element types first so every
    tensor stays aligned, by name within a type), padded with spaces to 8 bytes, then the data.
    (`safetensors.numpy.save_file` orders `__metadata__` differently on every run.)"""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, pos = [], 0
    for key in sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k)):
        a = tensors[key]
        raw = np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()
        header[key] = {"dtype": SAFETENSORS_DTYPES[a.dtype], "shape": list(a.shape),
                       "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


# ---------------------------------------------------------------------------------------------
# k-diffusion.

def load_k_diffusion():
    """k-diffusion's `sampling` and `external` modules alone, under a stub package whose `utils`
    holds the one helper they use (`append_dims`): the package `__init__` imports its training
    code (torchvision, clean-fid, ...). Returns (sampling, external)."""
    spec = importlib.util.find_spec("k_diffusion")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    package.utils = utils
    sys.modules["k_diffusion"] = package
    sys.modules["k_diffusion.utils"] = utils
    import k_diffusion.external as external
    import k_diffusion.sampling as sampling
    return sampling, external
