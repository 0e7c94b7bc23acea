"""Train the bundled demo model: a tiny SD-1.x that draws coloured shapes from text.

    python scripts/demo-model/train.py --out samples/models/Stable-diffusion

Three stages, all on the CPU with fixed seeds:
1. the VAE, on crops of synthetic shape images, with one extra loss: A1111's "Approx cheap" live
   preview (a fixed 4 → 3 linear map of the scaled latent) must approximate the 8x8-averaged image
   at half contrast, so that `/sdapi/v1/progress` previews of this model are recognisable (full
   contrast would need latents of RMS ~2.5: the map's smallest singular value is 0.13);
2. the whole synthetic dataset encoded once into latents (`scale_factor` 0.18215, as SD-1.x);
3. the UNet and the CLIP text encoder together, epsilon prediction on SD-1.x's scaled-linear
   1000-step schedule (what the server samples with), with an EMA of the weights.
The result is one A1111-layout `.safetensors` plus the `.yaml` carrying what the tensors cannot
show (attention head counts). See samples/models/README.md for the exact command and hash.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import a1111_layout  # noqa: E402
import shapes  # noqa: E402
from text_encoder import ClipTextModel, Tokenizer  # noqa: E402

ROOT = HERE.parents[1]
VOCAB = ROOT / "tests/fixtures/a1111-parity/models/tiny-sd15-diffusers/tokenizer/vocab.json"

SCALE_FACTOR = 0.18215  # SD-1.x's latent scale; the server applies it for every SD-1.x model
IMAGE_SIZE = 128
# A1111's "Approx cheap" SD-1.x coefficients (latent channel → RGB), sd_vae_approx.py.
CHEAP_COEFS = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)
PREVIEW_CONTRAST = shapes.PREVIEW_CONTRAST
# Min-SNR-gamma loss weighting (Hang et al. 2023): faster convergence of the composition.
MIN_SNR_GAMMA = 5.0

# Sizes: of the order of the random tiny parity model, large enough to learn the shapes.
TEXT = dict(width=64, heads=4, hidden=128, layers=2)
UNET_HEADS = 4
UNET = dict(
    sample_size=IMAGE_SIZE // 8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=TEXT["width"],
    attention_head_dim=UNET_HEADS,  # diffusers' SD-1.x naming: this is the number of heads
    norm_num_groups=32,
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=IMAGE_SIZE,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_dataset(count: int, seed: int) -> tuple[torch.Tensor, list[tuple[str, str, str]]]:
    """`count` images (N, 3, 128, 128) and their (shape, colour, background)."""
    rng = np.random.default_rng(seed)
    images, attributes = [], []
    for _ in range(count):
        shape, colour, background = shapes.random_attributes(rng)
        image = shapes.draw_shape(IMAGE_SIZE, shape, colour, background, rng)
        images.append(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
        attributes.append((shape, colour, background))
    return torch.from_numpy(np.stack(images)), attributes


def cheap_preview(latent: torch.Tensor) -> torch.Tensor:
    """A1111's "Approx cheap" map of a scaled latent (B, 4, h, w) → (B, 3, h, w) in [-1, 1]."""
    return torch.einsum("blhw,lr->brhw", latent, CHEAP_COEFS)


def train_vae(images: torch.Tensor, steps: int, batch: int, crop: int, seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    cells = (IMAGE_SIZE - crop) // 8 + 1
    for step in range(steps):
        index = torch.randint(len(images), (batch,), generator=generator)
        # Crops on the 8-pixel grid keep each latent cell over one 8x8 block of pixels.
        oy, ox = (int(v) * 8 for v in torch.randint(cells, (2,), generator=generator))
        x = images[index, :, oy : oy + crop, ox : ox + crop]
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=generator)
        reconstruction = vae.decode(z).sample
        rec = F.mse_loss(reconstruction, x) + 0.5 * F.l1_loss(reconstruction, x)
        preview = F.mse_loss(cheap_preview(posterior.mean * SCALE_FACTOR), PREVIEW_CONTRAST * F.avg_pool2d(x, 8))
        kl = posterior.kl().mean() / (crop * crop)
        loss = rec + preview + 1e-4 * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} reconstruction {rec.item():.4f} preview {preview.item():.4f} kl {kl.item():.3f}")
    return vae.eval()


@torch.no_grad()
def encode(vae, images: torch.Tensor) -> torch.Tensor:
    latents = [vae.encode(images[i : i + 64]).latent_dist.mean for i in range(0, len(images), 64)]
    return torch.cat(latents) * SCALE_FACTOR


def sd1_betas() -> torch.Tensor:
    """SD-1.x's training schedule: betas linear in sqrt from 0.00085 to 0.012 over 1000 steps."""
    return torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2


def sd1_alphas_cumprod() -> torch.Tensor:
    return torch.cumprod(1.0 - sd1_betas(), dim=0)


class Ema:
    """Exponential moving average of a module's parameters: smoother weights to sample with."""

    def __init__(self, module: nn.Module):
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module, decay: float) -> None:
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.shadow[k].copy_(v)


def train_diffusion(latents: torch.Tensor, attributes, steps: int, batch: int, seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET)
    text = ClipTextModel(**TEXT)
    tokenizer = Tokenizer(VOCAB)
    parameters = list(unet.parameters()) + list(text.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=6e-4, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=6e-4, total_steps=steps, pct_start=0.05)
    ema_unet, ema_text = Ema(unet), Ema(text)
    alphas_cumprod = sd1_alphas_cumprod().float()
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.time()
    for step in range(steps):
        index = torch.randint(len(latents), (batch,), generator=generator)
        x0 = latents[index]
        ids = torch.tensor([tokenizer.ids(shapes.caption(*attributes[i], rng)) for i in index.tolist()])
        t = torch.randint(1000, (batch,), generator=generator)
        # Offset noise: a per-image constant added to the noise lets the model change an image's
        # mean colour from pure noise (the schedule leaves ~7% of the signal at t=999, which the
        # sampler never sees), which flat backgrounds depend on.
        noise = torch.randn(x0.shape, generator=generator)
        noise = noise + 0.1 * torch.randn((batch, 4, 1, 1), generator=generator)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        prediction = unet(noisy, t, encoder_hidden_states=text(ids)).sample
        snr = a / (1 - a)
        weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
        loss = (weight * (prediction - noise) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        schedule.step()
        # Warm-up of the average: early weights are noise and should not linger in it.
        decay = min(0.999, (1 + step) / (10 + step))
        ema_unet.update(unet, decay)
        ema_text.update(text, decay)
        if step % 100 == 0 or step == steps - 1:
            rate = (step + 1) / (time.time() - started)
            log(f"diffusion step {step}/{steps} loss {loss.item():.4f} ({rate:.2f} steps/s)")
    unet.load_state_dict(ema_unet.shadow)
    text.load_state_dict(ema_text.shadow)
    return unet.eval(), text.eval()


def schedule_buffers() -> dict[str, torch.Tensor]:
    """The LDM schedule buffers an SD-1.x checkpoint carries (A1111 reads `alphas_cumprod`)."""
    betas = sd1_betas()
    alphas_cumprod = sd1_alphas_cumprod()
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * previous.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - previous) * (1 - betas).sqrt() / (1 - alphas_cumprod),
    }
    return {k: v.float() for k, v in buffers.items()}


YAML = """\
# Model config of the demo checkpoint (trained by scripts/demo-model/train.py), in A1111's layout.
# The attention head counts cannot be read from the tensors.
model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "eps"
    scale_factor: {scale}
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        num_heads: {unet_heads}
        context_dim: {context}
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
      arch:
        hidden_size: {context}
        num_attention_heads: {text_heads}
"""


def save(unet, text, vae, out_dir: Path, name: str) -> Path:
    from safetensors.torch import save_file

    state = {}
    state.update(a1111_layout.unet_to_a1111(unet.state_dict(), UNET["layers_per_block"]))
    state.update(a1111_layout.vae_to_a1111(vae.state_dict(), len(VAE["block_out_channels"])))
    state.update(a1111_layout.clip_to_a1111(text.state_dict()))
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    state.update(schedule_buffers())
    state = {k: v.detach().contiguous() for k, v in state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    save_file(state, str(path))
    (out_dir / f"{name}.yaml").write_text(
        YAML.format(scale=SCALE_FACTOR, unet_heads=UNET_HEADS, context=TEXT["width"], text_heads=TEXT["heads"])
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "samples/models/Stable-diffusion")
    parser.add_argument("--name", default="demo-shapes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--images", type=int, default=6000, help="synthetic images in the dataset")
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--diffusion-steps", type=int, default=7000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    images, attributes = make_dataset(args.images, args.seed)
    log(f"dataset: {len(images)} images of {IMAGE_SIZE}x{IMAGE_SIZE}")
    vae = train_vae(images, args.vae_steps, batch=32, crop=32, seed=args.seed)
    latents = encode(vae, images)
    log(f"latents: {tuple(latents.shape)}, std {latents.std().item():.3f}, mean {latents.mean().item():.3f}")
    unet, text = train_diffusion(latents, attributes, args.diffusion_steps, args.batch, args.seed)
    path = save(unet, text, vae, args.out, args.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    size_mb = path.stat().st_size / 1e6
    log(f"wrote {path} ({size_mb:.1f} MB, sha256 {digest}) in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
