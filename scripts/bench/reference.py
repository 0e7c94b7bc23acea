#!/usr/bin/env python3
"""PyTorch/diffusers reference for the `bench` binary: the same shapes, random weights, CPU float32.

Modes mirror `bench` (handler/server/src/bench/main.rs); every output line is one JSON object with
the same `bench` names, so scripts/bench/compare.py can pair them:
    reference.py unet    [--latent 32] [--iters 5] [--warmup 1]
    reference.py ops     [--latent 32] [--iters 5]
    reference.py parts   [--latent 32] [--iters 3]       CLIP text encoder, VAE decode, VAE encode of (8*latent)^2
    reference.py txt2img [--size 256] [--steps 20] [--iters 3]
    reference.py lora    [--iters 3] [--lora-a A --lora-b B]  the LoRA files `bench lora` wrote
    reference.py load    [--checkpoint F]  one process: read the file once (warm), then safetensors'
                         load_file + .float() of every tensor (what a PyTorch f32 loader does at least)
Weights: torch's default init (Linear/Conv kaiming_uniform(a=sqrt 5) = U(+-1/sqrt fan_in)) with
biases zeroed, which is exactly the distribution `runner::bench` writes, so activations (and any
denormal slow paths) match. Attention is SDPA (diffusers' default AttnProcessor2_0).
Never a CI dependency: torch is installed by scripts/bench/setup-venv.sh only.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import time

import torch


def timed(fn, warmup: int, iters: int, sync=None) -> list[float]:
    """Milliseconds per call; `sync` (a device synchronisation) ends each timed call on a GPU."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def report(bench: str, ms: list[float], **extra) -> None:
    row = {"bench": bench, "median_ms": round(statistics.median(ms), 2), "min_ms": round(min(ms), 2),
           "max_ms": round(max(ms), 2), "n": len(ms), "impl": "torch", "samples_ms": [round(m, 2) for m in ms]}
    row.update(extra)
    print(json.dumps(row), flush=True)


def zero_biases(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
    return model.eval()


def unet_model():
    from diffusers import UNet2DConditionModel
    # diffusers' defaults are SD 1.x's UNet except the context width.
    return zero_biases(UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3))


def vae_model():
    from diffusers import AutoencoderKL
    return zero_biases(AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4))


def clip_model():
    from transformers import CLIPTextConfig, CLIPTextModel
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
    return zero_biases(CLIPTextModel(cfg))


def inp(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


@torch.inference_mode()
def bench_unet(a):
    unet = unet_model()
    n = sum(p.numel() for p in unet.parameters())
    x, ctx = inp(2, 4, a.latent, a.latent, seed=1), inp(2, 77, 768, seed=2)
    t = torch.tensor([500.0, 500.0])
    eps = unet(x, t, encoder_hidden_states=ctx).sample
    ms = timed(lambda: unet(x, t, encoder_hidden_states=ctx).sample, a.warmup, a.iters)
    report("unet_cfg_step", ms, arch="sd15", latent=a.latent, batch=2, params_m=round(n / 1e6, 2),
           eps_std=float(eps.std()))


@torch.inference_mode()
def bench_parts(a):
    clip, vae = clip_model(), vae_model()
    ids = torch.tensor([[49406] + [320 + i for i in range(1, 77)]] * 2)
    report("text_encode", timed(lambda: clip(ids).last_hidden_state, 1, a.iters), arch="sd15", batch=2)
    z = inp(1, 4, a.latent, a.latent, seed=3)

    def decode():
        img = vae.decode(z).sample[0]
        return ((img + 1) / 2).clamp(0, 1).mul(255).floor().to(torch.uint8).permute(1, 2, 0).numpy()
    report("vae_decode", timed(decode, 1, a.iters), arch="sd15", latent=a.latent)
    pixels = inp(1, 3, 8 * a.latent, 8 * a.latent, seed=5)
    # Posterior mean x scaling factor, what A1111's encode_first_stage gives for SD 1.x.
    report("vae_encode", timed(lambda: vae.encode(pixels).latent_dist.mean * 0.18215, 1, a.iters),
           arch="sd15", pixels=8 * a.latent)


@torch.inference_mode()
def bench_ops(a):
    import torch.nn.functional as F
    l1, l2, l3 = a.latent, a.latent // 2, a.latent // 4
    t1 = l1 * l1
    dev, dtype = torch.device(a.device), {"f32": torch.float32, "f16": torch.float16}[a.dtype]
    sync = torch.cuda.synchronize if dev.type == "cuda" else None

    def on(*shape, seed):
        return inp(*shape, seed=seed).to(dev, dtype)

    def conv(ch, hw):
        w, x = on(ch, ch, 3, 3, seed=11) / (ch * 9) ** 0.5, on(2, ch, hw, hw, seed=12)
        b = torch.zeros(ch, device=dev, dtype=dtype)
        return lambda: F.conv2d(x, w, b, padding=1)

    def gn(ch, hw):
        x = on(2, ch, hw, hw, seed=13)
        w, b = torch.ones(ch, device=dev, dtype=dtype), torch.zeros(ch, device=dev, dtype=dtype)
        return lambda: F.group_norm(x, 32, w, b, 1e-5)

    def lin(tok, cin, cout):
        w, x = on(cout, cin, seed=14) / cin ** 0.5, on(2, tok, cin, seed=15)
        return lambda: F.linear(x, w)

    def attn(tok, kv, width):
        heads, d = 8, width // 8
        q = on(2, tok, width, seed=16).view(2, tok, heads, d).transpose(1, 2)
        k = on(2, kv, width, seed=17).view(2, kv, heads, d).transpose(1, 2)
        v = on(2, kv, width, seed=18).view(2, kv, heads, d).transpose(1, 2)
        return lambda: F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, tok, width)

    for name, fn in [
        (f"conv3x3 320ch {l1}x{l1}", conv(320, l1)), (f"conv3x3 640ch {l2}x{l2}", conv(640, l2)),
        (f"conv3x3 1280ch {l3}x{l3}", conv(1280, l3)), (f"groupnorm 320ch {l1}x{l1}", gn(320, l1)),
        (f"linear {t1}x320->320", lin(t1, 320, 320)), (f"linear {t1}x320->2560 (geglu in)", lin(t1, 320, 2560)),
        (f"self-attn {t1} tok 320 wide", attn(t1, t1, 320)), (f"cross-attn {t1}x77 tok 320 wide", attn(t1, 77, 320)),
    ]:
        report("op", timed(fn, a.warmup, a.iters, sync), op=name, device=a.device, dtype=a.dtype)


@torch.inference_mode()
def bench_txt2img(a):
    """Text encode (cond + uncond) → 20 Euler a steps with CFG 7 → VAE decode → PNG → base64, the
    work `process_images` + the handler's encoder do (no tokenizer: ids are fixed)."""
    from diffusers import EulerAncestralDiscreteScheduler
    from PIL import Image
    unet, vae, clip = unet_model(), vae_model(), clip_model()
    sched = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            num_train_timesteps=1000, timestep_spacing="leading", steps_offset=1)
    ids = torch.tensor([[49406] + [320 + i for i in range(1, 77)]] * 2)
    lat = a.size // 8

    def run(seed):
        emb = clip(ids).last_hidden_state
        sched.set_timesteps(a.steps)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, 4, lat, lat, generator=g) * sched.init_noise_sigma
        for t in sched.timesteps:
            xin = sched.scale_model_input(torch.cat([x, x]), t)
            u, c = unet(xin, t, encoder_hidden_states=emb).sample.chunk(2)
            x = sched.step(u + 7.0 * (c - u), t, x, generator=g).prev_sample
        img = vae.decode(x / 0.18215).sample[0]
        px = ((img + 1) / 2).clamp(0, 1).mul(255).floor().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue())

    run(1)
    report("txt2img_total", timed(lambda: run(2), 0, a.iters), arch="sd15", size=a.size, steps=a.steps,
           sampler="Euler a")


def bench_lora(a):
    """A1111's LoRA merge (extensions-builtin/Lora, network_apply_weights) on weights of the listed
    shapes: read the file as f32 modules, then per targeted weight restore the backup and add
    `(up @ down).reshape(W) * (alpha / rank) * multiplier`. A switch does this for the other set."""
    from safetensors.torch import load_file
    targets = json.load(open(a.lora_a.removesuffix(".safetensors") + ".json"))
    weights = {t["key"]: torch.rand(t["shape"]) * 0.02 - 0.01 for t in targets}
    backups = {k: w.clone() for k, w in weights.items()}

    def read(path):
        sd = load_file(path)
        mods = {}
        for k, v in sd.items():
            key, _, part = k.partition(".")
            mods.setdefault(key, {})[part] = v.float()
        return mods

    report("lora_read", timed(lambda: read(a.lora_a), 0, a.iters), arch="sd15", modules=len(targets))
    sets = [read(a.lora_a), read(a.lora_b)]

    def apply(mods):
        with torch.no_grad():
            for key, w in weights.items():
                m = mods[key]
                up, down = m["lora_up.weight"], m["lora_down.weight"]
                rank = down.shape[0]
                updown = (up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)).reshape(w.shape)
                w.copy_(backups[key])
                w += updown * (m["alpha"].item() / rank) * 1.0

    i = iter(range(1 << 30))
    report("lora_switch", timed(lambda: apply(sets[next(i) % 2]), 1, a.iters), arch="sd15", modules=len(targets))


def read_once(path: str) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 << 20)
        while f.readinto(buf):
            pass


def bench_load(a):
    from safetensors.torch import load_file
    read_once(a.checkpoint)
    t0 = time.perf_counter()
    read_once(a.checkpoint)
    report("file_read", [(time.perf_counter() - t0) * 1e3], bytes=os.path.getsize(a.checkpoint))
    t0 = time.perf_counter()
    weights = {k: v.float() for k, v in load_file(a.checkpoint).items()}
    ms = (time.perf_counter() - t0) * 1e3
    report("checkpoint_load", [ms], bytes=os.path.getsize(a.checkpoint), tensors=len(weights))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["unet", "ops", "parts", "txt2img", "lora", "load"])
    p.add_argument("--checkpoint", default="/tmp/sdapi-bench-models/Stable-diffusion/bench-sd15.safetensors")
    p.add_argument("--lora-a", default="/tmp/sdapi-bench-models/Lora/bench-sd15-r32-a.safetensors")
    p.add_argument("--lora-b", default="/tmp/sdapi-bench-models/Lora/bench-sd15-r32-b.safetensors")
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu", help="ops only: cpu or cuda")
    p.add_argument("--dtype", choices=["f32", "f16"], default="f32", help="ops only")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count() or 1)))
    a = p.parse_args()
    # Same thread count as candle's rayon pool (RAYON_NUM_THREADS, else every CPU).
    torch.set_num_threads(a.threads)
    print(json.dumps({"bench": "env", "impl": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "sdpa": hasattr(torch.nn.functional, "scaled_dot_product_attention")}), flush=True)
    {"unet": bench_unet, "ops": bench_ops, "parts": bench_parts, "txt2img": bench_txt2img, "lora": bench_lora,
     "load": bench_load}[a.mode](a)


if __name__ == "__main__":
    main()
