#!/usr/bin/env python3
"""Generates A1111-style reference images for the SDE samplers on the bundled tiny SD-1.x model:

    tests/fixtures/sde-parity/<case>/{request.json, case.json, image_0.png, intermediates.safetensors}

The fixtures in tests/fixtures/a1111-parity were produced by AUTOMATIC1111 v1.10.1 itself. This
script does NOT run A1111; it reproduces A1111's txt2img path for a k-diffusion sampler in plain
Python, with the real k-diffusion 0.1.1.post1 samplers and `CompVisDenoiser` schedule code, the
real torchsde 0.2.6 `BrownianTree` (through k-diffusion's `BrownianTreeNoiseSampler`, seeded with
the image seed as A1111's `create_noise_sampler` does) and A1111's `replace_torchsde_browinan`
(`_randn` -> first draw of a fresh NV/Philox generator seeded with the tree node's seed). The UNet
and VAE are diffusers modules loaded from models/tiny-sd15-diffusers (same weights as the
single-file checkpoint); the text conditioning is taken from the A1111 fixture of the same prompt
(`t2i_dpmpp_2m_karras_nv`: `iter0.cond` / `iter0.uncond`), so A1111's text encoder is not
re-implemented.

Before writing anything the script VALIDATES the pipeline: it re-runs the fixture case
`t2i_dpmpp_2m_karras_nv` (DPM++ 2M, Karras, 8 steps) and requires its latent to match the
fixture's `iter0.latent_final` and its image to be within 1 level of the fixture's `image_0.png`
(it also checks the first UNet call against `unet_probe.*`). Only then are the SDE cases built.

Environment: the venv of scripts/gen-brownian-refs.py (torch 2.1.2, numpy 1.26.2, torchsde 0.2.6,
k-diffusion 0.1.1.post1 installed --no-deps, safetensors 0.4.2) plus

    /tmp/venv-sde/bin/pip install diffusers==0.30.3 huggingface_hub==0.25.2 Pillow
    /tmp/venv-sde/bin/python scripts/gen-sde-refs.py          # from the repository root

(diffusers >= 0.31 needs a newer torch than 2.1.2.) Runs on CPU in float32 in a few seconds.
"""

import json
import os
import platform
import sys

import numpy as np
import torch
import torchsde
import torchsde._brownian.brownian_interval as brownian_interval
from PIL import Image, PngImagePlugin
import safetensors.torch  # noqa: F401  (diffusers expects the submodule loaded)
from safetensors.numpy import load_file

# diffusers probes find_spec('k_diffusion') on import: import it before the stub package below.
from diffusers import AutoencoderKL, UNet2DConditionModel

from refgen_common import load_k_diffusion, philox_randn, write_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests/fixtures/a1111-parity")
BASE_CASE = os.path.join(FIX, "cases/t2i_dpmpp_2m_karras_nv")
OUT = os.path.join(ROOT, "tests/fixtures/sde-parity")

# ---------------------------------------------------------------------------------------------
# A1111's NV random source (refgen_common.philox_randn) behind torchsde.

# A1111 replace_torchsde_browinan(): every tree node's noise is the first draw of a fresh generator
# (randn_source NV).
brownian_interval._randn = lambda size, dtype, device, seed: torch.asarray(philox_randn(seed, size)).to(
    device=device, dtype=dtype)

# ---------------------------------------------------------------------------------------------
# k-diffusion's sampling and external modules (refgen_common.load_k_diffusion).

K, KE = load_k_diffusion()


# ---------------------------------------------------------------------------------------------
# Model.

torch.set_grad_enabled(False)
DIFFUSERS = os.path.join(FIX, "models/tiny-sd15-diffusers")
UNET = UNet2DConditionModel.from_pretrained(os.path.join(DIFFUSERS, "unet"), torch_dtype=torch.float32).eval()
VAE = AutoencoderKL.from_pretrained(os.path.join(DIFFUSERS, "vae"), torch_dtype=torch.float32).eval()
# The DDPM buffer as stored in the single-file checkpoint (float32), which A1111's CompVisDenoiser uses.
ALPHAS_CUMPROD = torch.from_numpy(load_file(os.path.join(FIX, "models/tiny-sd15.safetensors"))["alphas_cumprod"])

UNET_CALLS = []


class LDMShim(torch.nn.Module):
    """What k-diffusion's CompVisDenoiser needs of an LDM LatentDiffusion: alphas_cumprod and
    apply_model(x, t, cond) -> eps."""

    def __init__(self):
        super().__init__()
        self.alphas_cumprod = ALPHAS_CUMPROD

    def apply_model(self, x, t, cond):
        eps = UNET(x, t, encoder_hidden_states=cond).sample
        UNET_CALLS.append((x.clone(), t.clone(), eps.clone()))
        return eps


DENOISER = KE.CompVisDenoiser(LDMShim(), quantize=False)


class CFGDenoiser:
    """A1111 CFGDenoiser for one image with one cond of equal token length: one UNet batch
    [cond, uncond], denoised = uncond + (cond - uncond) * cfg_scale (combine_denoised)."""

    def __init__(self, cond, uncond, cfg_scale):
        self.cond, self.uncond, self.cfg_scale = cond, uncond, cfg_scale
        self.calls = 0

    def __call__(self, x, sigma, **_):
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        out = DENOISER(x_in, sigma_in, cond=torch.cat([self.cond, self.uncond]))
        uncond_d = out[1:2]
        denoised = uncond_d.clone()
        denoised[0] += (out[0] - uncond_d[0]) * self.cfg_scale
        self.calls += 1
        return denoised


def karras(steps):
    m_sigma_min, m_sigma_max = DENOISER.sigmas[0].item(), DENOISER.sigmas[-1].item()
    return K.get_sigmas_karras(n=steps, sigma_min=m_sigma_min, sigma_max=m_sigma_max, device="cpu").cpu()


def decode(latent):
    x = VAE.decode(latent / 0.18215).sample
    x = torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0)
    return x


def to_uint8(x):
    return (255.0 * x[0].permute(1, 2, 0).numpy()).astype(np.uint8)  # truncation, as A1111


NOISE_LOG = []


def run(sampler, sigmas, noise, cond, uncond, cfg, seed):
    x = noise * sigmas[0]
    model = CFGDenoiser(cond, uncond, cfg)
    kwargs = {}
    if sampler in ("dpmpp_sde", "dpmpp_2m_sde"):
        # A1111 create_noise_sampler (eta 1 = opts.eta_ancestral default, s_noise 1).
        sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
        ns = K.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=[seed])

        def noise_sampler(s, s_next):
            out = ns(s, s_next)
            NOISE_LOG.append((float(s), float(s_next), out.clone()))
            return out

        kwargs["noise_sampler"] = noise_sampler
        kwargs["eta"] = 1.0
        kwargs["s_noise"] = 1.0
    fn = {"dpmpp_2m": K.sample_dpmpp_2m, "dpmpp_sde": K.sample_dpmpp_sde, "dpmpp_2m_sde": K.sample_dpmpp_2m_sde}[sampler]
    latent = fn(model, x, sigmas, extra_args={}, disable=True, **kwargs)
    return x, latent, model.calls


def main():
    base_req = json.load(open(os.path.join(BASE_CASE, "request.json")))
    inter = load_file(os.path.join(BASE_CASE, "intermediates.safetensors"))
    cond = torch.from_numpy(inter["iter0.cond"])
    uncond = torch.from_numpy(inter["iter0.uncond"])
    seed, cfg = base_req["seed"], float(base_req["cfg_scale"])
    h, w = base_req["height"], base_req["width"]
    assert base_req["override_settings"]["randn_source"] == "NV" and base_req["negative_prompt"] == ""

    noise = torch.from_numpy(philox_randn(seed, (1, 4, h // 8, w // 8)))
    assert np.array_equal(noise.numpy(), inter["iter0.noise"]), "NV noise differs from the fixture"

    # ---- validation: the fixture's own case (DPM++ 2M, Karras, 8 steps)
    sigmas = karras(base_req["steps"])
    assert np.array_equal(sigmas.numpy(), inter["iter0.sigmas"]), (sigmas, inter["iter0.sigmas"])
    UNET_CALLS.clear()
    x_T, latent, _ = run("dpmpp_2m", sigmas, noise, cond, uncond, cfg, seed)
    assert np.array_equal(x_T.numpy(), inter["iter0.x_T"]), "x_T differs"
    px, pt, pe = UNET_CALLS[0]
    probe = {k: np.abs(a.numpy() - inter["unet_probe." + k]).max() for k, a in (("x_in", px), ("t", pt), ("eps", pe))}
    lat_diff = np.abs(latent.numpy() - inter["iter0.latent_final"]).max()
    lat_scale = np.abs(inter["iter0.latent_final"]).max()
    img = to_uint8(decode(latent))
    ref = np.array(Image.open(os.path.join(BASE_CASE, "image_0.png")).convert("RGB"))
    pix = np.abs(img.astype(int) - ref.astype(int))
    print(f"validation t2i_dpmpp_2m_karras_nv: unet_probe max|diff| {probe}")
    print(f"  latent_final max|diff| {lat_diff:.3g} (max|latent| {lat_scale:.3g})")
    print(f"  image max|diff| {pix.max()} levels, {int((pix > 0).any(-1).sum())} of {h * w} pixels differ")
    if pix.max() > 1 or lat_diff > 1e-3 * max(1.0, lat_scale):
        sys.exit("VALIDATION FAILED: not writing the SDE cases")

    # ---- SDE cases
    cases = [
        ("t2i_dpmpp_2m_sde_karras_nv", "DPM++ 2M SDE", "Karras", "dpmpp_2m_sde", "Karras",
         "DPM++ 2M SDE (midpoint, eta 1) with the Karras schedule, Brownian-tree noise (NV)"),
        ("t2i_dpmpp_sde_nv", "DPM++ SDE", "Automatic", "dpmpp_sde", "Karras",
         "DPM++ SDE (eta 1, r 1/2; 2 model calls per step, 1 on the last) with scheduler Automatic (= Karras), "
         "Brownian-tree noise (NV)"),
    ]
    steps = 4
    versions = (f"python {platform.python_version()}, torch {torch.__version__}, torchsde {torchsde.__version__}, "
                f"numpy {np.__version__}, k-diffusion 0.1.1.post1, diffusers {sys.modules['diffusers'].__version__}")
    for name, sampler_label, sched_req, fn, sched_used, desc in cases:
        NOISE_LOG.clear()
        sigmas = karras(steps)
        x_T, latent, calls = run(fn, sigmas, noise, cond, uncond, cfg, seed)
        dec = decode(latent)
        img = to_uint8(dec)
        req = dict(base_req)
        req["sampler_name"], req["scheduler"], req["steps"] = sampler_label, sched_req, steps
        req["override_settings"] = dict(base_req["override_settings"])
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "request.json"), "w") as f:
            json.dump(req, f, indent=1)
            f.write("\n")
        infotext = (f"{req['prompt']}\nSteps: {steps}, Sampler: {sampler_label}, Schedule type: {sched_used}, "
                    f"CFG scale: {cfg}, Seed: {seed}, Size: {w}x{h}, Model hash: 7037055cdc, Model: tiny-sd15, "
                    f"RNG: NV, Version: v1.10.1")
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_text("parameters", infotext)
        Image.fromarray(img, "RGB").save(os.path.join(d, "image_0.png"), pnginfo=pnginfo)
        tensors = {
            "iter0.noise": noise.numpy(),
            "iter0.x_T": x_T.numpy(),
            "iter0.sigmas": sigmas.numpy(),
            "iter0.latent_final": latent.numpy(),
            "iter0.decoded_clamped": dec.numpy(),
            "iter0.noise_sampler_queries": np.array([[a, b] for a, b, _ in NOISE_LOG], dtype=np.float32),
            "iter0.noise_sampler_out": torch.cat([o for _, _, o in NOISE_LOG]).numpy(),
            "iter0.model_calls": np.array([calls], dtype=np.int64),
        }
        write_safetensors(os.path.join(d, "intermediates.safetensors"), tensors,
                          {"generator": "scripts/gen-sde-refs.py", "versions": versions})
        case = {
            "name": name,
            "description": desc,
            "endpoint": "/sdapi/v1/txt2img",
            "mode": "txt2img",
            "model": "tiny-sd15",
            "images": ["image_0.png"],
            "width": w,
            "height": h,
            "seeds": [seed],
            "resolved_sampler": sampler_label,
            "resolved_scheduler": sched_used,
            "model_calls": calls,
            "infotexts_expected_like": [infotext],
            "tolerance": {"max_abs_pixel_diff": 2},
            "source": "scripts/gen-sde-refs.py (reimplementation of A1111 v1.10.1's path, NOT produced by A1111)",
            "versions": versions,
        }
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
            f.write("\n")
        print(f"{name}: sigmas {[round(float(s), 6) for s in sigmas]}, {calls} model calls, "
              f"{len(NOISE_LOG)} noise-sampler calls, latent std {latent.std().item():.3f}, "
              f"pixel mean {img.mean():.1f}")


if __name__ == "__main__":
    main()
