"""The `webuiapi` PyPI client against our server: the discovery calls real front-ends make first.

Expected values are A1111 v1.10.1's (docs/a1111-behaviour.md §2.1, §2.7, §2.8, §5.1, §5.2)
for an install running the bundled tiny-sd15.
"""
from __future__ import annotations

import json
from urllib.parse import urlparse

import requests
import webuiapi
from PIL import Image

from harness import (A1111_SAMPLERS, A1111_SCHEDULERS, FIXTURES, MODEL_HASH, MODEL_NAME, MODEL_TITLE,
                     get)


def client(ctx) -> webuiapi.WebUIApi:
    u = urlparse(ctx.url)
    return webuiapi.WebUIApi(host=u.hostname, port=u.port, sampler="Euler a", steps=4)


def test_samplers_in_a1111_order(ctx):
    samplers = client(ctx).get_samplers()
    assert [s["name"] for s in samplers] == A1111_SAMPLERS
    first = samplers[0]
    assert first == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}, first
    sde = next(s for s in samplers if s["name"] == "DPM++ SDE")
    # pydantic stringifies option values: True -> "True".
    assert sde["options"] == {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}, sde


def test_schedulers(ctx):
    scheds = client(ctx).get_schedulers()
    assert [(s["name"], s["label"]) for s in scheds] == A1111_SCHEDULERS
    karras = next(s for s in scheds if s["name"] == "karras")
    assert karras["default_rho"] == 7.0 and karras["need_inner_model"] is False, karras
    assert list(scheds[0]) == ["name", "label", "aliases", "default_rho", "need_inner_model"], scheds[0]


def test_sd_models_lists_bundled_checkpoint(ctx):
    models = client(ctx).get_sd_models()
    # samples/models bundles the trained demo model and the tiny SD-1.5, SD-2 (v) and SDXL parity
    # models, listed by name; the harness selects tiny-sd15.
    assert [x["model_name"] for x in models] == ["demo-shapes", "tiny-sd15", "tiny-sd2v", "tiny-sdxl"], models
    assert models[0]["config"].endswith("demo-shapes.yaml"), models[0]
    m = models[1]
    assert m["title"] == MODEL_TITLE
    assert m["model_name"] == MODEL_NAME
    assert m["hash"] == MODEL_HASH
    assert m["sha256"] == "7037055cdc2efc1c7d3397bd638c19bf2bdab17a999a002cc00e2a63c3cb5cfd"
    assert m["filename"].endswith("tiny-sd15.safetensors"), m["filename"]
    # The sidecar config beside the file is reported, as A1111 does.
    assert m["config"].endswith("tiny-sd15.yaml"), m["config"]
    assert client(ctx).util_get_model_names()[1] == MODEL_TITLE
    assert models[2]["config"].endswith("tiny-sd2v.yaml"), models[2]


def test_options_round_trip_send_seed(ctx):
    # A1111's test/test_utils.py::test_options_write, through the client.
    api = client(ctx)
    opts = api.get_options()
    assert opts["sd_model_checkpoint"] == MODEL_TITLE, opts.get("sd_model_checkpoint")
    # Non-zero int defaults come back as floats (OptionsModel typemap int -> float).
    assert opts["CLIP_stop_at_last_layers"] == 1.0 and isinstance(opts["CLIP_stop_at_last_layers"], float)
    before = opts["send_seed"]
    assert isinstance(before, bool)
    try:
        assert api.set_options({"send_seed": not before}) is None  # A1111 answers `null`
        assert api.get_options()["send_seed"] is (not before)
    finally:
        api.set_options({"send_seed": before})
    assert api.get_options()["send_seed"] is before


def test_cmd_flags(ctx):
    flags = client(ctx).get_cmd_flags()
    assert isinstance(flags, dict)
    missing = {"api", "api_auth", "nowebui", "listen", "port", "ckpt", "ckpt_dir"} - set(flags)
    assert not missing, f"cmd-flags lacks A1111 flags {sorted(missing)}"


def test_scripts_list_shape(ctx):
    scripts = client(ctx).get_scripts()
    assert set(scripts) == {"txt2img", "img2img"}, scripts
    for tab in ("txt2img", "img2img"):
        assert isinstance(scripts[tab], list)
        assert all(isinstance(n, str) and n == n.lower() for n in scripts[tab]), scripts[tab]


def test_progress_when_idle(ctx):
    p = client(ctx).get_progress()
    assert p["progress"] == 0.0 and p["eta_relative"] == 0.0, p
    assert list(p["state"]) == ["skipped", "interrupted", "stopping_generation", "job", "job_count",
                                "job_timestamp", "job_no", "sampling_step", "sampling_steps"], p["state"]
    assert p["state"]["job_count"] == 0
    assert p["current_image"] is None


def test_upscalers(ctx):
    ups = client(ctx).get_upscalers()
    assert [u["name"] for u in ups[:3]] == ["None", "Lanczos", "Nearest"], ups
    for u in ups:
        assert list(u) == ["name", "model_name", "model_path", "model_url", "scale"], u
        assert u["model_url"] is None


def test_latent_upscale_modes(ctx):
    modes = client(ctx).get_latent_upscale_modes()
    assert [m["name"] for m in modes] == ["Latent", "Latent (antialiased)", "Latent (bicubic)",
                                          "Latent (bicubic antialiased)", "Latent (nearest)",
                                          "Latent (nearest-exact)"]


def test_loras_embeddings_and_styles_list_the_bundled_files(ctx):
    # samples/models links the feature fixtures' LoRA and embedding and has a styles.csv.
    api = client(ctx)
    loras = api.get_loras()
    assert [x["name"] for x in loras] == ["tiny-lora"], loras
    lora = loras[0]
    assert lora["alias"] == "tiny-lora" and lora["path"].endswith("Lora/tiny-lora.safetensors"), lora
    assert lora["metadata"]["ss_output_name"] == "tiny-lora", lora["metadata"]
    item = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 32, "vectors": 2}
    assert api.get_embeddings() == {"loaded": {"tiny-emb": item}, "skipped": {}}
    assert api.get_prompt_styles() == [
        {"name": "Studio photo", "prompt": "studio photo of {prompt}, soft light", "negative_prompt": "blurry, lowres"},
        {"name": "Oil painting", "prompt": "oil painting", "negative_prompt": "photo"},
    ]
    assert api.get_sd_vae() == []
    assert api.get_hypernetworks() == []
    # A checkpoint whose text encoders are wider lists the 32-wide embedding as skipped.
    api.set_options({"sd_model_checkpoint": "tiny-sdxl"})
    try:
        assert api.get_embeddings() == {"loaded": {}, "skipped": {"tiny-emb": item}}
    finally:
        api.set_options({"sd_model_checkpoint": MODEL_TITLE})
    for route in ("refresh-loras", "refresh-embeddings"):
        r = requests.post(f"{ctx.url}/sdapi/v1/{route}", timeout=30)
        assert r.status_code == 200 and r.json() is None, (route, r.status_code, r.text)
    assert [x["name"] for x in api.get_loras()] == ["tiny-lora"]


def test_styles_and_comments_shape_the_prompt_as_a1111(ctx):
    # Styles wrap the prompt ({prompt} or ", " join), comments are stripped afterwards, and the
    # infotext shows the result; a LoRA tag stays in the infotext and adds its hash.
    body = {"prompt": "a cube # hidden\n<lora:tiny-lora:0.5>", "negative_prompt": "dark",
            "styles": ["Studio photo", "Oil painting", "no such style"], "steps": 2, "width": 64, "height": 64,
            "seed": 7}
    r = requests.post(f"{ctx.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["prompt"] == "studio photo of a cube \n<lora:tiny-lora:0.5>, soft light, oil painting", info["prompt"]
    assert info["negative_prompt"] == "dark, blurry, lowres, photo", info["negative_prompt"]
    assert info["styles"] == ["Studio photo", "Oil painting", "no such style"]
    assert info["extra_generation_params"]["Lora hashes"] == "tiny-lora: 108bacb306aa", info
    assert info["infotexts"][0].startswith(info["prompt"] + "\nNegative prompt: dark, blurry, lowres, photo\n")


def test_sd_lora_option_adds_the_lora_to_the_prompt(ctx):
    body = {"prompt": "a cube", "steps": 2, "width": 64, "height": 64, "seed": 3,
            "override_settings": {"sd_lora": "tiny-lora", "extra_networks_default_multiplier": 0.5}}
    r = requests.post(f"{ctx.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["prompt"] == "a cube<lora:tiny-lora:0.5>", info["prompt"]
    assert info["extra_generation_params"]["Lora hashes"] == "tiny-lora: 108bacb306aa", info


def test_memory_shape(ctx):
    mem = client(ctx).get_memory()
    assert set(mem) == {"ram", "cuda"}, mem


def test_png_info_on_fixture_image(ctx):
    case = FIXTURES / "cases" / "t2i_euler_nv_seed1234"
    im = Image.open(case / "image_0.png")
    expected = im.info["parameters"]
    res = client(ctx).png_info(im)
    assert res.info == expected, res.info
    p = res.parameters
    assert p["Prompt"] == "a red cube on a wooden table"
    assert p["Negative prompt"] == ""
    # Parsed values stay strings; WxH splits into -1/-2 (docs/a1111-behaviour.md §3.4).
    assert (p["Steps"], p["Sampler"], p["Seed"], p["Size-1"], p["Size-2"]) == ("8", "Euler", "1234", "64", "64"), p
    assert p["Model hash"] == MODEL_HASH and p["RNG"] == "NV", p
    assert p["Clip skip"] == "1", p  # default added by the parser


def test_png_info_without_metadata(ctx):
    im = Image.open(FIXTURES / "init_images" / "init_a_64x64.png")
    res = client(ctx).png_info(im)
    assert res.info == ""
    assert res.parameters.get("Steps") is None and res.parameters.get("Schedule type") == "Automatic", res.parameters


def test_txt2img_through_client(ctx):
    res = client(ctx).txt2img(prompt="a red cube on a wooden table", seed=1234, steps=4, width=64, height=64,
                              override_settings={"sd_model_checkpoint": MODEL_NAME})
    assert len(res.images) == 1
    assert res.image.size == (64, 64)
    assert isinstance(res.info, dict), f"info did not parse as JSON: {res.info!r}"
    assert res.info["seed"] == 1234 and res.info["all_seeds"] == [1234]
    assert res.info["sampler_name"] == "Euler a" and res.info["steps"] == 4
    assert res.info["sd_model_hash"] == MODEL_HASH
    assert "Steps: 4, Sampler: Euler a" in res.image.info["parameters"], res.image.info
    assert res.parameters["prompt"] == "a red cube on a wooden table"


def test_root_answers_for_verify_base_url(ctx):
    # A1111's CI runs pytest --verify-base-url, which needs GET / to answer (docs/a1111-behaviour.md §8).
    r = get(ctx.url + "/", timeout=30)
    assert r.status_code < 500, r.status_code
