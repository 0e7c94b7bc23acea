#!/usr/bin/env python3
"""Generates the reference outputs that pin the pixel-exact Pillow / OpenCV ports.

`core/protocol/src/images/pil_ops.rs` and `core/protocol/src/images/cv_blur.rs` reproduce, byte
for byte, the Pillow operations and the OpenCV mask blur that AUTOMATIC1111's inpainting path
uses. This script draws a fixed, seeded set of small random cases, runs each through the real
Pillow / cv2 call (or A1111's Python code built on them, copied verbatim), and writes inputs,
parameters and outputs to ONE file:

    tests/fixtures/pixel-ops/refs.safetensors

which `core/protocol/tests/pixel_ops_refs.rs` replays against the Rust functions. CI therefore
needs neither Python nor OpenCV; only regenerating the file does.

Re-run (from the repository root; needs numpy, Pillow, opencv-python-headless, safetensors):

    .venv/bin/python scripts/gen-pixel-op-refs.py

The output is deterministic: a fixed numpy seed, no wall-clock or platform input, and a
safetensors writer of its own with a sorted header (`safetensors.numpy.save_file` emits
`__metadata__` in random order), so a re-run with the same library versions reproduces the same
bytes (`sha256sum` it twice). The file is read back with the safetensors library to check it.
The library versions used are recorded in the file's `__metadata__`; the committed file was made
with Pillow 13.0.0, opencv-python-headless 5.1.0, numpy 2.4.6 and safetensors 0.8.0.

Layout. Every case is `<op>.<NNNNN>.<field>`; images are uint8 tensors shaped
`[height, width, channels]` (Pillow's byte order: L=1, LA=2, RGB=3, RGBA/RGBa=4 channels), the
OpenCV masks are `[height, width]`, parameters are int64 (`params`) or float64 (`radius`,
`sigma`):

    mask_blur.N         input [h,w], params [blur_x, blur_y, kernel_x, kernel_y], output [h,w]
                        A1111's mask blur: cv2.GaussianBlur (k,1) sigma blur_x, then (1,k)
                        sigma blur_y, k = 2*int(2.5*blur+0.5)+1, a blur of 0 skips its pass
    cv_gaussian.N       input [h,w], params [ksize_x, ksize_y], sigma [1], output [h,w]
                        cv2.GaussianBlur(input, (ksize_x, ksize_y), sigma)
    gaussian_blur.N     input, radius [1], output       img.filter(ImageFilter.GaussianBlur(r))
    masking_fill.N      image, mask, output (RGB)       A1111 modules/masking.py fill()
    premultiply.N       input (RGBA), output (RGBa)     img.convert("RGBa")
    unpremultiply.N     input (RGBa), output (RGBA)     img.convert("RGBA")
    paste_with_mask.N   dst, src, mask, params [x, y], output   dst.paste(src, (x, y), mask)
    paste.N             dst, src, params [x, y], output         dst.paste(src, (x, y))
    alpha_composite.N   dst, src, output (RGBA)         dst.alpha_composite(src)
    to_luma.N           input, output (L)               img.convert("L")
    bbox.N              input, output [found, x1, y1, x2, y2]   img.getbbox() (None: found = 0)
    crop.N              input, params [x1, y1, x2, y2], output  img.crop((x1, y1, x2, y2))

`__metadata__` also holds `cases.<op>` (the number of cases of each op), which the test checks
so a truncated or partly regenerated file cannot pass by testing less.
"""

import os

import cv2
import numpy as np
import PIL
import safetensors
from PIL import Image, ImageFilter, ImageOps
from safetensors import safe_open
from safetensors.numpy import load_file

from refgen_common import write_safetensors

SEED = 20240611
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "pixel-ops", "refs.safetensors")

rng = np.random.default_rng(SEED)
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "RGBa": 4}
tensors = {}
counts = {}


# --------------------------------------------------------------------------------------------
# The reference implementations
# --------------------------------------------------------------------------------------------


def a1111_fill(image, mask):
    """modules/masking.py::fill from AUTOMATIC1111 v1.10.1, verbatim."""
    image_mod = Image.new('RGBA', (image.width, image.height))
    image_masked = Image.new('RGBa', (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert('L')))
    image_masked = image_masked.convert('RGBa')
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert('RGBA')
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def a1111_kernel_size(blur):
    """The kernel size A1111's mask blur passes to cv2 (modules/processing.py)."""
    return 2 * int(2.5 * blur + 0.5) + 1


def a1111_mask_blur(np_mask, blur_x, blur_y):
    """A1111's img2img mask blur (modules/processing.py, StableDiffusionProcessingImg2Img.init)."""
    if blur_x > 0:
        kernel_size = a1111_kernel_size(blur_x)
        np_mask = cv2.GaussianBlur(np_mask, (kernel_size, 1), blur_x)
    if blur_y > 0:
        kernel_size = a1111_kernel_size(blur_y)
        np_mask = cv2.GaussianBlur(np_mask, (1, kernel_size), blur_y)
    return np_mask


# --------------------------------------------------------------------------------------------
# Random inputs (numpy's seeded generator only, so the draw is the same everywhere)
# --------------------------------------------------------------------------------------------


def rint(lo, hi):
    """Uniform integer in lo..=hi."""
    return int(rng.integers(lo, hi + 1))


def pick(options):
    return options[rint(0, len(options) - 1)]


def size(hi=48, big=0.0):
    """Mostly 1..hi on each side, thin and single-pixel images; with probability `big` a
    64..80 image (kept rare: the file stays small)."""
    k = rng.random()
    if k < big:
        return rint(64, 80), rint(64, 80)
    if k < big + 0.08:
        return 1, rint(1, hi)
    if k < big + 0.16:
        return rint(1, hi), 1
    if k < big + 0.20:
        return 1, 1
    return rint(1, hi), rint(1, hi)


def content(mode, sz):
    """Noise, smooth gradients, or extreme values; alpha sometimes all 0 or all 255; RGBa
    mostly valid premultiplied data (colour <= alpha) but not always, as Pillow allows."""
    w, h = sz
    c = CHANNELS[mode]
    k = rng.random()
    if k < 0.5:
        a = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    elif k < 0.75:
        bw, bh = max(1, w // 8), max(1, h // 8)
        base = rng.integers(0, 256, (bh, bw, c), dtype=np.uint8)
        raw = "RGBA" if mode == "RGBa" else mode
        im = Image.frombytes(raw, (bw, bh), base.tobytes()).resize(sz, Image.BILINEAR)
        a = np.frombuffer(im.tobytes(), np.uint8).reshape(h, w, c).copy()
    else:
        a = rng.choice(np.array([0, 0, 0, 1, 128, 254, 255], np.uint8), (h, w, c))
    if mode in ("RGBA", "RGBa", "LA") and rng.random() < 0.3:
        a[..., -1] = pick([0, 255])
    if mode == "RGBa" and rng.random() < 0.7:
        a[..., :3] = np.minimum(a[..., :3], a[..., 3:4])
    return Image.frombytes(mode, sz, a.tobytes())


def pil_mask(sz):
    """An "L" inpainting mask: empty, full, noise, hard blobs, or blurred blobs."""
    w, h = sz
    k = rng.random()
    if k < 0.1:
        return Image.new("L", sz, 0)
    if k < 0.2:
        return Image.new("L", sz, 255)
    if k < 0.4:
        return Image.frombytes("L", sz, rng.integers(0, 256, w * h, dtype=np.uint8).tobytes())
    sw, sh = max(1, w // 10), max(1, h // 10)
    small = Image.frombytes("L", (sw, sh), rng.integers(0, 256, sw * sh, dtype=np.uint8).tobytes())
    blob = small.resize(sz, Image.BILINEAR).point(lambda v: 255 if v > 127 else 0)
    if k < 0.7:
        return blob
    return blob.filter(ImageFilter.GaussianBlur(pick([1, 2, 4, 8])))


def cv_mask(w, h):
    """A uint8 [h, w] mask as A1111 hands it to cv2: noise, flat, rectangles, ellipses, soft."""
    kind = int(rng.choice(6, p=[0.25, 0.06, 0.06, 0.21, 0.21, 0.21]))
    if kind == 0:
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == 1:
        return np.zeros((h, w), np.uint8)
    if kind == 2:
        return np.full((h, w), 255, np.uint8)
    m = np.zeros((h, w), np.uint8)
    for _ in range(rint(1, 3)):
        x0, y0 = rint(0, w - 1), rint(0, h - 1)
        x1, y1 = rint(x0, w), rint(y0, h)
        if kind == 3:
            m[y0:y1, x0:x1] = 255
        else:
            axes = (rint(0, w), rint(0, h))
            cv2.ellipse(m, (x0, y0), axes, float(rint(0, 359)), 0, 360, 255, -1)
    if kind == 5:
        m = (m.astype(np.int32) * rng.integers(0, 256, (h, w)) // 255).astype(np.uint8)
    return m


# --------------------------------------------------------------------------------------------
# Writing cases
# --------------------------------------------------------------------------------------------


def arr(im):
    """A Pillow image as uint8 [height, width, channels]."""
    return np.frombuffer(im.tobytes(), np.uint8).reshape(im.height, im.width, CHANNELS[im.mode]).copy()


def add(op, **fields):
    n = counts.get(op, 0)
    counts[op] = n + 1
    for name, value in fields.items():
        if isinstance(value, Image.Image):
            value = arr(value)
        elif isinstance(value, (list, tuple)):
            value = np.array(value, np.float64 if name in ("radius", "sigma") else np.int64)
        tensors[f"{op}.{n:05d}.{name}"] = np.ascontiguousarray(value)


# --- cv2: A1111 mask blur -------------------------------------------------------------------
BLUR_SPECIALS = [
    # (w, h, blur_x, blur_y): both off, each direction alone, the slider's maximum, and images
    # far smaller than the kernel (k = 321 at blur 64), where the border reflects many times.
    (7, 5, 0, 0), (12, 9, 4, 0), (9, 12, 0, 4), (33, 20, 64, 64), (1, 1, 64, 64), (2, 3, 64, 1),
    (1, 17, 5, 5), (17, 1, 5, 5), (3, 3, 64, 0), (2, 2, 0, 64), (5, 40, 1, 64), (40, 5, 64, 1),
    (48, 48, 32, 32), (4, 4, 1, 1), (96, 72, 16, 8),
]
for w, h, bx, by in BLUR_SPECIALS:
    m = cv_mask(w, h)
    add("mask_blur", input=m, params=[bx, by, a1111_kernel_size(bx), a1111_kernel_size(by)],
        output=a1111_mask_blur(m.copy(), bx, by))
for i in range(65):
    w, h = size(48, big=0.03)
    if i % 8 == 0:  # a sweep over small images, mostly smaller than their kernel
        w, h = rint(1, 8), rint(1, 8)
    top = 64 if rng.random() < 0.5 else 8  # half of them with kernels narrower than the image
    bx = rint(0, top)
    by = bx if rng.random() < 0.4 else rint(0, top)
    m = cv_mask(w, h)
    add("mask_blur", input=m, params=[bx, by, a1111_kernel_size(bx), a1111_kernel_size(by)],
        output=a1111_mask_blur(m.copy(), bx, by))

# --- cv2: GaussianBlur with other kernel sizes / sigmas (ksize 0 = from sigma, sigma 0 = from
# ksize, including the fixed binomial kernels of sizes 3..9) ----------------------------------
KSIZES = [1, 3, 5, 7, 9, 11, 13, 21, 41, 0]
SIGMAS = [0.0, 0.3, 0.8, 1.0, 1.5, 2.7, 4.0, 10.3, 0.7600894749967105]
while counts.get("cv_gaussian", 0) < 45:
    kx, ky = pick(KSIZES), pick(KSIZES)
    sigma = pick(SIGMAS) if rng.random() < 0.8 else round(float(rng.uniform(0.05, 20.0)), 4)
    if sigma <= 0 and (kx == 0 or ky == 0):
        continue  # cv2 rejects it
    w, h = size(40)
    m = cv_mask(w, h)
    add("cv_gaussian", input=m, params=[kx, ky], sigma=[sigma], output=cv2.GaussianBlur(m.copy(), (kx, ky), sigma))

# --- Pillow GaussianBlur -------------------------------------------------------------------
for i in range(50):  # RGBa as masking.fill blurs it, at the radii that matter
    r = [0, 0.5, 2, 16, 256][i % 5]
    im = content("RGBa", size(32) if i not in (2, 3) else (rint(64, 80), rint(64, 80)))
    add("gaussian_blur", input=im, radius=[r], output=im.filter(ImageFilter.GaussianBlur(r)))
for i in range(16):  # other modes and radii (Pillow blurs the stored bytes of any mode alike)
    mode = pick(["L", "LA", "RGB", "RGBA", "RGBa"])
    r = pick([1, 4, 64, 0.25, 3.5]) if i % 2 else round(float(rng.uniform(0.0, 40.0)), 3)
    im = content(mode, size(32))
    add("gaussian_blur", input=im, radius=[r], output=im.filter(ImageFilter.GaussianBlur(r)))

# --- A1111 masking.fill ----------------------------------------------------------------------
for i in range(60):
    mode = "RGB" if i < 45 else pick(["L", "LA", "RGBA"])
    im = content(mode, size(32) if i not in (0, 1) else (rint(64, 80), rint(64, 80)))
    mask = pil_mask(im.size) if i % 12 != 11 else content(pick(["RGB", "LA", "RGBA"]), im.size)
    add("masking_fill", image=im, mask=mask, output=a1111_fill(im, mask))

# --- premultiply / unpremultiply --------------------------------------------------------------
for i in range(50):
    im = content("RGBA", size(32))
    add("premultiply", input=im, output=im.convert("RGBa"))
for i in range(50):
    im = content("RGBa", size(32))  # mostly valid premultiplied data, some with colour > alpha
    add("unpremultiply", input=im, output=im.convert("RGBA"))


# --- paste with mask (masking.fill pastes onto an RGBa canvas) --------------------------------
def offset(src_len, dst_len):
    k = rng.random()
    if k < 0.05:
        return pick([-10**6, 10**6])
    return rint(-src_len - 2, dst_len + 2)


for i in range(60):
    mode = "RGBa" if i < 30 else pick(["L", "LA", "RGB", "RGBA", "RGBa"])
    dst, src = content(mode, size(24)), content(mode, size(24))
    if i % 6 == 0:
        src = content(mode, dst.size)  # the same-size paste at (0, 0) that fill does
        x = y = 0
    else:
        x, y = offset(src.width, dst.width), offset(src.height, dst.height)
    k = rng.random()
    mask = pil_mask(src.size) if k < 0.8 else content("LA" if k < 0.9 else "RGBA", src.size)
    out = dst.copy()
    out.paste(src, (x, y), mask)
    add("paste_with_mask", dst=dst, src=src, mask=mask, params=[x, y], output=out)

# --- paste without mask -----------------------------------------------------------------------
for i in range(40):
    mode = pick(["L", "LA", "RGB", "RGBA", "RGBa"])
    dst, src = content(mode, size(24)), content(mode, size(24))
    x, y = offset(src.width, dst.width), offset(src.height, dst.height)
    out = dst.copy()
    out.paste(src, (x, y))
    add("paste", dst=dst, src=src, params=[x, y], output=out)

# --- alpha_composite --------------------------------------------------------------------------
for i in range(50):
    sz = size(32)
    dst, src = content("RGBA", sz), content("RGBA", sz)
    out = dst.copy()
    out.alpha_composite(src)
    add("alpha_composite", dst=dst, src=src, output=out)

# --- convert("L") -----------------------------------------------------------------------------
for i in range(50):
    mode = "RGB" if i < 35 else pick(["L", "LA", "RGBA"])
    im = content(mode, size(32))
    add("to_luma", input=im, output=im.convert("L"))

# Every RGB colour whose fixed-point luma lands exactly on a rounding tie (the sum's low 16 bits
# are 0x8000), where rounding half down instead of up is off by one.
r = np.arange(256, dtype=np.int64)
weighted = r[:, None, None] * 19595 + r[None, :, None] * 38470 + r[None, None, :] * 7471
ties = np.argwhere((weighted & 0xFFFF) == 0x8000).astype(np.uint8)  # 274 colours, sorted
ties_image = Image.frombytes("RGB", (len(ties) // 2, 2), ties.tobytes())
add("to_luma", input=ties_image, output=ties_image.convert("L"))

# --- getbbox ----------------------------------------------------------------------------------
for i in range(60):
    mode = "L" if i < 40 else pick(["LA", "RGB", "RGBA", "RGBa"])
    sz = size()
    if mode == "L" and rng.random() < 0.6:  # sparse: 0..4 set pixels, often none at all
        a = np.zeros(sz[0] * sz[1], np.uint8)
        for _ in range(rint(0, 4)):
            a[rint(0, len(a) - 1)] = rint(1, 255)
        im = Image.frombytes("L", sz, a.tobytes())
    elif mode == "L":
        im = pil_mask(sz)
    elif mode != "RGB" and rng.random() < 0.7:
        # Opaque only inside a random box (or nowhere), colour non-zero everywhere: getbbox
        # looks at alpha alone for these modes, so the box must come out, not the whole image.
        w, h = sz
        a = np.maximum(arr(content(mode, sz)), 1)
        a[..., -1] = 0
        if rng.random() < 0.85:
            x0, y0 = rint(0, w - 1), rint(0, h - 1)
            a[y0:rint(y0 + 1, h), x0:rint(x0 + 1, w), -1] = rint(1, 255)
        im = Image.frombytes(mode, sz, a.tobytes())
    else:
        im = content(mode, sz)
    box = im.getbbox()
    add("bbox", input=im, output=[0, 0, 0, 0, 0] if box is None else [1, *box])

# --- crop -------------------------------------------------------------------------------------
for i in range(60):
    mode = pick(["L", "LA", "RGB", "RGBA", "RGBa"])
    im = content(mode, size(32))
    # boxes inside, overlapping an edge, wholly outside, empty (x2 == x1 or y2 == y1)
    x1, y1 = rint(-20, im.width + 5), rint(-20, im.height + 5)
    x2, y2 = x1 + rint(0, 40), y1 + rint(0, 40)
    if i % 10 == 0:
        x2 = x1
    if i % 10 == 5:
        x1, y1, x2, y2 = -rint(1, 9), -rint(1, 9), im.width + rint(1, 9), im.height + rint(1, 9)
    add("crop", input=im, params=[x1, y1, x2, y2], output=im.crop((x1, y1, x2, y2)))

# --------------------------------------------------------------------------------------------

metadata = {
    "generator": "scripts/gen-pixel-op-refs.py",
    "seed": str(SEED),
    "pillow": PIL.__version__,
    "opencv": cv2.__version__,
    "numpy": np.__version__,
    "safetensors": safetensors.__version__,
}
metadata.update({f"cases.{op}": str(n) for op, n in counts.items()})


write_safetensors(OUT, tensors, metadata)
back = load_file(OUT)
assert back.keys() == tensors.keys()
for k, v in tensors.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v), k
with safe_open(OUT, "np") as f:
    assert f.metadata() == metadata
total = sum(v.nbytes for v in tensors.values())
print(f"wrote {os.path.relpath(OUT, ROOT)}: {len(tensors)} tensors, {total} data bytes, {os.path.getsize(OUT)} bytes")
for op, n in counts.items():
    print(f"  {op:16s} {n}")
