//! Opening checkpoints: A1111 single-file `.safetensors` (LDM names), diffusers folders and
//! separate VAE files, all exposed as one [`TensorStore`] under canonical LDM names.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::EngineError;
use crate::loader::diffusers_names::{self, CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX};
use crate::loader::tensor_store::{SafetensorsFile, StoredView, TensorStore};
use crate::loader::text_names::{
    self, SD2_OPEN_CLIP_FILE_PREFIX, SD2_TEXT_PREFIX, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX,
    SDXL_OPEN_CLIP_FILE_PREFIX, SDXL_REFINER_OPEN_CLIP_FILE_PREFIX, SDXL_TEXT_PROJECTION,
};
use crate::schedule::{self, BetaSchedule};
use crate::shipped_config::ShippedConfig;

pub use crate::config::{ModelFamily, PredictionType};

/// An opened checkpoint: its tensors and the facts read alongside them.
pub struct Checkpoint {
    pub store: TensorStore,
    pub family: ModelFamily,
    pub prediction: PredictionType,
    /// What the shipped configs say (heads, scale factor); gaps are filled by the family defaults.
    pub shipped: ShippedConfig,
    /// DDPM `alphas_cumprod` (1000 entries for SD), from the file or computed.
    pub alphas_cumprod: Vec<f32>,
}

const PICKLE_EXTENSIONS: [&str; 5] = ["ckpt", "pt", "pth", "bin", "pkl"];

/// Opens a single `.safetensors` checkpoint or a diffusers pipeline folder.
pub fn open_checkpoint(path: &Path) -> Result<Checkpoint, EngineError> {
    if path.is_dir() { open_diffusers_folder(path) } else { open_single_file(path) }
}

/// Refuses pickle files by extension or content. Content is judged by structure: a safetensors
/// file starts with an 8-byte little-endian header length followed by that many bytes of JSON,
/// so its first byte is arbitrary (a header length ending in 0x80 is common); only a file that
/// is not laid out that way is checked for torch's zip (`PK`) or raw pickle (0x80) magic.
fn reject_pickle(path: &Path) -> Result<(), EngineError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
        return Err(EngineError::PickleNotSupported(path.to_path_buf()));
    }
    let io = |source| EngineError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut head = Vec::with_capacity(9);
    (&mut file).take(9).read_to_end(&mut head).map_err(io)?;
    if looks_like_safetensors(&head, len) {
        return Ok(());
    }
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
        return Err(EngineError::PickleNotSupported(path.to_path_buf()));
    }
    Ok(())
}

/// `head`: the first bytes of a file of `len` bytes. True when they are a plausible safetensors
/// start: an 8-byte header length that fits in the file, then the JSON header's opening brace.
fn looks_like_safetensors(head: &[u8], len: u64) -> bool {
    match (head.get(..8).and_then(|n| <[u8; 8]>::try_from(n).ok()), head.get(8)) {
        (Some(n), Some(b'{')) => (2..=len.saturating_sub(8)).contains(&u64::from_le_bytes(n)),
        _ => false,
    }
}

fn open_safetensors(path: &Path) -> Result<SafetensorsFile, EngineError> {
    reject_pickle(path)?;
    SafetensorsFile::open(path)
}

/// Identifies the family from LDM / sgm single-file names.
fn single_file_family(names: &[String]) -> Result<ModelFamily, EngineError> {
    let any = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
    if any("conditioner.embedders.") {
        // SDXL base: CLIP-L then OpenCLIP-bigG; the refiner: OpenCLIP-bigG alone (A1111 tells
        // them apart the same way, by the first embedder).
        let base = any(SDXL_CLIP_L_PREFIX) && any(SDXL_OPEN_CLIP_FILE_PREFIX);
        let refiner = any(SDXL_REFINER_OPEN_CLIP_FILE_PREFIX) && !any(SDXL_CLIP_L_PREFIX);
        if (base || refiner) && any(UNET_PREFIX) {
            return Ok(ModelFamily::Sdxl);
        }
        return Err(EngineError::Unsupported(
            "sgm checkpoint with neither SDXL base's text encoders (CLIP-L, OpenCLIP-bigG) nor the refiner's (OpenCLIP-bigG)"
                .into(),
        ));
    }
    match (any(UNET_PREFIX), any(CLIP_PREFIX), any(SD2_OPEN_CLIP_FILE_PREFIX)) {
        (true, _, true) => Ok(ModelFamily::Sd2),
        (true, true, false) => Ok(ModelFamily::Sd1),
        (true, false, false) => Err(EngineError::UnknownLayout(
            "UNet found but no text encoder (cond_stage_model.transformer.text_model.* or cond_stage_model.model.*)"
                .into(),
        )),
        _ => Err(EngineError::UnknownLayout(
            "no UNet (model.diffusion_model.*): not a Stable Diffusion checkpoint (a LoRA, VAE or embedding?)".into(),
        )),
    }
}

/// Canonical names of a single file: everything as stored, except the OpenCLIP towers, which are
/// renamed to transformers naming with their fused `in_proj` split.
fn single_file_names(family: ModelFamily, shapes: &[(String, Vec<usize>)]) -> Vec<(String, String, StoredView)> {
    let open_clip = match family {
        ModelFamily::Sd1 => None,
        ModelFamily::Sd2 => Some((SD2_OPEN_CLIP_FILE_PREFIX, SD2_TEXT_PREFIX, None)),
        ModelFamily::Sdxl => {
            let refiner = shapes.iter().any(|(n, _)| n.starts_with(SDXL_REFINER_OPEN_CLIP_FILE_PREFIX));
            let file_prefix = if refiner { SDXL_REFINER_OPEN_CLIP_FILE_PREFIX } else { SDXL_OPEN_CLIP_FILE_PREFIX };
            Some((file_prefix, SDXL_CLIP_G_PREFIX, Some(SDXL_TEXT_PROJECTION)))
        }
    };
    let mut names: Vec<(String, String, StoredView)> = shapes
        .iter()
        .filter(|(n, _)| open_clip.is_none_or(|(file_prefix, _, _)| !n.starts_with(file_prefix)))
        .map(|(n, _)| (n.clone(), n.clone(), StoredView::Whole))
        .collect();
    if let Some((file_prefix, text_prefix, projection)) = open_clip {
        names.extend(text_names::open_clip_names(shapes, file_prefix, text_prefix, projection));
    }
    names
}

fn open_single_file(path: &Path) -> Result<Checkpoint, EngineError> {
    let file = open_safetensors(path)?;
    let shapes = file.tensor_shapes();
    let names: Vec<String> = shapes.iter().map(|(name, _)| name.clone()).collect();
    let family = single_file_family(&names)?;
    let mut store = TensorStore::new();
    store.add_file_views(file, single_file_names(family, &shapes));
    // SDXL files carry no DDPM buffers; every SD family was trained with the same schedule.
    let alphas_cumprod = match store.shape("alphas_cumprod") {
        Some(_) => {
            store.load("alphas_cumprod", candle_core::DType::F32, &candle_core::Device::Cpu)?.to_vec1::<f32>()?
        }
        None => schedule::alphas_cumprod(schedule::SD_BETAS, 1000),
    };
    let shipped = ShippedConfig::from_sidecar_yaml(path)?;
    Ok(Checkpoint {
        store,
        family,
        prediction: shipped.prediction.unwrap_or(PredictionType::Eps),
        shipped,
        alphas_cumprod,
    })
}

/// The weights file of a diffusers component folder (full precision preferred).
fn component_file(folder: &Path, component: &str, stem: &str) -> Result<PathBuf, EngineError> {
    let dir = folder.join(component);
    for name in [format!("{stem}.safetensors"), format!("{stem}.fp16.safetensors")] {
        if dir.join(&name).is_file() {
            return Ok(dir.join(name));
        }
    }
    if dir.join(format!("{stem}.bin")).is_file() {
        return Err(EngineError::PickleNotSupported(dir.join(format!("{stem}.bin"))));
    }
    Err(EngineError::UnknownLayout(format!(
        "diffusers folder {} has no {component}/{stem}.safetensors",
        folder.display()
    )))
}

fn open_diffusers_folder(folder: &Path) -> Result<Checkpoint, EngineError> {
    let unet = open_safetensors(&component_file(folder, "unet", "diffusion_pytorch_model")?)?;
    let vae = open_safetensors(&component_file(folder, "vae", "diffusion_pytorch_model")?)?;
    let clip = open_safetensors(&component_file(folder, "text_encoder", "model")?)?;
    let clip_g = if folder.join("text_encoder_2").is_dir() {
        Some(open_safetensors(&component_file(folder, "text_encoder_2", "model")?)?)
    } else {
        None
    };

    let unet_shapes = unet.tensor_shapes();
    let unet_names: Vec<String> = unet_shapes.iter().map(|(n, _)| n.clone()).collect();
    // SD 2.x UNets project in/out of their transformers with linear layers (2-D weights).
    let linear_proj = unet_shapes.iter().any(|(n, s)| n.ends_with(".proj_in.weight") && s.len() == 2);
    let family = match (&clip_g, linear_proj) {
        (Some(_), _) => ModelFamily::Sdxl,
        (None, true) => ModelFamily::Sd2,
        (None, false) => ModelFamily::Sd1,
    };
    if family != ModelFamily::Sdxl && unet_names.iter().any(|n| n.starts_with("add_embedding.")) {
        return Err(EngineError::UnknownLayout(format!(
            "{}: UNet with add_embedding but no text_encoder_2",
            folder.display()
        )));
    }
    let clip_prefix = match family {
        ModelFamily::Sd1 => CLIP_PREFIX,
        ModelFamily::Sd2 => SD2_TEXT_PREFIX,
        ModelFamily::Sdxl => SDXL_CLIP_L_PREFIX,
    };
    let clip_names = text_names::transformers_clip_names(&clip.tensor_shapes(), clip_prefix);
    let vae_stored: Vec<String> = vae.tensor_shapes().into_iter().map(|(n, _)| n).collect();

    let mut store = TensorStore::new();
    store.add_file(unet, diffusers_names::unet_names(&unet_names));
    store.add_file(vae, diffusers_names::vae_names(&vae_stored));
    store.add_file_views(clip, clip_names);
    if let Some(clip_g) = clip_g {
        let names = text_names::diffusers_clip_g_names(&clip_g.tensor_shapes());
        store.add_file_views(clip_g, names);
    }

    let scheduler = read_scheduler_config(&folder.join("scheduler").join("scheduler_config.json"))?;
    Ok(Checkpoint {
        store,
        family,
        prediction: scheduler.prediction,
        shipped: ShippedConfig::from_diffusers_folder(folder)?,
        alphas_cumprod: schedule::alphas_cumprod(scheduler.betas, scheduler.train_steps),
    })
}

struct SchedulerFacts {
    betas: BetaSchedule,
    train_steps: usize,
    prediction: PredictionType,
}

/// Reads the noise schedule from diffusers' `scheduler_config.json`; absent → SD defaults.
fn read_scheduler_config(path: &Path) -> Result<SchedulerFacts, EngineError> {
    let defaults = SchedulerFacts { betas: schedule::SD_BETAS, train_steps: 1000, prediction: PredictionType::Eps };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(defaults);
    };
    let bad = |message: String| EngineError::SchedulerConfig { path: path.to_path_buf(), message };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let num = |key: &str, default: f64| json.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
    let (start, end) = (num("beta_start", 0.00085), num("beta_end", 0.012));
    let betas = match json.get("beta_schedule").and_then(|v| v.as_str()).unwrap_or("scaled_linear") {
        "scaled_linear" => BetaSchedule::ScaledLinear { start, end },
        "linear" => BetaSchedule::Linear { start, end },
        other => return Err(bad(format!("unsupported beta_schedule {other:?}"))),
    };
    let prediction = match json.get("prediction_type").and_then(|v| v.as_str()).unwrap_or("epsilon") {
        "epsilon" => PredictionType::Eps,
        "v_prediction" => PredictionType::V,
        other => return Err(bad(format!("unsupported prediction_type {other:?}"))),
    };
    Ok(SchedulerFacts { betas, train_steps: num("num_train_timesteps", 1000.0) as usize, prediction })
}

/// Replaces the checkpoint's VAE by the one in `path` (a `.safetensors` with
/// `first_stage_model.`-prefixed, bare LDM `encoder.*`/`decoder.*` or diffusers names).
pub fn apply_vae_override(store: &mut TensorStore, path: &Path) -> Result<(), EngineError> {
    let file = open_safetensors(path)?;
    let names: Vec<String> = file.tensor_shapes().into_iter().map(|(n, _)| n).collect();
    let any = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
    let mapping: Vec<(String, String)> = if any(VAE_PREFIX) {
        names.iter().filter(|n| n.starts_with(VAE_PREFIX)).map(|n| (n.clone(), n.clone())).collect()
    } else if any("encoder.down.") || any("decoder.up.") {
        let parts = ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."];
        names
            .iter()
            .filter(|n| parts.iter().any(|p| n.starts_with(p)))
            .map(|n| (n.clone(), format!("{VAE_PREFIX}{n}")))
            .collect()
    } else if any("encoder.down_blocks.") || any("decoder.up_blocks.") {
        diffusers_names::vae_names(&names)
    } else {
        return Err(EngineError::UnknownLayout(format!("{}: no VAE encoder/decoder tensors", path.display())));
    };
    store.remove_prefix(VAE_PREFIX);
    store.add_file(file, mapping);
    Ok(())
}
