//! The hires fix's upscale step against A1111's intermediates (the fixtures'
//! `intermediates.safetensors`): Pillow's Lanczos through A1111's upscaler loop must give A1111's
//! pixels exactly, and the latent modes PyTorch's interpolation to float precision.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sdapi_engine::latent_upscale::interpolate;
use sdapi_protocol::choices::LatentUpscaleMode;
use sdapi_protocol::images::{BuiltinUpscaler, resize_with_upscaler};

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity-features/cases").join(name)
}

fn intermediates(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(case(name).join("intermediates.safetensors"), &Device::Cpu).expect("intermediates")
}

fn rgb(t: &Tensor) -> image::RgbImage {
    let (h, w, _) = t.dims3().unwrap();
    image::RgbImage::from_raw(w as u32, h as u32, t.flatten_all().unwrap().to_vec1::<u8>().unwrap()).unwrap()
}

#[test]
fn lanczos_upscaler_gives_a1111_pixels_exactly() {
    let t = intermediates("hr_lanczos_x1p5_euler");
    let first = rgb(&t["hr_firstpass_uint8"]);
    let want = rgb(&t["hr_upscaled_uint8"]);
    let got = resize_with_upscaler(&first, want.width(), want.height(), Some(BuiltinUpscaler::Lanczos));
    let differing = got.as_raw().iter().zip(want.as_raw()).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "channels that differ from Pillow's");
}

#[test]
fn latent_modes_match_pytorch() {
    for (name, mode) in [
        ("hr_latent_x2_euler_a", LatentUpscaleMode::Latent),
        ("hr_nearest_exact_resize_dpmpp2m_karras", LatentUpscaleMode::LatentNearestExact),
    ] {
        let t = intermediates(name);
        let want = &t["iter0.hr_latent_upscaled"];
        let (_, _, h, w) = want.dims4().unwrap();
        let (interpolation, antialias) = mode.interpolation();
        let got = interpolate(&t["iter0.latent_final"], h, w, interpolation, antialias).unwrap();
        // Within a couple of float32 rounding steps of each value (PyTorch sums in its own order).
        let (got, want) = (
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0f32, f32::max);
        assert!(worst <= 4.0 * f32::EPSILON, "{name}: worst relative difference {worst}");
    }
}
