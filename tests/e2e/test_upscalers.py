"""A model upscaler through the real binary: a tiny RRDBNet (random weights, the original ESRGAN
key layout A1111 reads, `model.0` … `model.10`) in a models tree's `ESRGAN/` folder, used by
`/extra-single-image` and by the hires fix. The extras result is compared with a reference written
here independently: the network in numpy (float64), A1111's tensor ↔ image conversion, and for
tiled runs A1111's grid split/combine done with Pillow's own crop and masked paste.
"""
from __future__ import annotations

import base64
import io
import math
import tempfile
from pathlib import Path

import numpy as np
import requests

from harness import SAMPLES, Server, check_generation

NEEDS_SERVER = False
NF, GC = 8, 4


def tiny_esrgan(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t: dict[str, np.ndarray] = {}

    def conv(name: str, o: int, i: int) -> None:
        t[f"{name}.weight"] = (rng.standard_normal((o, i, 3, 3)) * 0.1).astype(np.float32)
        t[f"{name}.bias"] = (rng.standard_normal(o) * 0.05).astype(np.float32)
    conv("model.0", NF, 3)
    for k in range(1, 4):
        for j in range(1, 6):
            conv(f"model.1.sub.0.RDB{k}.conv{j}.0", NF if j == 5 else GC, NF + (j - 1) * GC)
    conv("model.1.sub.1", NF, NF)
    for name in ("model.3", "model.6", "model.8"):
        conv(name, NF, NF)
    conv("model.10", 3, NF)
    return t


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j].astype(np.float64), xp[:, i:i + h, j:j + wd])
    return out + b[:, None, None]


def lrelu(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, 0.2 * x)


def rrdbnet(t: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    c = lambda name, v: conv2d(v, t[f"{name}.weight"], t[f"{name}.bias"])  # noqa: E731
    feat = c("model.0", x)
    body = feat
    rrdb_in = body
    for k in range(1, 4):
        feats = [body]
        for j in range(1, 5):
            feats.append(lrelu(c(f"model.1.sub.0.RDB{k}.conv{j}.0", np.concatenate(feats))))
        body = c(f"model.1.sub.0.RDB{k}.conv5.0", np.concatenate(feats)) * 0.2 + body
    body = body * 0.2 + rrdb_in
    feat = feat + c("model.1.sub.1", body)
    for name in ("model.3", "model.6"):
        feat = lrelu(c(name, feat.repeat(2, axis=1).repeat(2, axis=2)))
    return c("model.10", lrelu(c("model.8", feat)))


def upscale_patch(t, img):
    """A1111's upscale_pil_patch: RGB → BGR in [0, 1], the model, clamp, ×255, round, → RGB."""
    from PIL import Image
    x = np.ascontiguousarray(np.array(img.convert("RGB"))[:, :, ::-1].transpose(2, 0, 1)) / 255
    y = np.clip(rrdbnet(t, x), 0, 1)
    arr = (255.0 * np.moveaxis(y, 0, 2)).round().astype(np.uint8)[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def tiled(t, img, tile: int, overlap: int):
    """A1111's upscale_with_model: split into overlapping tiles, upscale each, blend them back."""
    from PIL import Image
    w, h = img.size
    cols = math.ceil((w - overlap) / (tile - overlap))
    rows = math.ceil((h - overlap) / (tile - overlap))
    dx = (w - tile) / (cols - 1) if cols > 1 else 0
    dy = (h - tile) / (rows - 1) if rows > 1 else 0
    rows_out = []
    for r in range(rows):
        y = int(r * dy)
        y = h - tile if y + tile >= h else y
        row = []
        for col in range(cols):
            x = int(col * dx)
            x = w - tile if x + tile >= w else x
            row.append((x * 4, upscale_patch(t, img.crop((x, y, x + tile, y + tile)))))
        rows_out.append((y * 4, row))
    W, H, T, O = w * 4, h * 4, tile * 4, overlap * 4
    ramp = (np.arange(O, dtype=np.float32) * 255 / O).astype(np.uint8)
    mask_w = Image.fromarray(np.ascontiguousarray(np.tile(ramp, (T, 1))), "L")
    mask_h = Image.fromarray(np.ascontiguousarray(np.tile(ramp.reshape(O, 1), (1, W))), "L")
    out = Image.new("RGB", (W, H))
    for y, row in rows_out:
        line = Image.new("RGB", (W, T))
        for x, tile_img in row:
            if x == 0:
                line.paste(tile_img, (0, 0))
                continue
            line.paste(tile_img.crop((0, 0, O, T)), (x, 0), mask=mask_w)
            line.paste(tile_img.crop((O, 0, T, T)), (x + O, 0))
        if y == 0:
            out.paste(line, (0, 0))
            continue
        out.paste(line.crop((0, 0, W, O)), (0, y), mask=mask_h)
        out.paste(line.crop((0, O, W, T)), (0, y + O))
    return out


def test_tiny_esrgan_through_extras_and_hires(ctx):
    from PIL import Image
    from safetensors.numpy import save_file

    weights = tiny_esrgan(np.random.default_rng(7))
    with tempfile.TemporaryDirectory(prefix="sdapi-upscalers-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        for entry in (SAMPLES / "models").iterdir():
            if entry.name != "cache.json":
                (models / entry.name).symlink_to(entry.resolve())
        (models / "ESRGAN").mkdir()
        save_file(weights, str(models / "ESRGAN" / "tiny-esrgan.safetensors"))

        rng = np.random.default_rng(3)
        src = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8), "RGB")
        buf = io.BytesIO()
        src.save(buf, format="PNG")
        payload = {"upscaler_1": "tiny-esrgan", "upscaling_resize": 4, "image": base64.b64encode(buf.getvalue()).decode()}

        with Server(ctx.binary, {"SDAPI_MODELS_DIR": str(models)}) as s:
            listed = requests.get(s.url + "/sdapi/v1/upscalers", timeout=30).json()
            entry = next(u for u in listed if u["name"] == "tiny-esrgan")
            assert (entry["model_name"], entry["scale"]) == ("ESRGAN_4x", 4), entry

            for tile, overlap in ((0, 0), (16, 4)):
                assert requests.post(s.url + "/sdapi/v1/options", json={"ESRGAN_tile": tile, "ESRGAN_tile_overlap": overlap},
                                     timeout=30).status_code == 200
                r = requests.post(s.url + "/sdapi/v1/extra-single-image", json=payload, timeout=300)
                assert r.status_code == 200, r.text[:300]
                got = np.array(Image.open(io.BytesIO(base64.b64decode(r.json()["image"]))).convert("RGB")).astype(int)
                want_img = upscale_patch(weights, src) if tile == 0 else tiled(weights, src, tile, overlap)
                want = np.array(want_img).astype(int)
                assert got.shape == want.shape == (96, 160, 3), (got.shape, want.shape)
                diff = np.abs(got - want)
                # float32 here, float64 in the reference: at most a rounding step apart.
                assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (tile, diff.max(), (diff > 0).mean())
                assert r.json()["html_info"] == "<p>Postprocess upscale by: 4.0, Postprocess upscaler: tiny-esrgan</p>"

            # The hires fix's pixel path with the same model upscaler.
            r = requests.post(s.url + "/sdapi/v1/txt2img", json={
                "prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 1, "enable_hr": True,
                "hr_scale": 1.5, "hr_upscaler": "tiny-esrgan", "denoising_strength": 0.5}, timeout=300)
            assert r.status_code == 200, r.text[:300]
            info = check_generation(r.json(), 1, 96, 96)
            assert info["extra_generation_params"]["Hires upscaler"] == "tiny-esrgan"
            r = requests.post(s.url + "/sdapi/v1/txt2img", json={"prompt": "x", "enable_hr": True, "denoising_strength": 0.5,
                                                                  "hr_upscaler": "missing-model"}, timeout=60)
            assert r.status_code == 500 and r.json()["errors"] == "could not find upscaler named missing-model", r.text
