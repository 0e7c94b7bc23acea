//! LoRA-family networks (docs/a1111-behaviour.md §7.6): reading a file into per-module updates
//! (LoRA with optional CP mid, LoHa, LoKr, full diffs), and [`LoraPatch`], the weight patch that
//! adds `ΔW · scale · multiplier` to each targeted weight as the model loads — A1111's merge, in
//! float32.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use super::NetworkError;
use super::lora_names::LayerIndex;
use super::tensor_file::read_tensor_file;
use crate::checkpoint::ModelFamily;
use crate::loader::tensor_store::WeightPatch;

/// LoRA files above this size are refused (the largest real ones are a few GiB of full diffs).
pub const MAX_LORA_BYTES: u64 = 4 << 30;

/// One module's update.
#[derive(Debug, Clone)]
pub enum ModuleUpdate {
    /// `up @ down` (or the CP form with `mid`), times `scale` or `alpha / rank`.
    Lora { up: Tensor, down: Tensor, mid: Option<Tensor>, alpha: Option<f64>, scale: Option<f64> },
    /// LoHa: `(w1a @ w1b) ⊙ (w2a @ w2b)`, CP forms with `t1`/`t2`.
    Hada {
        w1a: Tensor,
        w1b: Tensor,
        w2a: Tensor,
        w2b: Tensor,
        t1: Option<Tensor>,
        t2: Option<Tensor>,
        alpha: Option<f64>,
    },
    /// LoKr: `kron(w1, w2)`, each factor whole or as a product.
    Lokr { w1: Factor, w2: Factor, alpha: Option<f64> },
    /// A full difference `diff` added as is.
    Full { diff: Tensor },
}

/// A LoKr factor: stored whole, as `a @ b`, or in CP form `t` with `a`, `b`.
#[derive(Debug, Clone)]
pub enum Factor {
    Whole(Tensor),
    Product { a: Tensor, b: Tensor, t: Option<Tensor> },
}

/// Which model part a module key of a diffusers/PEFT-layout file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    Unet,
    Text1,
    Text2,
}

/// A module key as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ModuleKey {
    /// kohya / A1111 (`lora_unet_…`, `lora_te_…`): resolved as A1111 does.
    Kohya(String),
    /// diffusers / PEFT (`unet.down_blocks.0….`): renamed to kohya's names for the model family.
    Diffusers(ComponentOrd, String),
}

/// `Component` with an order, so keys sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ComponentOrd(u8);

impl ComponentOrd {
    fn component(self) -> Component {
        match self.0 {
            0 => Component::Unet,
            1 => Component::Text1,
            _ => Component::Text2,
        }
    }
}

impl ModuleKey {
    /// The kohya name A1111's lookup starts from.
    fn kohya_name(&self, family: ModelFamily) -> String {
        match self {
            ModuleKey::Kohya(k) => k.clone(),
            ModuleKey::Diffusers(c, path) => {
                let prefix = match (c.component(), family) {
                    (Component::Unet, _) => "lora_unet_",
                    (Component::Text1, ModelFamily::Sdxl) => "lora_te1_",
                    (Component::Text1, _) => "lora_te_",
                    (Component::Text2, _) => "lora_te2_",
                };
                format!("{prefix}{}", path.replace('.', "_"))
            }
        }
    }
}

/// A LoRA-family file, read.
#[derive(Debug, Clone)]
pub struct LoraFile {
    pub path: PathBuf,
    modules: Vec<(ModuleKey, ModuleUpdate)>,
}

impl LoraFile {
    pub fn read(path: &Path) -> Result<Self, NetworkError> {
        let file = read_tensor_file(path, MAX_LORA_BYTES, None)?;
        let invalid = |message: String| NetworkError::Invalid { path: path.to_path_buf(), message };
        let mut groups: BTreeMap<ModuleKey, HashMap<String, Tensor>> = BTreeMap::new();
        for (name, tensor) in file.tensors {
            let (key, part) = split_key(&name);
            if let Some(key) = key {
                groups.entry(key).or_default().insert(part, tensor);
            }
        }
        let mut modules = Vec::with_capacity(groups.len());
        for (key, weights) in groups {
            let update = ModuleUpdate::from_weights(weights).map_err(|e| invalid(format!("{key:?}: {e}")))?;
            modules.push((key, update));
        }
        if modules.is_empty() {
            return Err(invalid("no LoRA, LoHa, LoKr or full-diff weights in it".into()));
        }
        Ok(Self { path: path.to_path_buf(), modules })
    }

    pub fn module_count(&self) -> usize {
        self.modules.len()
    }
}

/// A1111 splits a key at its first `.` into module and weight part; diffusers/PEFT layouts
/// (`unet.<module path>.lora_A.weight`, `.lora.down.weight`, `.lora_linear_layer.up.weight`) are
/// recognised by their component prefix and renamed to kohya's parts.
fn split_key(name: &str) -> (Option<ModuleKey>, String) {
    let components = [("unet.", 0u8), ("text_encoder.", 1), ("text_encoder_2.", 2)];
    for (prefix, c) in components {
        let Some(rest) = name.strip_prefix(prefix) else { continue };
        let parts = [
            (".lora_A.weight", "lora_down.weight"),
            (".lora_B.weight", "lora_up.weight"),
            (".lora.down.weight", "lora_down.weight"),
            (".lora.up.weight", "lora_up.weight"),
            (".lora_linear_layer.down.weight", "lora_down.weight"),
            (".lora_linear_layer.up.weight", "lora_up.weight"),
            (".alpha", "alpha"),
        ];
        for (suffix, part) in parts {
            if let Some(path) = rest.strip_suffix(suffix) {
                let path = path.trim_end_matches(".lora").to_string();
                return (Some(ModuleKey::Diffusers(ComponentOrd(c), path)), part.to_string());
            }
        }
    }
    match name.split_once('.') {
        // kohya's bundled embeddings (`bundle_emb.*`) are not modules.
        Some(("bundle_emb", _)) => (None, String::new()),
        Some((key, part)) => (Some(ModuleKey::Kohya(key.to_string())), part.to_string()),
        None => (None, String::new()),
    }
}

fn scalar(t: Option<&Tensor>) -> candle_core::Result<Option<f64>> {
    t.map(|t| t.to_dtype(DType::F64)?.flatten_all()?.get(0)?.to_scalar::<f64>()).transpose()
}

impl ModuleUpdate {
    /// A1111 tries the module types in order and takes the first that accepts the keys.
    fn from_weights(mut w: HashMap<String, Tensor>) -> Result<Self, String> {
        let f32 = |t: Tensor| t.to_dtype(DType::F32).map_err(|e| e.to_string());
        let alpha = scalar(w.get("alpha")).map_err(|e| e.to_string())?;
        if let (Some(up), Some(down)) = (w.remove("lora_up.weight"), w.remove("lora_down.weight")) {
            let mid = w.remove("lora_mid.weight").map(f32).transpose()?;
            let scale = scalar(w.get("scale")).map_err(|e| e.to_string())?;
            return Ok(ModuleUpdate::Lora { up: f32(up)?, down: f32(down)?, mid, alpha, scale });
        }
        if let (Some(b), Some(a)) = (w.remove("lora_B.weight"), w.remove("lora_A.weight")) {
            // A1111 renames A/B to down/up and drops the group's other keys (alpha included).
            return Ok(ModuleUpdate::Lora { up: f32(b)?, down: f32(a)?, mid: None, alpha: None, scale: None });
        }
        let hada = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"];
        if hada.iter().all(|k| w.contains_key(*k)) {
            let mut take = |k: &str| w.remove(k).map(f32).transpose();
            return Ok(ModuleUpdate::Hada {
                w1a: take("hada_w1_a")?.ok_or("hada_w1_a")?,
                w1b: take("hada_w1_b")?.ok_or("hada_w1_b")?,
                w2a: take("hada_w2_a")?.ok_or("hada_w2_a")?,
                w2b: take("hada_w2_b")?.ok_or("hada_w2_b")?,
                t1: take("hada_t1")?,
                t2: take("hada_t2")?,
                alpha,
            });
        }
        let has = |k: &str| w.contains_key(k);
        if (has("lokr_w1") || (has("lokr_w1_a") && has("lokr_w1_b")))
            && (has("lokr_w2") || (has("lokr_w2_a") && has("lokr_w2_b")))
        {
            let mut take = |k: &str| w.remove(k).map(f32).transpose();
            let mut factor = |whole: &str, a: &str, b: &str, t: Option<&str>| -> Result<Factor, String> {
                if let Some(x) = take(whole)? {
                    return Ok(Factor::Whole(x));
                }
                let (a, b) = (take(a)?.ok_or(a.to_string())?, take(b)?.ok_or(b.to_string())?);
                let t = match t {
                    Some(t) => take(t)?,
                    None => None,
                };
                Ok(Factor::Product { a, b, t })
            };
            let w1 = factor("lokr_w1", "lokr_w1_a", "lokr_w1_b", None)?;
            let w2 = factor("lokr_w2", "lokr_w2_a", "lokr_w2_b", Some("lokr_t2"))?;
            return Ok(ModuleUpdate::Lokr { w1, w2, alpha });
        }
        if let Some(diff) = w.remove("diff") {
            return Ok(ModuleUpdate::Full { diff: f32(diff)? });
        }
        let mut keys: Vec<&String> = w.keys().collect();
        keys.sort();
        Err(format!("no supported network type accepts the keys {keys:?} (IA3, norm, GLoRA and OFT are not supported)"))
    }

    /// The rank A1111 divides alpha by (`dim`), if the type has one.
    fn dim(&self) -> candle_core::Result<Option<usize>> {
        Ok(match self {
            ModuleUpdate::Lora { down, .. } => Some(down.dim(0)?),
            ModuleUpdate::Hada { w1b, .. } => Some(w1b.dim(0)?),
            ModuleUpdate::Lokr { w1, w2, .. } => match (w2, w1) {
                (Factor::Product { b, .. }, _) | (Factor::Whole(_), Factor::Product { b, .. }) => Some(b.dim(0)?),
                _ => None,
            },
            ModuleUpdate::Full { .. } => None,
        })
    }

    /// A1111's `calc_scale`: `scale` if stored, else `alpha / dim`, else 1.
    fn scale(&self) -> candle_core::Result<f64> {
        let (alpha, scale) = match self {
            ModuleUpdate::Lora { alpha, scale, .. } => (*alpha, *scale),
            ModuleUpdate::Hada { alpha, .. } | ModuleUpdate::Lokr { alpha, .. } => (*alpha, None),
            ModuleUpdate::Full { .. } => (None, None),
        };
        if let Some(s) = scale {
            return Ok(s);
        }
        Ok(match (alpha, self.dim()?) {
            (Some(a), Some(d)) if d > 0 => a / d as f64,
            _ => 1.0,
        })
    }

    /// `ΔW` before scale and multiplier, in the shape A1111 builds it (`output_shape`).
    fn raw_delta(&self, dyn_dim: Option<usize>) -> candle_core::Result<Tensor> {
        match self {
            ModuleUpdate::Lora { up, down, mid, .. } => {
                let (out, r) = (up.dim(0)?, down.dim(0)?);
                let up2 = up.reshape((out, up.elem_count() / out.max(1)))?;
                let down2 = down.reshape((r, down.elem_count() / r.max(1)))?;
                let mut shape = vec![out, down.dim(1)?];
                if let Some(mid) = mid {
                    shape.extend_from_slice(&mid.dims()[2..]);
                    return cp_product(mid, &up2, &down2)?.reshape(shape);
                }
                if down.rank() == 4 {
                    shape.extend_from_slice(&down.dims()[2..]);
                }
                let (up2, down2) = match dyn_dim {
                    Some(d) => {
                        let d = d.min(up2.dim(1)?).min(down2.dim(0)?);
                        (up2.narrow(1, 0, d)?, down2.narrow(0, 0, d)?)
                    }
                    None => (up2, down2),
                };
                up2.matmul(&down2)?.reshape(shape)
            }
            ModuleUpdate::Hada { w1a, w1b, w2a, w2b, t1, t2, .. } => {
                let half = |t: &Option<Tensor>, a: &Tensor, b: &Tensor| match t {
                    Some(t) => cp_product(t, a, b),
                    None => a.matmul(b),
                };
                half(t1, w1a, w1b)? * half(t2, w2a, w2b)?
            }
            ModuleUpdate::Lokr { w1, w2, .. } => {
                let w1 = w1.materialize()?;
                let w2 = w2.materialize()?;
                kron(&w1, &w2)
            }
            ModuleUpdate::Full { diff } => Ok(diff.clone()),
        }
    }

    /// The update added to a weight of `shape`: `ΔW·scale·multiplier` (two f32 products, as
    /// A1111), or None when its size does not fit the weight (A1111 logs and skips those).
    pub fn delta(
        &self,
        shape: &[usize],
        multiplier: f64,
        dyn_dim: Option<usize>,
    ) -> candle_core::Result<Option<Tensor>> {
        let raw = self.raw_delta(dyn_dim)?;
        if raw.elem_count() != shape.iter().product::<usize>() {
            return Ok(None);
        }
        let scaled = (raw.reshape(shape)? * self.scale()?)?;
        Ok(Some((scaled * multiplier)?))
    }

    /// `current + (ΔW·scale)·multiplier` in f32, with the same float32 roundings as
    /// [`Self::delta`] followed by an add; one pass over the weight on the CPU.
    pub fn merge_into(
        &self,
        current: &Tensor,
        multiplier: f64,
        dyn_dim: Option<usize>,
    ) -> candle_core::Result<Option<Tensor>> {
        let shape = current.dims().to_vec();
        let current = current.to_dtype(DType::F32)?;
        if !current.device().is_cpu() {
            let delta = self.delta(&shape, multiplier, dyn_dim)?;
            return delta.map(|d| &current + d.to_device(current.device())?).transpose();
        }
        let raw = self.raw_delta(dyn_dim)?;
        if raw.elem_count() != current.elem_count() {
            return Ok(None);
        }
        let (scale, multiplier) = (self.scale()? as f32, multiplier as f32);
        let raw = raw.flatten_all()?.to_dtype(DType::F32)?.contiguous()?;
        let base = current.flatten_all()?.contiguous()?;
        let merged: Vec<f32> = with_f32_slice(&base, |w| {
            with_f32_slice(&raw, |d| w.iter().zip(d).map(|(w, d)| w + (d * scale) * multiplier).collect())
        })??;
        Tensor::from_vec(merged, shape, current.device()).map(Some)
    }
}

/// Runs `f` over the f32 values of a contiguous CPU tensor.
fn with_f32_slice<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> T) -> candle_core::Result<T> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) => {
            let start = layout.start_offset();
            let slice = values
                .get(start..start + t.elem_count())
                .ok_or_else(|| candle_core::Error::Msg("tensor view outside its storage".into()))?;
            Ok(f(slice))
        }
        _ => candle_core::bail!("expected a contiguous f32 CPU tensor"),
    }
}

impl Factor {
    fn materialize(&self) -> candle_core::Result<Tensor> {
        match self {
            Factor::Whole(t) => Ok(t.clone()),
            Factor::Product { a, b, t: None } => a.matmul(b),
            // lyco's `make_weight_cp(t, a, b)` contracts t's first axis with a's first axis.
            Factor::Product { a, b, t: Some(t) } => cp_product(t, &a.t()?.contiguous()?, b),
        }
    }
}

/// `einsum('n m k l, i n, m j -> i j k l', t, a, b)` for `t` (n, m, k, l), `a` (i, n), `b` (m, j):
/// A1111's CP reconstruction (lyco `make_weight_cp` and LoRA's mid).
fn cp_product(t: &Tensor, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (n, m) = (t.dim(0)?, t.dim(1)?);
    let (k, l) = (t.dims().get(2).copied().unwrap_or(1), t.dims().get(3).copied().unwrap_or(1));
    let a = a.reshape((a.dim(0)?, n))?;
    let b = b.reshape((m, b.elem_count() / m.max(1)))?;
    let (i, j) = (a.dim(0)?, b.dim(1)?);
    let at = a.matmul(&t.reshape((n, m * k * l))?)?; // (i, m·k·l)
    let at = at.reshape((i, m, k * l))?.transpose(1, 2)?.contiguous()?.reshape((i * k * l, m))?;
    at.matmul(&b)?.reshape((i, k, l, j))?.permute((0, 3, 1, 2))?.contiguous()
}

/// `torch.kron` of a 2-D `a` with a 2-D or 4-D `b` (a gets unit kernel dims).
fn kron(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (p, q) = a.dims2()?;
    let bd = b.dims().to_vec();
    let (r, s) = (bd[0], bd.get(1).copied().unwrap_or(1));
    let tail: Vec<usize> = bd.iter().skip(2).copied().collect();
    let tail_n: usize = tail.iter().product();
    let a6 = a.reshape((p, 1, q, 1, 1))?;
    let b6 = b.reshape((1, r, 1, s, tail_n))?;
    let prod = a6.broadcast_mul(&b6)?; // (p, r, q, s, tail)
    let mut shape = vec![p * r, q * s];
    shape.extend(tail);
    prod.reshape(shape)
}

/// One network merged into the model: each targeted canonical weight with its update and
/// multiplier (te for text-encoder layers, unet for the rest).
pub struct LoraPatch {
    targets: HashMap<String, (ModuleUpdate, f64)>,
    dyn_dim: Option<usize>,
    name: String,
}

/// What resolving a network against a model found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraResolution {
    pub matched: usize,
    /// Keys that matched no layer (A1111 ignores them too).
    pub unmatched: Vec<String>,
    /// OpenCLIP attentions A1111 leaves alone because the network lacks one of q, k, v, out.
    pub incomplete_attention: Vec<String>,
}

impl LoraPatch {
    pub fn new(
        file: &LoraFile,
        family: ModelFamily,
        index: &LayerIndex,
        te: f64,
        unet: f64,
        dyn_dim: Option<usize>,
    ) -> (Self, LoraResolution) {
        let mut targets = HashMap::new();
        let mut report = LoraResolution::default();
        let mut fused: BTreeMap<String, Vec<(String, ModuleUpdate, f64)>> = BTreeMap::new();
        for (key, update) in &file.modules {
            let name = key.kohya_name(family);
            let Some((layer, target)) = index.resolve(&name) else {
                report.unmatched.push(name);
                continue;
            };
            // A1111's rule: text-encoder layers are those with "transformer" in the first 20 characters.
            let head: String = layer.chars().take(20).collect();
            let multiplier = if head.contains("transformer") { te } else { unet };
            match &target.fused_attention {
                Some(attention) => fused.entry(attention.clone()).or_default().push((
                    target.weight.clone(),
                    update.clone(),
                    multiplier,
                )),
                None => {
                    targets.insert(target.weight.clone(), (update.clone(), multiplier));
                }
            }
        }
        for (attention, parts) in fused {
            let has = |p: &str| parts.iter().any(|(w, _, _)| w.contains(&format!(".self_attn.{p}.")));
            if ["q_proj", "k_proj", "v_proj", "out_proj"].iter().all(|p| has(p)) {
                for (weight, update, multiplier) in parts {
                    targets.insert(weight, (update, multiplier));
                }
            } else {
                report.incomplete_attention.push(attention);
            }
        }
        report.matched = targets.len();
        let name = file.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        (Self { targets, dyn_dim, name }, report)
    }

    /// Canonical names of the weights this patch changes.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.targets.keys().map(String::as_str)
    }
}

impl WeightPatch for LoraPatch {
    fn delta(&self, name: &str, shape: &[usize]) -> candle_core::Result<Option<Tensor>> {
        let Some((update, multiplier)) = self.targets.get(name) else { return Ok(None) };
        let delta = update.delta(shape, *multiplier, self.dyn_dim)?;
        if delta.is_none() {
            tracing::warn!(lora = %self.name, weight = name, ?shape, "LoRA update does not fit the weight; skipped");
        }
        Ok(delta)
    }

    fn merge(&self, name: &str, shape: &[usize], current: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let Some((update, multiplier)) = self.targets.get(name) else { return Ok(None) };
        let merged = update.merge_into(current, *multiplier, self.dyn_dim)?;
        if merged.is_none() {
            tracing::warn!(lora = %self.name, weight = name, ?shape, "LoRA update does not fit the weight; skipped");
        }
        Ok(merged)
    }

    fn targets(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }
}
