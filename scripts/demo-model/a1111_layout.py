"""Parameter names of diffusers' UNet and VAE rewritten into A1111's single-file (LDM) layout.

A1111 v1.10.1 loads SD-1.x checkpoints with the original LDM module names:
`model.diffusion_model.*` (UNet), `first_stage_model.*` (VAE) and
`cond_stage_model.transformer.text_model.*` (CLIP). The rules below follow the block structure of
diffusers' `UNet2DConditionModel` and `AutoencoderKL` for any number of levels and layers per block.
"""
from __future__ import annotations

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

# ResNet sublayers: diffusers name → LDM name.
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
# The VAE's mid-block attention: diffusers' linear layers are LDM's 1x1 convolutions.
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_part(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def unet_to_a1111(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """diffusers `UNet2DConditionModel` state dict → `model.diffusion_model.*`."""
    out = {}
    per_level = layers_per_block + 1
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("time_embedding.linear_1."):
            new = "time_embed.0." + parts[-1]
        elif key.startswith("time_embedding.linear_2."):
            new = "time_embed.2." + parts[-1]
        elif key.startswith("conv_in."):
            new = "input_blocks.0.0." + parts[-1]
        elif key.startswith("conv_norm_out."):
            new = "out.0." + parts[-1]
        elif key.startswith("conv_out."):
            new = "out.2." + parts[-1]
        elif parts[0] == "down_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":
                new = f"input_blocks.{per_level * (level + 1)}.0.op." + ".".join(parts[5:])
            else:
                index, rest = int(parts[3]), ".".join(parts[4:])
                block = per_level * level + index + 1
                if kind == "resnets":
                    new = f"input_blocks.{block}.0." + _rename_part(rest, UNET_RESNET)
                else:
                    new = f"input_blocks.{block}.1." + rest
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                new = f"middle_block.{2 * index}." + _rename_part(rest, UNET_RESNET)
            else:
                new = "middle_block.1." + rest
        elif parts[0] == "up_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":
                block = per_level * level + layers_per_block
                # The upsampler follows the resnet, and the attention when the level has one.
                has_attention = any(k.startswith(f"up_blocks.{level}.attentions.") for k in state)
                new = f"output_blocks.{block}.{2 if has_attention else 1}.conv." + parts[-1]
            else:
                index, rest = int(parts[3]), ".".join(parts[4:])
                block = per_level * level + index
                if kind == "resnets":
                    new = f"output_blocks.{block}.0." + _rename_part(rest, UNET_RESNET)
                else:
                    new = f"output_blocks.{block}.1." + rest
        else:
            raise KeyError(f"unexpected UNet parameter {key}")
        out[UNET_PREFIX + new] = value
    assert len(out) == len(state), "two UNet parameters mapped to one name"
    return out


def vae_to_a1111(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers `AutoencoderKL` state dict → `first_stage_model.*`."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        side = parts[0]
        if side in ("quant_conv", "post_quant_conv"):
            new = key
        elif parts[1] in ("conv_in", "conv_out"):
            new = key
        elif parts[1] == "conv_norm_out":
            new = f"{side}.norm_out." + parts[-1]
        elif parts[1] in ("down_blocks", "up_blocks"):
            level = int(parts[2])
            if parts[1] == "up_blocks":
                # diffusers counts decoder levels from the bottom up, LDM from the top down.
                level = levels - 1 - level
            group = "down" if parts[1] == "down_blocks" else "up"
            if parts[3] == "resnets":
                rest = _rename_part(".".join(parts[5:]), VAE_RESNET)
                new = f"{side}.{group}.{level}.block.{parts[4]}.{rest}"
            else:  # downsamplers.0.conv / upsamplers.0.conv
                name = "downsample" if group == "down" else "upsample"
                new = f"{side}.{group}.{level}.{name}.conv." + parts[-1]
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                rest = _rename_part(".".join(parts[4:]), VAE_RESNET)
                new = f"{side}.mid.block_{int(parts[3]) + 1}.{rest}"
            else:
                rest = _rename_part(".".join(parts[4:]), VAE_ATTENTION)
                new = f"{side}.mid.attn_1.{rest}"
                if value.dim() == 2:
                    value = value[:, :, None, None]
        else:
            raise KeyError(f"unexpected VAE parameter {key}")
        out[VAE_PREFIX + new] = value
    assert len(out) == len(state), "two VAE parameters mapped to one name"
    return out


def clip_to_a1111(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`text_model.*` names (ClipTextModel here) → `cond_stage_model.transformer.text_model.*`."""
    return {CLIP_PREFIX + k: v for k, v in state.items()}
