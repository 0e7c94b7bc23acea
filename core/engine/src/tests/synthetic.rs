//! Architecture inference on a checkpoint whose shapes differ from the fixture's: random weights
//! written with LDM names, loaded back through the normal loader.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::{
    AutoencoderKl, ClipActivation, ClipConfig, ClipTextModel, LoadedModel, UNetModel, UnetConfig, UnetHeads, VaeConfig,
};

fn unet_config() -> UnetConfig {
    // 3 levels, 2 res blocks each, attention at the first two levels only, depth 2 at level 1,
    // linear proj_in (SD 2 style), 64-channel model.
    UnetConfig {
        in_channels: 4,
        out_channels: 4,
        model_channels: 32,
        time_embed_dim: 128,
        channel_mult: vec![1, 2, 2],
        num_res_blocks: vec![2, 2, 2],
        transformer_depth: vec![1, 2, 0],
        transformer_depth_middle: 1,
        context_dim: 48,
        use_linear_proj: true,
        heads: UnetHeads::Count(8),
        adm_in_channels: None,
    }
}

fn clip_config() -> ClipConfig {
    ClipConfig {
        vocab_size: 1000,
        hidden_size: 48,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 96,
        max_positions: 77,
        activation: ClipActivation::QuickGelu,
        layer_norm_eps: 1e-5,
    }
}

fn vae_config() -> VaeConfig {
    VaeConfig {
        in_channels: 3,
        out_channels: 3,
        ch: 32,
        ch_mult: vec![1, 2],
        num_res_blocks: 2,
        z_channels: 4,
        embed_dim: 4,
        scale_factor: 0.18215,
    }
}

#[test]
fn sizes_are_inferred_from_tensors_and_the_model_runs() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    // Building the modules on a VarMap creates every tensor with its LDM name and shape.
    UNetModel::new(unet_config(), vb.pp("model.diffusion_model")).unwrap();
    ClipTextModel::new(clip_config(), vb.pp("cond_stage_model.transformer.text_model")).unwrap();
    AutoencoderKl::new(vae_config(), vb.pp("first_stage_model")).unwrap();
    let dir = std::env::temp_dir().join(format!("sdapi-engine-synthetic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("synthetic.safetensors");
    vm.save(&path).unwrap();
    // What the tensors cannot show: the 48-wide text encoder's 4 heads.
    std::fs::write(
        path.with_extension("yaml"),
        "model:\n  params:\n    cond_stage_config:\n      arch:\n        num_attention_heads: 4\n",
    )
    .unwrap();

    let m = LoadedModel::load(&path, None, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(m.unet.config(), &unet_config());
    assert_eq!(m.clip().config(), &clip_config());
    assert_eq!(m.vae.config(), &vae_config());
    // No DDPM buffer in the file: the SD schedule is computed.
    assert_eq!(m.alphas_cumprod.len(), 1000);

    // 10x10 latent: levels at 10, 5 and 3 pixels, so upsampling must target the skip sizes.
    let x = Tensor::randn(0f32, 1.0, (2, 4, 10, 10), &Device::Cpu).unwrap();
    let t = Tensor::new(&[999.0f32, 0.5], &Device::Cpu).unwrap();
    let context = Tensor::randn(0f32, 1.0, (2, 77, 48), &Device::Cpu).unwrap();
    let eps = m.unet.forward(&x, &t, &context).unwrap();
    assert_eq!(eps.dims(), &[2, 4, 10, 10]);

    let ids = Tensor::new(&[[5u32; 77]], &Device::Cpu).unwrap();
    assert_eq!(m.clip().forward(&ids, 1).unwrap().dims(), &[1, 77, 48]);
    let image = m.vae.decode(&x.narrow(0, 0, 1).unwrap()).unwrap();
    assert_eq!(image.dims(), &[1, 3, 20, 20]);
    assert_eq!(m.vae.encode(&image).unwrap().dims(), &[1, 4, 10, 10]);
}
