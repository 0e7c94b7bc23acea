"""A1111 v1.10.1's inpainting preparation and paste back, restated step by step with the libraries
A1111 uses (Pillow, OpenCV, numpy), timed on the inputs `bench inpaint` uses. Needs numpy, Pillow
and opencv-python-headless (not torch):

    python scripts/bench/inpaint_reference.py --size 512 --iters 5

Prints one JSON object per measurement, like the Rust bench.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps


def init_image(size):
    y, x = np.mgrid[0:size, 0:size].astype(np.int64)
    return Image.fromarray(np.stack([(x * 7 + y * 3) % 256, (x * 5) % 256, (y * 11) % 256], -1).astype(np.uint8))


def mask_image(size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    c, rx, ry = size / 2, size * 15 / 64, size * 10 / 64
    inside = ((x + 0.5 - c) / rx) ** 2 + ((y + 0.5 - c) / ry) ** 2 <= 1.0
    return Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)).convert("RGB")


# --- A1111 (modules/images.py resize_image for modes 1 and 2, modules/masking.py) -------------

def resize_image(mode, im, width, height):
    def resize(im, w, h):
        return im.resize((w, h), resample=Image.LANCZOS)

    if mode == 0:
        return resize(im, width, height)
    ratio = width / height
    src_ratio = im.width / im.height
    if mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB" if im.mode != "L" else "L", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = resize(im, src_w, src_h)
    res = Image.new("RGB" if im.mode != "L" else "L", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)), box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)), box=(fill_width + src_w, 0))
    return res


def expand_crop_region(crop_region, processing_width, processing_height, image_width, image_height):
    x1, y1, x2, y2 = crop_region
    ratio_crop_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height
    if ratio_crop_region > ratio_processing:
        desired_height_diff = int((x2 - x1) / ratio_processing - (y2 - y1))
        y1 -= desired_height_diff // 2
        y2 += desired_height_diff - desired_height_diff // 2
        if y2 >= image_height:
            y1 -= y2 - image_height
            y2 = image_height
        if y1 < 0:
            y2 -= y1
            y1 = 0
        y2 = min(y2, image_height)
    else:
        desired_width_diff = int((y2 - y1) * ratio_processing - (x2 - x1))
        x1 -= desired_width_diff // 2
        x2 += desired_width_diff - desired_width_diff // 2
        if x2 >= image_width:
            x1 -= x2 - image_width
            x2 = image_width
        if x1 < 0:
            x2 -= x1
            x1 = 0
        x2 = min(x2, image_width)
    return x1, y1, x2, y2


def fill(image, mask):
    image_mod = Image.new("RGBA", (image.width, image.height))
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def prepare(init, mask, width, height, full_res, blur=4, padding=0):
    """StableDiffusionProcessingImg2Img.init's mask branch (masked content: fill)."""
    image_mask = mask.convert("L")
    k = 2 * int(2.5 * blur + 0.5) + 1
    np_mask = cv2.GaussianBlur(np.array(image_mask), (k, 1), blur)
    np_mask = cv2.GaussianBlur(np_mask, (1, k), blur)
    image_mask = Image.fromarray(np_mask)
    crop_region = paste_to = None
    if full_res:
        mask_for_overlay = image_mask
        crop_region = image_mask.getbbox()
        x1, y1, x2, y2 = crop_region
        crop_region = (max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height))
        crop_region = expand_crop_region(crop_region, width, height, mask.width, mask.height)
        x1, y1, x2, y2 = crop_region
        image_mask = resize_image(2, image_mask.crop(crop_region), width, height)
        paste_to = (x1, y1, x2 - x1, y2 - y1)
    else:
        image_mask = resize_image(0, image_mask, width, height)
        mask_for_overlay = Image.fromarray(np.clip(np.array(image_mask).astype(np.float32) * 2, 0, 255).astype(np.uint8))
    image = init if crop_region is not None else resize_image(0, init, width, height)
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
    overlay = image_masked.convert("RGBA")
    if crop_region is not None:
        image = resize_image(2, image.crop(crop_region), width, height)
    image = fill(image, image_mask)
    pixels = np.moveaxis(np.array(image).astype(np.float32) / 255.0, 2, 0)
    latmask = np.moveaxis(np.array(image_mask.convert("RGB").resize((width // 8, height // 8)), dtype=np.float32), 2, 0) / 255
    latmask = np.around(latmask[0])
    return pixels, latmask, overlay, paste_to


def apply_overlay(image, paste_loc, overlay):
    if paste_loc is not None:
        x, y, w, h = paste_loc
        base_image = Image.new("RGBA", (overlay.width, overlay.height))
        base_image.paste(resize_image(1, image, w, h), (x, y))
        image = base_image
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB")


def timed(f, iters, warmup=1):
    for _ in range(warmup):
        f()
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    return ms


def report(bench, ms, **extra):
    print(json.dumps({"bench": bench, "impl": "a1111-python", "median_ms": round(statistics.median(ms), 2),
                      "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2), "n": len(ms), **extra}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--iters", type=int, default=5)
    a = p.parse_args()
    cv2.setNumThreads(2)
    init, mask = init_image(a.size), mask_image(a.size)
    for area, full_res in [("only_masked", True), ("whole_picture", False)]:
        report("inpaint_prepare", timed(lambda: prepare(init, mask, a.size, a.size, full_res), a.iters),
               size=a.size, area=area)
        pixels, _, overlay, paste_to = prepare(init, mask, a.size, a.size, full_res)
        generated = Image.fromarray((np.moveaxis(pixels, 0, 2) * 255).round().astype(np.uint8))
        report("inpaint_overlay", timed(lambda: apply_overlay(generated, paste_to, overlay), a.iters),
               size=a.size, area=area)


if __name__ == "__main__":
    main()
