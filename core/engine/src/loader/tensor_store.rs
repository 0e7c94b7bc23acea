//! Memory-mapped tensors under *canonical* names.
//!
//! Every model module asks for its weights by LDM (A1111 single-file) name and shape. A
//! `TensorStore` maps those canonical names onto whatever file and stored name holds the data
//! (a single checkpoint, a diffusers folder, a separate VAE file), so the modules never see the
//! on-disk layout. Tensors are read from the mmap on demand; nothing is copied up front.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::EngineError;

/// One opened `.safetensors` file.
pub struct SafetensorsFile {
    path: PathBuf,
    data: MmapedSafetensors,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        // Safety: the file is mapped read-only; like every mmap user we assume nobody truncates
        // the checkpoint while it is loaded.
        let data = unsafe { MmapedSafetensors::new(path) }
            .map_err(|e| EngineError::InvalidSafetensors { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(Self { path: path.to_path_buf(), data })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stored tensor names with their shapes.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.data.tensors().into_iter().map(|(name, view)| (name, view.shape().to_vec())).collect()
    }
}

/// How a canonical tensor is cut from its stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredView {
    /// The stored tensor as is.
    Whole,
    /// Rows `start..start + len` of dim 0 (q, k or v of OpenCLIP's fused `in_proj`); only those
    /// bytes are read from the mmap.
    Rows { start: usize, len: usize },
    /// The transpose of a 2-D tensor (diffusers' `text_projection` Linear weight vs OpenCLIP's
    /// `x @ P` matrix).
    Transposed,
}

struct Entry {
    file: usize,
    stored: String,
    shape: Vec<usize>,
    view: StoredView,
}

/// A change applied to weights as they are loaded: the hook for networks that patch a model's
/// weights (a LoRA adds its low-rank update to the layers it targets), on the text encoders and
/// the UNet alike, addressed by canonical (LDM) name.
pub trait WeightPatch: Send + Sync {
    /// The update to add to tensor `name` (of canonical `shape`), or `None` if this patch does not
    /// touch it. Returned on the CPU; any float dtype.
    fn delta(&self, name: &str, shape: &[usize]) -> candle_core::Result<Option<Tensor>>;

    /// `current` with this patch's update added, in f32 (A1111 merges network weights in float32
    /// before casting back), or None if it does not touch `name` — then nothing is converted.
    /// Patches that can add in one pass override this.
    fn merge(&self, name: &str, shape: &[usize], current: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match self.delta(name, shape)? {
            Some(delta) => {
                let delta = delta.to_dtype(DType::F32)?.to_device(current.device())?;
                Ok(Some((current.to_dtype(DType::F32)? + delta)?))
            }
            None => Ok(None),
        }
    }

    /// The canonical names this patch may change, when it knows them (lets the store merge them
    /// ahead, in parallel).
    fn targets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Unpatched tensors already read and converted, kept between loads of the same checkpoint so a
/// model rebuilt with other patches (another LoRA set) shares every weight the patches leave alone
/// and re-reads nothing. Valid for one checkpoint (and VAE), dtype and device.
#[derive(Clone, Default)]
pub struct ResidentWeights(Arc<std::sync::Mutex<HashMap<String, Tensor>>>);

impl ResidentWeights {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tensors of one or more files, addressed by canonical (LDM) name.
#[derive(Default)]
pub struct TensorStore {
    files: Vec<SafetensorsFile>,
    entries: HashMap<String, Entry>,
    patches: Vec<Arc<dyn WeightPatch>>,
    resident: Option<ResidentWeights>,
    /// Patched tensors merged ahead by [`TensorStore::premerge`].
    premerged: HashMap<String, Tensor>,
}

impl TensorStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `file`, exposing each `(stored, canonical)` pair of `names` under its canonical name.
    /// A later file wins over an earlier one for the same canonical name (used by VAE overrides).
    pub fn add_file(&mut self, file: SafetensorsFile, names: Vec<(String, String)>) {
        let views = names.into_iter().map(|(stored, canonical)| (stored, canonical, StoredView::Whole)).collect();
        self.add_file_views(file, views);
    }

    /// Like [`Self::add_file`], with a [`StoredView`] per name. Views that do not fit the stored
    /// shape (rows out of range, transposing a non-matrix) are skipped, so the tensor reads as
    /// missing rather than wrong.
    pub fn add_file_views(&mut self, file: SafetensorsFile, names: Vec<(String, String, StoredView)>) {
        let shapes: HashMap<String, Vec<usize>> = file.tensor_shapes().into_iter().collect();
        let index = self.files.len();
        for (stored, canonical, view) in names {
            let Some(stored_shape) = shapes.get(&stored) else {
                continue;
            };
            let shape = match view {
                StoredView::Whole => canonical_shape(&canonical, stored_shape),
                StoredView::Rows { start, len } => match stored_shape.split_first() {
                    Some((&rows, rest)) if start + len <= rows => {
                        std::iter::once(len).chain(rest.iter().copied()).collect()
                    }
                    _ => continue,
                },
                StoredView::Transposed => match stored_shape.as_slice() {
                    &[a, b] => vec![b, a],
                    _ => continue,
                },
            };
            self.entries.insert(canonical, Entry { file: index, stored, shape, view });
        }
        self.files.push(file);
    }

    /// Patches applied, in order, to every tensor read from now on.
    pub fn add_patch(&mut self, patch: Arc<dyn WeightPatch>) {
        self.patches.push(patch);
    }

    /// Reads unpatched tensors through `resident` (filled on first read, shared afterwards).
    pub fn use_resident(&mut self, resident: ResidentWeights) {
        self.resident = Some(resident);
    }

    /// Removes every canonical name starting with `prefix` (e.g. before a VAE override).
    pub fn remove_prefix(&mut self, prefix: &str) {
        self.entries.retain(|name, _| !name.starts_with(prefix));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Canonical shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Like [`Self::shape`] but a missing tensor is an error.
    pub fn require_shape(&self, name: &str) -> Result<&[usize], EngineError> {
        self.shape(name).ok_or_else(|| EngineError::MissingTensor(name.to_string()))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Merges every tensor the patches name ahead of the model build, spread over the CPU's
    /// threads (each merge is a matmul and a few element-wise passes over one weight).
    pub fn premerge(&mut self, dtype: DType, device: &Device) -> candle_core::Result<()> {
        let names: Vec<String> = self.patches.iter().flat_map(|p| p.targets()).collect();
        self.load_ahead(names, dtype, device, false)
    }

    /// Reads every tensor not read yet ahead of the model build, spread over the CPU's threads
    /// (conversion to `dtype` is most of a load's time). On other devices tensors are read as the
    /// model asks for them. A tensor that fails to read here is left for the model to ask for
    /// (and fail on, if it needs it): files may hold tensors no model reads.
    pub fn preload(&mut self, dtype: DType, device: &Device) -> candle_core::Result<()> {
        if !device.is_cpu() {
            return Ok(());
        }
        let names: Vec<String> = self.entries.keys().filter(|n| !self.premerged.contains_key(*n)).cloned().collect();
        self.load_ahead(names, dtype, device, true)
    }

    /// Reads `names` in parallel on the CPU into the premerged map; `best_effort` skips tensors
    /// that fail instead of failing.
    fn load_ahead(
        &mut self,
        mut names: Vec<String>,
        dtype: DType,
        device: &Device,
        best_effort: bool,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        names.sort();
        names.dedup();
        names.retain(|n| self.entries.contains_key(n));
        let read = |name: &String| match self.load(name, dtype, device) {
            Ok(t) => Ok(Some((name.clone(), t))),
            Err(_) if best_effort => Ok(None),
            Err(e) => Err(e),
        };
        let loaded: Vec<Option<(String, Tensor)>> = if device.is_cpu() {
            names.par_iter().map(read).collect::<candle_core::Result<_>>()?
        } else {
            names.iter().map(read).collect::<candle_core::Result<_>>()?
        };
        self.premerged.extend(loaded.into_iter().flatten());
        Ok(())
    }

    /// Reads one tensor (reshaped to its canonical shape, cast to `dtype`) onto `device`, with
    /// the patches merged in f32 (as A1111 merges network weights before casting back).
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        if let Some(t) = self.premerged.get(name)
            && t.dtype() == dtype
            && t.device().same_device(device)
        {
            return Ok(t.clone());
        }
        let entry =
            self.entries.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() })?;
        let base = match &self.resident {
            Some(resident) => {
                let cached = resident.0.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
                match cached {
                    Some(t) if t.dtype() == dtype && t.device().same_device(device) => t,
                    _ => {
                        let t = self.read_unpatched(name, entry, dtype, device)?;
                        resident.0.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), t.clone());
                        t
                    }
                }
            }
            None => self.read_unpatched(name, entry, dtype, device)?,
        };
        let mut merged: Option<Tensor> = None;
        for patch in &self.patches {
            if let Some(next) = patch.merge(name, &entry.shape, merged.as_ref().unwrap_or(&base))? {
                merged = Some(next);
            }
        }
        match merged {
            Some(t) => t.to_dtype(dtype),
            None => Ok(base),
        }
    }

    /// The stored tensor in its canonical shape, cast to `dtype`, without patches.
    fn read_unpatched(&self, name: &str, entry: &Entry, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let view = self.files[entry.file].data.get(&entry.stored)?;
        let stored_dtype = DType::try_from(view.dtype())?;
        let tensor = match entry.view {
            StoredView::Whole if stored_dtype == DType::F16 && dtype == DType::F32 && device.is_cpu() => {
                f16_to_f32(view.data(), view.shape())?
            }
            StoredView::Whole => view.load(device)?,
            StoredView::Transposed => view.load(device)?.t()?.contiguous()?,
            StoredView::Rows { start, len } => {
                let row_bytes: usize = view.shape().iter().skip(1).product::<usize>() * stored_dtype.size_in_bytes();
                let bytes = view
                    .data()
                    .get(start * row_bytes..(start + len) * row_bytes)
                    .ok_or_else(|| candle_core::Error::Msg(format!("rows {start}+{len} outside `{name}`")))?;
                Tensor::from_raw_buffer(bytes, stored_dtype, &entry.shape, device)?
            }
        };
        let tensor =
            if tensor.dims() == entry.shape.as_slice() { tensor } else { tensor.reshape(entry.shape.as_slice())? };
        let tensor = tensor.to_dtype(dtype)?;
        // The tensor is a copy now: let its file pages go from this process's resident set, so the
        // mapped f16 file and the converted weights are not resident together while a model loads.
        release_pages(view.data());
        Ok(tensor)
    }

    /// A `VarBuilder` reading from this store.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(StoreBackend(Arc::clone(self))), dtype, device.clone())
    }
}

/// An f16 tensor's bytes converted straight to an f32 CPU tensor (one pass, SIMD where the CPU
/// has F16C). candle's own path copies to an f16 tensor first.
fn f16_to_f32(bytes: &[u8], shape: &[usize]) -> candle_core::Result<Tensor> {
    use half::slice::HalfFloatSliceExt;
    let n: usize = shape.iter().product();
    if bytes.len() != 2 * n {
        candle_core::bail!("f16 tensor of {} bytes for shape {shape:?}", bytes.len());
    }
    // One buffer converted in one call (F16C). A chunked conversion into uninitialised capacity
    // was measured at twice the load time (docs/benchmarks.md), and transparent huge pages for
    // these buffers at four times (the VM compacts memory to find 2 MiB pages).
    let mut out = vec![0f32; n];
    // SAFETY (align_to): any two bytes are a valid f16; the aligned middle is used only when it
    // covers the whole slice.
    match unsafe { bytes.align_to::<half::f16>() } {
        ([], halves, []) => halves.convert_to_f32_slice(&mut out),
        _ => {
            let halves: Vec<half::f16> =
                bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect();
            halves.convert_to_f32_slice(&mut out);
        }
    }
    Tensor::from_vec(out, shape, &Device::Cpu)
}

/// Drops the pages of a read-only file mapping that cover `bytes` from the resident set
/// (`MADV_DONTNEED`). They stay in the page cache; touching them again faults them back in with
/// the same contents, since the mapping is private and never written.
fn release_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let start = bytes.as_ptr() as usize / page * page;
        let end = (bytes.as_ptr() as usize + bytes.len()).div_ceil(page) * page;
        if end > start {
            // SAFETY: `bytes` lies in a read-only private file mapping, which starts and ends on
            // page boundaries, so the rounded range stays inside it (it may take neighbouring
            // tensors' pages along: they fault back in the same way). Nothing in the mapping was
            // written, so discarding pages loses nothing and no reference observes a change.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// LDM checkpoints converted from diffusers sometimes hold the VAE mid-attention projections as
/// linear `[c, c]` matrices; canonically they are the 1x1 convolutions `[c, c, 1, 1]` of LDM.
fn canonical_shape(canonical: &str, stored: &[usize]) -> Vec<usize> {
    let is_vae_attn_proj = canonical.contains(".mid.attn_1.")
        && [".q.weight", ".k.weight", ".v.weight", ".proj_out.weight"].iter().any(|suffix| canonical.ends_with(suffix));
    if is_vae_attn_proj && stored.len() == 2 { vec![stored[0], stored[1], 1, 1] } else { stored.to_vec() }
}

struct StoreBackend(Arc<TensorStore>);

impl candle_nn::var_builder::SimpleBackend for StoreBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.0.load(name, dtype, dev)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("{}{name}", crate::error::SHAPE_MISMATCH_PREFIX),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}
