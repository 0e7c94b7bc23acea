#!/usr/bin/env python3
"""diffusers side of `bench gen`: the same generation loop, random weights, real shapes.

    reference_gen.py --arch sd15|sdxl|tiny [--size 512] [--steps 20] [--iters 3] [--warmup 1]
                     [--device cuda|cpu] [--dtype f16|f32] [--plan]

Builds diffusers' UNet2DConditionModel and AutoencoderKL with the shapes of `bench`'s `Arch`
(core/engine/src/bench/weights.rs), torch's default init with biases zeroed (what `bench` writes),
directly on the device in the given precision, attention through SDPA (diffusers' default
AttnProcessor2_0). Then per run: `steps` Euler steps of a CFG pair (scale 7) on SD's training
schedule with integer timesteps from 999 to 0 — the list `bench gen` uses, see `euler_sigmas` —
and the VAE decode, timed with the device synchronised. Text encoders are left out on both sides.

Prints one JSON line (`{"bench": "gen", "impl": "diffusers", ...}`) with the median, the samples,
peak memory from torch's allocator, the parameter count and whether anything went NaN/inf.
`--plan` prints the configs and the sigma list without importing torch (the CI smoke mode, where
torch is not installed).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import struct
import sys
import time

CFG_SCALE = 7.0


def unet_config(arch: str) -> dict:
    """diffusers UNet2DConditionModel kwargs of `bench`'s Arch (same tensors, same shapes)."""
    if arch == "sdxl":
        return dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                    block_out_channels=(320, 640, 1280),
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    if arch == "sd15":
        return dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    if arch == "tiny":
        return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                    cross_attention_dim=32, attention_head_dim=8,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    raise SystemExit(f"--arch {arch!r}: expected sd15, sdxl or tiny")


def vae_config(arch: str) -> dict:
    full = arch != "tiny"
    return dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2 if full else 1,
                block_out_channels=(128, 256, 512, 512) if full else (32, 32, 64, 64),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                scaling_factor=0.13025 if arch == "sdxl" else 0.18215)


def context_dim(arch: str) -> int:
    return {"sd15": 768, "sdxl": 2048, "tiny": 32}[arch]


def alphas_cumprod() -> list[float]:
    """SD's training schedule: betas linear in sqrt from 0.00085 to 0.012 over 1000 steps, in f64."""
    lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
    out, prod = [], 1.0
    for i in range(1000):
        beta = (lo + (hi - lo) * i / 999) ** 2
        prod *= 1.0 - beta
        out.append(prod)
    return out


def euler_sigmas(steps: int) -> list[tuple[float, int]]:
    """(sigma, timestep) pairs: integer timesteps evenly spread from 999 to 0, then sigma 0."""
    ac = alphas_cumprod()
    out = []
    for i in range(steps):
        t = 999 if steps == 1 else int(math.floor(999 - i * 999 / (steps - 1) + 0.5))
        a = struct.unpack("f", struct.pack("f", ac[t]))[0]  # `bench` keeps the schedule in f32
        out.append((math.sqrt((1 - a) / a), t))
    out.append((0.0, 0))
    return out


def plan(a) -> dict:
    return {"bench": "gen_plan", "impl": "diffusers", "arch": a.arch, "size": a.size, "steps": a.steps,
            "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in unet_config(a.arch).items()},
            "vae": {k: list(v) if isinstance(v, tuple) else v for k, v in vae_config(a.arch).items()},
            "sigmas": [round(s, 6) for s, _ in euler_sigmas(a.steps)],
            "timesteps": [t for _, t in euler_sigmas(a.steps)]}


def run(a) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    device = torch.device(a.device)
    dtype = {"f16": torch.float16, "f32": torch.float32}[a.dtype]
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # initialise on the device: SDXL's 2.6 G parameters in seconds
        unet = UNet2DConditionModel(**unet_config(a.arch))
        vae = AutoencoderKL(**vae_config(a.arch))
    with torch.no_grad():
        for model in (unet, vae):
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
    unet, vae = unet.to(dtype).eval(), vae.to(dtype).eval()
    sync()
    build_ms = (time.perf_counter() - t0) * 1e3
    params = sum(p.numel() for p in unet.parameters())

    g = torch.Generator(device="cpu").manual_seed(21)
    lat = a.size // 8
    sigmas = euler_sigmas(a.steps)
    x0 = ((torch.rand(1, 4, lat, lat, generator=g) * 2 - 1) * sigmas[0][0]).to(device)
    ctx = (torch.rand(2, 77, context_dim(a.arch), generator=g) * 2 - 1).to(device, dtype)
    added = None
    if a.arch == "sdxl":  # pooled text (1280) + 6 size numbers embedded to 256 each = 2816
        added = {"text_embeds": (torch.rand(2, 1280, generator=g) * 2 - 1).to(device, dtype),
                 "time_ids": torch.tensor([[a.size, a.size, 0, 0, a.size, a.size]] * 2, device=device, dtype=dtype)}
    decode_ms: list[float] = []
    state = {"non_finite": False, "std": 0.0}

    @torch.inference_mode()
    def one():
        x = x0.clone()
        for (sigma, t), (nxt, _) in zip(sigmas, sigmas[1:]):
            scaled = (x / math.sqrt(sigma * sigma + 1)).to(dtype)
            ts = torch.tensor([float(t)] * 2, device=device)
            eps = unet(torch.cat([scaled, scaled]), ts, encoder_hidden_states=ctx,
                       added_cond_kwargs=added).sample.float()
            u, c = eps.chunk(2)
            x = x + (u + CFG_SCALE * (c - u)) * (nxt - sigma)
        s = time.perf_counter()
        img = vae.decode((x / vae.config.scaling_factor).to(dtype)).sample.float()
        sync()
        decode_ms.append((time.perf_counter() - s) * 1e3)
        state["non_finite"] |= not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(img).all()))
        state["std"] = float(img.std())

    for _ in range(a.warmup):
        one()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ms = []
    for _ in range(a.iters):
        s = time.perf_counter()
        one()
        sync()
        ms.append((time.perf_counter() - s) * 1e3)
    timed_decodes = decode_ms[a.warmup:]
    row = {"bench": "gen", "impl": "diffusers", "arch": a.arch, "size": a.size, "steps": a.steps,
           "device": a.device, "dtype": a.dtype, "median_ms": round(statistics.median(ms), 2),
           "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2), "n": len(ms),
           "samples_ms": [round(m, 2) for m in ms], "decode_median_ms": round(statistics.median(timed_decodes), 2),
           "build_ms": round(build_ms, 2), "unet_params": params, "non_finite": state["non_finite"],
           "image_std": state["std"], "torch": torch.__version__,
           "attention": type(unet.attn_processors[next(iter(unet.attn_processors))]).__name__}
    if cuda:
        row["torch_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        row["torch_peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["sd15", "sdxl", "tiny"], default="sd15")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--plan", action="store_true", help="print configs and sigmas only; needs no torch")
    a = p.parse_args(argv)
    if a.size <= 0 or a.size % 8 or a.steps <= 0 or a.iters <= 0 or a.warmup < 0:
        p.error("size must be a positive multiple of 8; steps and iters positive; warmup >= 0")
    if a.plan:
        print(json.dumps(plan(a)), flush=True)
        return 0
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    print(json.dumps(run(a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
