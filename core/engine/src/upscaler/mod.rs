//! Model upscalers (A1111's ESRGAN and Real-ESRGAN upscalers, which load through spandrel):
//! RRDBNet and the compact SRVGG network, read from `.safetensors` or through the checked pickle
//! reader, run as A1111's `upscale_with_model` runs them: the image cut into overlapping tiles
//! (`ESRGAN_tile`, `ESRGAN_tile_overlap`), each tile fed as BGR in [0, 1], the output clamped,
//! scaled to 0..=255 and rounded half to even, the tiles combined with A1111's blended grid.

mod esrgan;
mod srvgg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sdapi_protocol::images::Raster;
use sdapi_protocol::images::grid::{Grid, combine_grid, split_grid};

pub use esrgan::RrdbNet;
pub use srvgg::SrvggNet;

use crate::networks::tensor_file::read_tensor_file;

/// Largest upscaler file read (RRDBNet x4 is 64 MB; the largest community models ~ 200 MB).
pub const MAX_UPSCALER_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum UpscalerError {
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("upscaling failed: {0}")]
    Run(#[from] candle_core::Error),
}

enum Architecture {
    Rrdb(Box<RrdbNet>),
    Srvgg(SrvggNet),
}

/// A loaded model upscaler.
pub struct UpscaleModel {
    arch: Architecture,
    device: Device,
}

/// Unwraps BasicSR's `params_ema` / `params` wrapper keys.
fn unwrap_params(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    for prefix in ["params_ema.", "params."] {
        if tensors.keys().any(|k| k.starts_with(prefix)) {
            return tensors
                .into_iter()
                .filter_map(|(k, t)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), t)))
                .collect();
        }
    }
    tensors
}

impl UpscaleModel {
    pub fn load(path: &Path, device: &Device) -> Result<Self, UpscalerError> {
        let load_err = |message: String| UpscalerError::Load { path: path.to_path_buf(), message };
        let mut tensors = HashMap::new();
        // A BasicSR checkpoint keeps its weights under `params_ema` (or `params`).
        for key in [None, Some("params_ema"), Some("params")] {
            let file = read_tensor_file(path, MAX_UPSCALER_BYTES, key).map_err(|e| load_err(e.to_string()))?;
            tensors = unwrap_params(file.tensors.into_iter().collect());
            if RrdbNet::matches(&tensors) || SrvggNet::matches(&tensors) {
                break;
            }
        }
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?.to_device(device)?)))
            .collect::<candle_core::Result<_>>()?;
        let arch = if RrdbNet::matches(&tensors) {
            Architecture::Rrdb(Box::new(RrdbNet::from_tensors(tensors).map_err(|e| load_err(e.to_string()))?))
        } else if SrvggNet::matches(&tensors) {
            Architecture::Srvgg(SrvggNet::from_tensors(tensors).map_err(|e| load_err(e.to_string()))?)
        } else {
            return Err(load_err("not an ESRGAN (RRDBNet) or compact Real-ESRGAN (SRVGG) model".into()));
        };
        Ok(Self { arch, device: device.clone() })
    }

    /// The model's own scale.
    pub fn scale(&self) -> usize {
        match &self.arch {
            Architecture::Rrdb(m) => m.scale,
            Architecture::Srvgg(m) => m.scale,
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.arch {
            Architecture::Rrdb(m) => m.forward(x),
            Architecture::Srvgg(m) => m.forward(x),
        }
    }

    /// `upscale_pil_patch`: one RGB tile through the model.
    pub fn upscale_patch(&self, tile: &Raster) -> Result<Raster, UpscalerError> {
        let (w, h) = (tile.width, tile.height);
        // HWC RGB → CHW BGR in [0, 1] (divided in f64 as numpy does, then f32).
        let mut data = vec![0f32; 3 * w * h];
        for (i, px) in tile.data.chunks_exact(tile.channels).enumerate() {
            for c in 0..3 {
                data[c * w * h + i] = (f64::from(px[2 - c]) / 255.0) as f32;
            }
        }
        let x = Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu)?.to_device(&self.device)?;
        let y = self.forward(&x)?.to_device(&Device::Cpu)?;
        let (_, _, oh, ow) = y.dims4()?;
        let values: Vec<f32> = y.flatten_all()?.to_vec1()?;
        let mut out = vec![0u8; ow * oh * 3];
        for c in 0..3 {
            for i in 0..ow * oh {
                let v = 255.0 * values[c * ow * oh + i].clamp(0.0, 1.0);
                out[i * 3 + (2 - c)] = v.round_ties_even() as u8;
            }
        }
        Ok(Raster { width: ow, height: oh, channels: 3, data: out })
    }

    /// `upscale_with_model`: tiled when `tile` > 0 (A1111's split/combine grid), else whole.
    pub fn upscale_tiled(&self, img: &Raster, tile: usize, overlap: usize) -> Result<Raster, UpscalerError> {
        let rgb = img.with_channels(3);
        if tile == 0 {
            return self.upscale_patch(&rgb);
        }
        let grid = split_grid(&rgb, tile, tile, overlap);
        let mut scale = 1usize;
        let mut tiles = Vec::with_capacity(grid.tiles.len());
        for (y, h, row) in &grid.tiles {
            let mut new_row = Vec::with_capacity(row.len());
            for (x, w, tile_px) in row {
                let out = self.upscale_patch(tile_px)?;
                scale = out.width / tile_px.width.max(1);
                new_row.push((x * scale as i64, w * scale, out));
            }
            tiles.push((y * scale as i64, h * scale, new_row));
        }
        Ok(combine_grid(&Grid {
            tiles,
            tile_w: grid.tile_w * scale,
            tile_h: grid.tile_h * scale,
            image_w: grid.image_w * scale,
            image_h: grid.image_h * scale,
            overlap: grid.overlap * scale,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny RRDBNet in the original ESRGAN key layout (A1111's `model.N…` names).
    pub(crate) fn tiny_esrgan(nf: usize, gc: usize) -> HashMap<String, Tensor> {
        let mut t = HashMap::new();
        let mut seed = 1u64;
        let mut put = |name: String, shape: &[usize]| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.2
                })
                .collect();
            t.insert(name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
        };
        let mut conv = |name: &str, o: usize, i: usize| {
            put(format!("{name}.weight"), &[o, i, 3, 3]);
            put(format!("{name}.bias"), &[o]);
        };
        conv("model.0", nf, 3);
        for k in 1..=3 {
            for j in 1..=5 {
                let (i, o) = (nf + (j - 1) * gc, if j == 5 { nf } else { gc });
                conv(&format!("model.1.sub.0.RDB{k}.conv{j}.0"), o, i);
            }
        }
        conv("model.1.sub.1", nf, nf);
        conv("model.3", nf, nf);
        conv("model.6", nf, nf);
        conv("model.8", nf, nf);
        conv("model.10", 3, nf);
        t
    }

    #[test]
    fn esrgan_layouts_load_and_upscale_four_times() {
        let net = RrdbNet::from_tensors(tiny_esrgan(8, 4)).unwrap();
        assert_eq!(net.scale, 4);
        let x = Tensor::full(0.5f32, (1, 3, 6, 5), &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x).unwrap().dims4().unwrap(), (1, 3, 24, 20));
    }

    /// With zero weights the compact network is its nearest-upsampled input (the base it adds).
    #[test]
    fn srvgg_reads_its_scale_and_adds_the_upsampled_input() {
        let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        let mut t = HashMap::new();
        t.insert("body.0.weight".to_string(), zeros(&[4, 3, 3, 3]));
        t.insert("body.0.bias".to_string(), zeros(&[4]));
        t.insert("body.1.weight".to_string(), zeros(&[4]));
        t.insert("body.2.weight".to_string(), zeros(&[4, 4, 3, 3]));
        t.insert("body.2.bias".to_string(), zeros(&[4]));
        t.insert("body.3.weight".to_string(), zeros(&[4]));
        t.insert("body.4.weight".to_string(), zeros(&[48, 4, 3, 3]));
        t.insert("body.4.bias".to_string(), zeros(&[48]));
        assert!(SrvggNet::matches(&t) && !RrdbNet::matches(&t));
        let net = SrvggNet::from_tensors(t).unwrap();
        assert_eq!(net.scale, 4);
        let x = Tensor::arange(0f32, 3.0 * 2.0 * 3.0, &Device::Cpu).unwrap().reshape((1, 3, 2, 3)).unwrap();
        let y = net.forward(&x).unwrap();
        let want = x.upsample_nearest2d(8, 12).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn pixel_unshuffle_inverts_pixel_shuffle() {
        let x = Tensor::arange(0f32, 48.0, &Device::Cpu).unwrap().reshape((1, 3, 4, 4)).unwrap();
        let y = esrgan::pixel_unshuffle(&x, 2).unwrap();
        assert_eq!(y.dims4().unwrap(), (1, 12, 2, 2));
        // channel c·4 + i·2 + j holds x[c, 2h + i, 2w + j]
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v[(4 + 3) * 4 + 1], 16.0 + 4.0 + 3.0, "c=1, i=1, j=1, h=0, w=1 → x[1, 1, 3]");
    }
}
