"""Re-creation of A1111's own API tests (test/test_txt2img.py, test_img2img.py, test_utils.py;
docs/a1111-behaviour.md §8), run against our server.

A1111's tests only assert HTTP 200. Here, supported variants must answer 200 with a well-formed
response; variants whose feature is not implemented yet must fail *clearly*: a 4xx/5xx in A1111's
four-key error shape. Those are listed once, in UNSUPPORTED below: when a feature lands, delete its
name there and the same test then requires 200.
"""
from __future__ import annotations

import base64
import io

from harness import FIXTURES, MODEL_NAME, check_error_shape, check_generation, get, post

# Variants whose feature the server does not implement yet (the list shrinks as features land).
UNSUPPORTED = {
    "txt2img_restore_faces",    # face restoration
}


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


INIT = data_url(FIXTURES / "init_images" / "init_a_64x64.png")


def mask_data_url() -> str:
    """A 64x64 mask: white left half (A1111 uses test_files/mask_basic.png; any mask will do)."""
    from PIL import Image
    im = Image.new("L", (64, 64), 0)
    im.paste(255, (0, 0, 32, 64))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def txt2img_base() -> dict:
    # test_txt2img.py's payload verbatim, plus the model pin (our server has one checkpoint anyway).
    return {
        "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0,
        "firstphase_height": 0, "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "",
        "prompt": "example prompt", "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0,
        "s_tmin": 0, "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1,
        "seed_resize_from_w": -1, "steps": 3, "styles": [], "subseed": -1, "subseed_strength": 0,
        "tiling": False, "width": 64, "override_settings": {"sd_model_checkpoint": MODEL_NAME},
    }


def img2img_base() -> dict:
    p = txt2img_base()
    p.update({"denoising_strength": 0.75, "include_init_images": False, "init_images": [INIT],
              "inpaint_full_res": False, "inpaint_full_res_padding": 0, "inpainting_fill": 0,
              "inpainting_mask_invert": False, "mask": None, "mask_blur": 4, "resize_mode": 0})
    return p


def run_case(ctx, name: str, endpoint: str, payload: dict, n_images: int = 1, width: int = 64, height: int = 64):
    r = post(ctx.url + endpoint, payload)
    if name in UNSUPPORTED:
        body = check_error_shape(r)
        assert body["error"] and (body["detail"] or body["errors"]), f"{name}: error says nothing: {body}"
        return None
    assert r.status_code == 200, f"{name}: HTTP {r.status_code} {r.text[:400]}"
    return check_generation(r.json(), n_images, width, height)


def t2i(**changes) -> dict:
    p = txt2img_base()
    p.update(changes)
    return p


def i2i(**changes) -> dict:
    p = img2img_base()
    p.update(changes)
    return p


# --- test_txt2img.py ---------------------------------------------------------------------------

def test_txt2img_simple(ctx):
    info = run_case(ctx, "txt2img_simple", "/sdapi/v1/txt2img", t2i())
    assert info["sampler_name"] == "Euler a" and info["steps"] == 3


def test_txt2img_negative_prompt(ctx):
    info = run_case(ctx, "txt2img_negative_prompt", "/sdapi/v1/txt2img", t2i(negative_prompt="example negative prompt"))
    assert info["negative_prompt"] == "example negative prompt"


def test_txt2img_complex_prompt(ctx):
    prompt = "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"
    info = run_case(ctx, "txt2img_complex_prompt", "/sdapi/v1/txt2img", t2i(prompt=prompt))
    assert info["prompt"] == prompt


def test_txt2img_height_128(ctx):
    run_case(ctx, "txt2img_height_128", "/sdapi/v1/txt2img", t2i(height=128), height=128)


def test_txt2img_tiling(ctx):
    info = run_case(ctx, "txt2img_tiling", "/sdapi/v1/txt2img", t2i(tiling=True))
    assert "Tiling: True" in info["infotexts"][0], info["infotexts"][0]


def test_txt2img_sampler_plms(ctx):
    assert run_case(ctx, "txt2img_sampler_plms", "/sdapi/v1/txt2img", t2i(sampler_index="PLMS"))["sampler_name"] == "PLMS"


def test_txt2img_sampler_ddim(ctx):
    assert run_case(ctx, "txt2img_sampler_ddim", "/sdapi/v1/txt2img", t2i(sampler_index="DDIM"))["sampler_name"] == "DDIM"


def test_txt2img_sampler_unipc(ctx):
    assert run_case(ctx, "txt2img_sampler_unipc", "/sdapi/v1/txt2img", t2i(sampler_index="UniPC"))["sampler_name"] == "UniPC"


def test_txt2img_n_iter_2(ctx):
    info = run_case(ctx, "txt2img_n_iter_2", "/sdapi/v1/txt2img", t2i(n_iter=2), n_images=2)
    assert info["all_seeds"][1] == info["all_seeds"][0] + 1


def test_txt2img_batch_size_2(ctx):
    info = run_case(ctx, "txt2img_batch_size_2", "/sdapi/v1/txt2img", t2i(batch_size=2), n_images=2)
    assert info["batch_size"] == 2


def test_txt2img_enable_hr(ctx):
    # A1111's payload sends denoising_strength 0: the second pass samples nothing and returns the
    # first pass upscaled (default hr_scale 2.0, hr_upscaler Latent) at 128x128.
    info = run_case(ctx, "txt2img_enable_hr", "/sdapi/v1/txt2img", t2i(enable_hr=True), width=128, height=128)
    assert info["extra_generation_params"]["Hires upscale"] == 2.0


def test_UNSUPPORTED_txt2img_restore_faces(ctx):
    run_case(ctx, "txt2img_restore_faces", "/sdapi/v1/txt2img", t2i(restore_faces=True))


# --- test_img2img.py ---------------------------------------------------------------------------

def test_img2img_simple(ctx):
    r = post(ctx.url + "/sdapi/v1/img2img", i2i())
    assert r.status_code == 200, r.text[:400]
    body = r.json()
    info = check_generation(body, 1)
    assert info["denoising_strength"] == 0.75
    # include_init_images false: the request echo drops the images (docs/a1111-behaviour.md §2.4).
    assert body["parameters"]["init_images"] is None and body["parameters"]["mask"] is None


def test_img2img_inpainting_mask(ctx):
    info = run_case(ctx, "img2img_inpainting_mask", "/sdapi/v1/img2img", i2i(mask=mask_data_url()))
    assert "Mask blur: 4, Masked content: fill" in info["infotexts"][0], info["infotexts"][0]


def test_img2img_inpainting_mask_invert(ctx):
    info = run_case(ctx, "img2img_inpainting_mask_invert", "/sdapi/v1/img2img",
                    i2i(mask=mask_data_url(), inpainting_mask_invert=True))
    assert "Mask mode: Inpaint not masked" in info["infotexts"][0], info["infotexts"][0]


def test_img2img_sd_upscale_script(ctx):
    # The 64x64 init image upscaled 2x with Lanczos, cut into 64x64 tiles overlapping by 8 (3x3),
    # each tile through img2img, blended back: one 128x128 image.
    info = run_case(ctx, "img2img_sd_upscale_script", "/sdapi/v1/img2img",
                    i2i(script_name="sd upscale", script_args=["", 8, "Lanczos", 2.0]), width=128, height=128)
    assert "SD upscale overlap: 8, SD upscale upscaler: Lanczos" in info["infotexts"][0], info["infotexts"][0]


def test_img2img_loopback_script(ctx):
    # Two loops with one batch: the grid of both loops (128x64), then each loop's image.
    r = post(ctx.url + "/sdapi/v1/img2img", i2i(script_name="loopback", script_args=[2, 0.5, "Linear", "None"]))
    assert r.status_code == 200, r.text[:400]
    from PIL import Image
    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for b in r.json()["images"]]
    assert sizes == [(128, 64), (64, 64), (64, 64)], sizes


# --- test_extras.py ----------------------------------------------------------------------------

def _extras(ctx, payload: dict) -> dict:
    r = post(ctx.url + "/sdapi/v1/extra-single-image", payload)
    assert r.status_code == 200, r.text[:400]
    body = r.json()
    assert isinstance(body["html_info"], str) and isinstance(body["image"], str), body.keys()
    return body


def test_extras_simple_upscaling_performed(ctx):
    from PIL import Image
    body = _extras(ctx, {
        "resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0,
        "codeformer_weight": 0, "upscaling_resize": 2, "upscaling_resize_w": 128, "upscaling_resize_h": 128,
        "upscaling_crop": True, "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
        "image": INIT.split(",", 1)[1],
    })
    img = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert img.size == (128, 128)
    # The same resize with Pillow (A1111's own Lanczos upscaler: one 2x step, already a multiple of 8).
    src = Image.open(io.BytesIO(base64.b64decode(INIT.split(",", 1)[1]))).convert("RGB")
    want = src.resize((128, 128), resample=Image.Resampling.LANCZOS)
    assert img.convert("RGB").tobytes() == want.tobytes(), "pixels differ from Pillow's LANCZOS"
    assert img.info.get("postprocessing") == "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos"


def test_extras_png_info_performed(ctx):
    _extras(ctx, {"image": INIT.split(",", 1)[1]})


def test_extras_interrogate_performed(ctx):
    _extras(ctx, {"image": INIT.split(",", 1)[1], "model": "clip"})


# --- test_utils.py -----------------------------------------------------------------------------

def test_options_write(ctx):
    url = ctx.url + "/sdapi/v1/options"
    before = get(url).json()["send_seed"]
    r = post(url, {"send_seed": not before})
    assert r.status_code == 200 and r.json() is None, (r.status_code, r.text)
    assert get(url).json()["send_seed"] == (not before)
    post(url, {"send_seed": before})
    assert get(url).json()["send_seed"] == before


def test_get_api_urls(ctx):
    for ep in ("cmd-flags", "samplers", "upscalers", "sd-models", "hypernetworks", "face-restorers",
               "realesrgan-models", "prompt-styles", "embeddings"):
        r = get(f"{ctx.url}/sdapi/v1/{ep}")
        assert r.status_code == 200, f"{ep}: HTTP {r.status_code}"


def test_unsupported_list_is_consistent(ctx):
    """Every UNSUPPORTED name has a test_UNSUPPORTED_<name> and vice versa: when a feature lands,
    remove it from the set and drop the prefix from its test name."""
    names = {k.removeprefix("test_UNSUPPORTED_") for k in globals() if k.startswith("test_UNSUPPORTED_")}
    assert UNSUPPORTED == names, UNSUPPORTED ^ names


def test_img2img_poor_mans_outpainting_script(ctx):
    # 64x64 widened by 16 px left and right: the canvas rounds up to 128x64, the border tiles are
    # inpainted (whole picture, mask blur 2x4) and the tiles blended back into one image.
    info = run_case(ctx, "img2img_poor_mans_outpainting", "/sdapi/v1/img2img",
                    i2i(script_name="poor man's outpainting", script_args=[16, 4, "fill", ["left", "right"]]),
                    width=128, height=64)
    assert "Mask blur: 8, Masked content: fill" in info["infotexts"][0], info["infotexts"][0]


def test_img2img_inpainting_only_masked_keeps_the_init_size(ctx):
    # "Only masked" (the API default) generates at 64x64 and pastes back into the 96x96 init image.
    from PIL import Image
    im = Image.new("RGB", (96, 96), (90, 140, 200))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    init = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    info = run_case(ctx, "img2img_inpainting_only_masked", "/sdapi/v1/img2img",
                    i2i(init_images=[init], mask=mask_data_url(), inpaint_full_res=True, inpaint_full_res_padding=8),
                    width=96, height=96)
    assert "Inpaint area: Only masked, Masked area padding: 8" in info["infotexts"][0], info["infotexts"][0]
