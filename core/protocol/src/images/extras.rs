//! The extras tab's upscale step (`scripts/postprocessing_upscale.py`, run by the
//! `/extra-single-image` and `/extra-batch-images` routes): scale by a factor or to a size, with
//! the built-in upscalers, an optional centred crop, and a second upscaler blended in.

use serde_json::{Map, Value};

use super::pil_resize::Raster;
use super::upscale::{BuiltinUpscaler, pil_blend};
use crate::api::errors::ApiError;
use crate::infotext::writer::params_line;

/// The upscale arguments of A1111's `run_extras`.
#[derive(Debug, Clone)]
pub struct ExtrasUpscale {
    /// 0: by `upscale_by`; 1: to `to_width` × `to_height`.
    pub mode: i64,
    pub upscale_by: f64,
    pub to_width: usize,
    pub to_height: usize,
    pub crop: bool,
    pub upscaler_1: Option<ExtrasUpscaler>,
    pub upscaler_2: Option<ExtrasUpscaler>,
    pub upscaler_2_visibility: f64,
}

/// An upscaler the extras can use: built in, or a model file the caller runs (by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtrasUpscaler {
    Builtin(BuiltinUpscaler),
    Model(String),
}

impl ExtrasUpscaler {
    fn name(&self) -> &str {
        match self {
            ExtrasUpscaler::Builtin(b) => b.name(),
            ExtrasUpscaler::Model(n) => n,
        }
    }
}

/// Runs a model upscaler's `Upscaler.upscale(img, scale)`: (name, image, scale).
pub type ModelUpscale<'a> = dyn FnMut(&str, &Raster, f64) -> Result<Raster, ApiError> + 'a;

/// `upscaler_N_name`: "None" is no upscaler; built-in names, then model names (`is_model`); an
/// unknown name is A1111's AssertionError.
pub fn resolve_upscaler(name: &str, is_model: impl Fn(&str) -> bool) -> Result<Option<ExtrasUpscaler>, ApiError> {
    if name == "None" {
        return Ok(None);
    }
    match BuiltinUpscaler::from_name(name) {
        Some(b) => Ok(Some(ExtrasUpscaler::Builtin(b))),
        None if is_model(name) => Ok(Some(ExtrasUpscaler::Model(name.to_string()))),
        None => Err(ApiError::assertion(format!("could not find upscaler named {name}"))),
    }
}

impl ExtrasUpscale {
    /// The output size before any crop, to bound the work before it is done.
    pub fn output_size(&self, width: usize, height: usize) -> (usize, usize) {
        let by = self.scale_for(width, height);
        if self.upscaler_1.is_none() {
            return (width, height);
        }
        let up = (((width as f64 * by) / 8.0).floor() as usize * 8, ((height as f64 * by) / 8.0).floor() as usize * 8);
        if self.mode == 1 && self.crop { (self.to_width, self.to_height) } else { up }
    }

    fn scale_for(&self, width: usize, height: usize) -> f64 {
        if self.mode == 1 {
            (self.to_width as f64 / width.max(1) as f64).max(self.to_height as f64 / height.max(1) as f64)
        } else {
            self.upscale_by
        }
    }

    /// `ScriptPostprocessingUpscale.upscale` with one upscaler; records its info keys.
    fn upscale_one(
        &self,
        img: &Raster,
        upscaler: &ExtrasUpscaler,
        model: &mut ModelUpscale<'_>,
        info: &mut Map<String, Value>,
    ) -> Result<Raster, ApiError> {
        let by = self.scale_for(img.width, img.height);
        if self.mode == 1 {
            info.insert(
                "Postprocess upscale to".into(),
                Value::String(format!("{}x{}", self.to_width, self.to_height)),
            );
        } else {
            info.insert("Postprocess upscale by".into(), Value::from(self.upscale_by));
        }
        let up = match upscaler {
            ExtrasUpscaler::Builtin(b) => b.upscale(img, by),
            ExtrasUpscaler::Model(name) => model(name, img, by)?,
        };
        if self.mode == 1 && self.crop {
            // `Image.new("RGB", size)` and a centred paste: the crop is always RGB on black.
            let mut out = Raster::blank(self.to_width, self.to_height, 3);
            let x0 = (self.to_width / 2) as i64 - (up.width / 2) as i64;
            let y0 = (self.to_height / 2) as i64 - (up.height / 2) as i64;
            for y in 0..up.height {
                for x in 0..up.width {
                    let (dx, dy) = (x as i64 + x0, y as i64 + y0);
                    if dx >= 0 && dy >= 0 && (dx as usize) < out.width && (dy as usize) < out.height {
                        let src = (y * up.width + x) * up.channels;
                        let dst = (dy as usize * out.width + dx as usize) * 3;
                        out.data[dst..dst + 3].copy_from_slice(&up.data[src..src + 3]);
                    }
                }
            }
            info.insert("Postprocess crop to".into(), Value::String(format!("{}x{}", out.width, out.height)));
            return Ok(out);
        }
        Ok(up)
    }

    /// Runs the step on one image: the new image and its `postprocessing` infotext.
    pub fn run(&self, img: &Raster, model: &mut ModelUpscale<'_>) -> Result<(Raster, String), ApiError> {
        let mut info = Map::new();
        let Some(first) = &self.upscaler_1 else {
            return Ok((img.clone(), String::new()));
        };
        let mut out = self.upscale_one(img, first, model, &mut info)?;
        info.insert("Postprocess upscaler".into(), Value::String(first.name().to_string()));
        if let Some(second) = self.upscaler_2.as_ref().filter(|_| self.upscaler_2_visibility > 0.0) {
            let other = self.upscale_one(img, second, model, &mut info)?.with_channels(out.channels);
            out = pil_blend(&out, &other, self.upscaler_2_visibility as f32);
            info.insert("Postprocess upscaler 2".into(), Value::String(second.name().to_string()));
        }
        Ok((out, params_line(&info)))
    }
}

/// `ui_common.plaintext_to_html`: lines HTML-escaped (quotes too) and joined by `<br>\n` in a `<p>`.
pub fn plaintext_to_html(text: &str) -> String {
    let escape = |line: &str| {
        line.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#x27;")
    };
    format!("<p>{}</p>", text.split('\n').map(escape).collect::<Vec<_>>().join("<br>\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(w: usize, h: usize) -> Raster {
        Raster { width: w, height: h, channels: 3, data: (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect() }
    }

    fn params(mode: i64, first: Option<BuiltinUpscaler>) -> ExtrasUpscale {
        ExtrasUpscale {
            mode,
            upscale_by: 2.0,
            to_width: 128,
            to_height: 100,
            crop: true,
            upscaler_1: first.map(ExtrasUpscaler::Builtin),
            upscaler_2: None,
            upscaler_2_visibility: 0.0,
        }
    }

    #[test]
    fn scale_by_and_scale_to_with_crop() {
        let mut no_models = |_: &str, _: &Raster, _: f64| -> Result<Raster, ApiError> { unreachable!() };
        let (out, info) = params(0, Some(BuiltinUpscaler::Lanczos)).run(&raster(64, 64), &mut no_models).unwrap();
        assert_eq!(out.dimensions(), (128, 128));
        assert_eq!(info, "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos");
        let (out, info) = params(1, Some(BuiltinUpscaler::Nearest)).run(&raster(64, 64), &mut no_models).unwrap();
        assert_eq!(out.dimensions(), (128, 100));
        assert_eq!(
            info,
            "Postprocess upscale to: 128x100, Postprocess crop to: 128x100, Postprocess upscaler: Nearest"
        );
        let (out, info) = params(0, None).run(&raster(10, 10), &mut no_models).unwrap();
        assert_eq!((out.dimensions(), info.as_str()), ((10, 10), ""));
    }

    #[test]
    fn names_and_html() {
        let models = |n: &str| n == "4x-Custom";
        assert_eq!(resolve_upscaler("None", models).unwrap(), None);
        assert_eq!(
            resolve_upscaler("Lanczos", models).unwrap(),
            Some(ExtrasUpscaler::Builtin(BuiltinUpscaler::Lanczos))
        );
        assert_eq!(resolve_upscaler("4x-Custom", models).unwrap(), Some(ExtrasUpscaler::Model("4x-Custom".into())));
        let err = resolve_upscaler("ESRGAN_4x", models).unwrap_err();
        assert_eq!(
            (err.error.as_str(), err.errors.as_str()),
            ("AssertionError", "could not find upscaler named ESRGAN_4x")
        );
        assert_eq!(plaintext_to_html("a: \"x\" <b>\nc"), "<p>a: &quot;x&quot; &lt;b&gt;<br>\nc</p>");
    }
}
