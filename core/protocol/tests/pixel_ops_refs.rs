//! Replays reference outputs of Pillow 13 and OpenCV against the bit-exact ports in
//! `images::pil_ops` and `images::cv_blur`, byte for byte.
//!
//! The references live in `tests/fixtures/pixel-ops/refs.safetensors`, written by
//! `scripts/gen-pixel-op-refs.py` (which documents the key layout and how to regenerate it), so
//! this test needs neither Python nor OpenCV. The safetensors container is read by hand: an
//! 8-byte little-endian header length, a JSON header (`dtype`, `shape`, `data_offsets` per tensor,
//! plus `__metadata__`), then the raw little-endian tensor bytes.
//!
//! Every test checks all cases of its operation before failing, and reports each failing case
//! by key with the number of bytes that differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::OnceLock;

use sdapi_protocol::images::Raster;
use sdapi_protocol::images::cv_blur::{gaussian_blur_u8, mask_blur, mask_kernel_size};
use sdapi_protocol::images::pil_ops::{
    alpha_composite, bbox, crop, gaussian_blur, masking_fill, paste, paste_with_mask, premultiply, to_luma,
    unpremultiply,
};

const REFS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/pixel-ops/refs.safetensors");

/// The fields each operation's cases must have, exactly (see the generator's docstring).
const OPS: &[(&str, &[&str])] = &[
    ("mask_blur", &["input", "params", "output"]),
    ("cv_gaussian", &["input", "params", "sigma", "output"]),
    ("gaussian_blur", &["input", "radius", "output"]),
    ("masking_fill", &["image", "mask", "output"]),
    ("premultiply", &["input", "output"]),
    ("unpremultiply", &["input", "output"]),
    ("paste_with_mask", &["dst", "src", "mask", "params", "output"]),
    ("paste", &["dst", "src", "params", "output"]),
    ("alpha_composite", &["dst", "src", "output"]),
    ("to_luma", &["input", "output"]),
    ("bbox", &["input", "output"]),
    ("crop", &["input", "params", "output"]),
];

// ---------------------------------------------------------------------------------------------
// safetensors reader
// ---------------------------------------------------------------------------------------------

struct Tensor {
    dtype: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

struct Refs {
    tensors: BTreeMap<String, Tensor>,
    metadata: BTreeMap<String, String>,
}

fn refs() -> &'static Refs {
    static REFS: OnceLock<Refs> = OnceLock::new();
    REFS.get_or_init(|| {
        let bytes = std::fs::read(REFS_PATH).unwrap_or_else(|e| {
            panic!("cannot read {REFS_PATH}: {e} (regenerate it with scripts/gen-pixel-op-refs.py)")
        });
        parse_safetensors(&bytes).unwrap_or_else(|e| panic!("{REFS_PATH} is not a valid safetensors file: {e}"))
    })
}

fn parse_safetensors(bytes: &[u8]) -> Result<Refs, String> {
    let len_bytes: [u8; 8] = bytes.get(..8).ok_or("shorter than 8 bytes")?.try_into().map_err(|_| "bad length")?;
    let header_len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| "header length overflows")?;
    let data_start = header_len.checked_add(8).ok_or("header length overflows")?;
    let header = bytes.get(8..data_start).ok_or("header runs past the end of the file")?;
    let header: serde_json::Value = serde_json::from_slice(header).map_err(|e| format!("header is not JSON: {e}"))?;
    let header = header.as_object().ok_or("header is not a JSON object")?;
    let data = &bytes[data_start..];

    let mut refs = Refs { tensors: BTreeMap::new(), metadata: BTreeMap::new() };
    for (key, entry) in header {
        if key == "__metadata__" {
            let map = entry.as_object().ok_or("__metadata__ is not an object")?;
            for (k, v) in map {
                refs.metadata.insert(k.clone(), v.as_str().ok_or("metadata value is not a string")?.to_owned());
            }
            continue;
        }
        let dtype = entry["dtype"].as_str().ok_or_else(|| format!("{key}: no dtype"))?.to_owned();
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .ok_or_else(|| format!("{key}: no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{key}: bad shape"))?;
        let offsets: Vec<usize> = entry["data_offsets"]
            .as_array()
            .ok_or_else(|| format!("{key}: no data_offsets"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{key}: bad data_offsets"))?;
        let [begin, end] = offsets[..] else { return Err(format!("{key}: data_offsets must have 2 entries")) };
        let item = match dtype.as_str() {
            "U8" => 1,
            "I64" | "F64" => 8,
            other => return Err(format!("{key}: unexpected dtype {other}")),
        };
        let expected = shape.iter().product::<usize>() * item;
        let bytes = data.get(begin..end).ok_or_else(|| format!("{key}: data_offsets out of range"))?;
        if bytes.len() != expected {
            return Err(format!("{key}: {} data bytes for shape {shape:?} {dtype}", bytes.len()));
        }
        refs.tensors.insert(key.clone(), Tensor { dtype, shape, data: bytes.to_vec() });
    }
    Ok(refs)
}

impl Refs {
    fn tensor(&self, key: &str, dtype: &str) -> &Tensor {
        let t = self.tensors.get(key).unwrap_or_else(|| panic!("{REFS_PATH}: no tensor {key}"));
        assert_eq!(t.dtype, dtype, "{key}: dtype");
        t
    }

    /// A `[height, width, channels]` uint8 tensor.
    fn raster(&self, key: &str) -> Raster {
        let t = self.tensor(key, "U8");
        let [height, width, channels] = t.shape[..] else { panic!("{key}: shape {:?} is not [h, w, c]", t.shape) };
        Raster { width, height, channels, data: t.data.clone() }
    }

    /// A `[height, width]` uint8 tensor: (bytes, width, height).
    fn plane(&self, key: &str) -> (Vec<u8>, usize, usize) {
        let t = self.tensor(key, "U8");
        let [height, width] = t.shape[..] else { panic!("{key}: shape {:?} is not [h, w]", t.shape) };
        (t.data.clone(), width, height)
    }

    fn ints(&self, key: &str) -> Vec<i64> {
        let t = self.tensor(key, "I64");
        t.data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn float(&self, key: &str) -> f64 {
        let t = self.tensor(key, "F64");
        assert_eq!(t.shape, [1], "{key}: shape");
        f64::from_le_bytes(t.data[..8].try_into().unwrap())
    }

    /// The case prefixes (`op.NNNNN`) of one operation, in order.
    fn cases(&self, op: &str) -> Vec<String> {
        let prefix = format!("{op}.");
        let cases: BTreeSet<String> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_once('.'))
            .map(|(n, _)| format!("{op}.{n}"))
            .collect();
        cases.into_iter().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison and reporting
// ---------------------------------------------------------------------------------------------

/// `None` when equal, else what differs: the shape, or how many bytes and the first of them.
fn diff_bytes(got: &[u8], want: &[u8]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} bytes, want {}", got.len(), want.len()));
    }
    let differing: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
    let &first = differing.first()?;
    Some(format!(
        "{} of {} bytes differ (first at byte {first}: got {}, want {})",
        differing.len(),
        want.len(),
        got[first],
        want[first]
    ))
}

fn diff_raster(got: &Raster, want: &Raster) -> Option<String> {
    let dims = |r: &Raster| (r.width, r.height, r.channels);
    if dims(got) != dims(want) {
        let (gw, gh, gc) = dims(got);
        let (ww, wh, wc) = dims(want);
        return Some(format!("got a {gw}x{gh}x{gc} raster, want {ww}x{wh}x{wc}"));
    }
    diff_bytes(&got.data, &want.data)
}

/// Runs `check` on every case of `op` (it returns a description of the mismatch, if any), then
/// fails listing every mismatching case. Also fails if the file has fewer cases than its
/// metadata records, or none.
fn check_all(op: &str, mut check: impl FnMut(&Refs, &str) -> Option<String>) {
    let refs = refs();
    let cases = refs.cases(op);
    let recorded = refs.metadata.get(&format!("cases.{op}")).and_then(|n| n.parse::<usize>().ok());
    assert!(!cases.is_empty(), "{REFS_PATH}: no {op} cases");
    assert_eq!(Some(cases.len()), recorded, "{REFS_PATH}: {op} cases present vs recorded in __metadata__");
    let failures: Vec<String> =
        cases.iter().filter_map(|case| check(refs, case).map(|why| format!("  {case}: {why}"))).collect();
    if !failures.is_empty() {
        let mut msg = format!(
            "{op}: {} of {} cases differ from the reference (Pillow {}, OpenCV {}):\n",
            failures.len(),
            cases.len(),
            refs.metadata.get("pillow").map_or("?", String::as_str),
            refs.metadata.get("opencv").map_or("?", String::as_str),
        );
        for line in &failures {
            let _ = writeln!(msg, "{line}");
        }
        panic!("{msg}");
    }
}

fn params<const N: usize>(refs: &Refs, case: &str) -> [i64; N] {
    let key = format!("{case}.params");
    let values = refs.ints(&key);
    values.try_into().unwrap_or_else(|v: Vec<i64>| panic!("{key}: {} values, want {N}", v.len()))
}

fn as_u32(v: i64) -> u32 {
    u32::try_from(v).expect("parameter out of u32 range")
}

fn as_usize(v: i64) -> usize {
    usize::try_from(v).expect("parameter out of usize range")
}

// ---------------------------------------------------------------------------------------------
// The file itself
// ---------------------------------------------------------------------------------------------

/// Every tensor belongs to a known operation and every case has exactly its fields, so cases
/// added to the generator cannot be silently skipped here.
#[test]
fn reference_file_has_only_known_operations_with_complete_cases() {
    let refs = refs();
    let mut fields: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for key in refs.tensors.keys() {
        let mut parts = key.splitn(3, '.');
        let (Some(op), Some(n), Some(field)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("{key}: not <op>.<case>.<field>");
        };
        assert!(OPS.iter().any(|(o, _)| *o == op), "{key}: unknown operation {op}");
        assert!(n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()), "{key}: bad case number");
        fields.entry(format!("{op}.{n}")).or_default().insert(field);
    }
    for (case, have) in &fields {
        let op = case.split('.').next().unwrap_or_default();
        let want: BTreeSet<&str> =
            OPS.iter().find(|(o, _)| *o == op).map(|(_, f)| f.iter().copied().collect()).unwrap();
        assert_eq!(have, &want, "{case}: fields");
    }
    for (op, _) in OPS {
        assert!(!refs.cases(op).is_empty(), "no {op} cases");
    }
}

// ---------------------------------------------------------------------------------------------
// OpenCV (cv_blur)
// ---------------------------------------------------------------------------------------------

#[test]
fn mask_kernel_size_matches_a1111_formula() {
    check_all("mask_blur", |refs, case| {
        let [blur_x, blur_y, kernel_x, kernel_y] = params(refs, case);
        let got = (mask_kernel_size(as_u32(blur_x)), mask_kernel_size(as_u32(blur_y)));
        let want = (as_usize(kernel_x), as_usize(kernel_y));
        (got != want).then(|| format!("kernel sizes {got:?} for blurs ({blur_x}, {blur_y}), want {want:?}"))
    });
}

#[test]
fn mask_blur_matches_a1111_cv2_two_pass_blur() {
    check_all("mask_blur", |refs, case| {
        let (input, width, height) = refs.plane(&format!("{case}.input"));
        let (want, _, _) = refs.plane(&format!("{case}.output"));
        let [blur_x, blur_y, _, _] = params(refs, case);
        let got = mask_blur(&input, width, height, as_u32(blur_x), as_u32(blur_y));
        diff_bytes(&got, &want).map(|d| format!("{width}x{height} blur ({blur_x}, {blur_y}): {d}"))
    });
}

#[test]
fn gaussian_blur_u8_matches_cv2_gaussian_blur() {
    check_all("cv_gaussian", |refs, case| {
        let (input, width, height) = refs.plane(&format!("{case}.input"));
        let (want, _, _) = refs.plane(&format!("{case}.output"));
        let [ksize_x, ksize_y] = params(refs, case);
        let sigma = refs.float(&format!("{case}.sigma"));
        let got = gaussian_blur_u8(&input, width, height, as_usize(ksize_x), as_usize(ksize_y), sigma);
        diff_bytes(&got, &want).map(|d| format!("{width}x{height} ksize ({ksize_x}, {ksize_y}) sigma {sigma}: {d}"))
    });
}

// ---------------------------------------------------------------------------------------------
// Pillow (pil_ops)
// ---------------------------------------------------------------------------------------------

#[test]
fn gaussian_blur_matches_pillow_gaussian_blur_filter() {
    check_all("gaussian_blur", |refs, case| {
        let input = refs.raster(&format!("{case}.input"));
        let radius = refs.float(&format!("{case}.radius"));
        let got = gaussian_blur(&input, radius);
        let (w, h, c) = (input.width, input.height, input.channels);
        diff_raster(&got, &refs.raster(&format!("{case}.output"))).map(|d| format!("{w}x{h}x{c} radius {radius}: {d}"))
    });
}

#[test]
fn masking_fill_matches_a1111_masking_fill() {
    check_all("masking_fill", |refs, case| {
        let image = refs.raster(&format!("{case}.image"));
        let mask = refs.raster(&format!("{case}.mask"));
        let got = masking_fill(&image, &mask);
        let (w, h, c, mc) = (image.width, image.height, image.channels, mask.channels);
        diff_raster(&got, &refs.raster(&format!("{case}.output")))
            .map(|d| format!("{w}x{h} image with {c} channels, mask with {mc}: {d}"))
    });
}

#[test]
fn premultiply_matches_pillow_convert_rgba_to_rgba_premultiplied() {
    check_all("premultiply", |refs, case| {
        let got = premultiply(&refs.raster(&format!("{case}.input")));
        diff_raster(&got, &refs.raster(&format!("{case}.output")))
    });
}

#[test]
fn unpremultiply_matches_pillow_convert_rgba_premultiplied_to_rgba() {
    check_all("unpremultiply", |refs, case| {
        let got = unpremultiply(&refs.raster(&format!("{case}.input")));
        diff_raster(&got, &refs.raster(&format!("{case}.output")))
    });
}

#[test]
fn paste_with_mask_matches_pillow_masked_paste() {
    check_all("paste_with_mask", |refs, case| {
        let mut dst = refs.raster(&format!("{case}.dst"));
        let src = refs.raster(&format!("{case}.src"));
        let mask = refs.raster(&format!("{case}.mask"));
        let [x, y] = params(refs, case);
        paste_with_mask(&mut dst, &src, &mask, x, y);
        let (c, mc) = (src.channels, mask.channels);
        diff_raster(&dst, &refs.raster(&format!("{case}.output")))
            .map(|d| format!("{c} channels, mask with {mc}, at ({x}, {y}): {d}"))
    });
}

#[test]
fn paste_matches_pillow_paste_without_mask() {
    check_all("paste", |refs, case| {
        let mut dst = refs.raster(&format!("{case}.dst"));
        let src = refs.raster(&format!("{case}.src"));
        let [x, y] = params(refs, case);
        paste(&mut dst, &src, x, y);
        diff_raster(&dst, &refs.raster(&format!("{case}.output"))).map(|d| format!("at ({x}, {y}): {d}"))
    });
}

#[test]
fn alpha_composite_matches_pillow_alpha_composite() {
    check_all("alpha_composite", |refs, case| {
        let mut dst = refs.raster(&format!("{case}.dst"));
        alpha_composite(&mut dst, &refs.raster(&format!("{case}.src")));
        diff_raster(&dst, &refs.raster(&format!("{case}.output")))
    });
}

#[test]
fn to_luma_matches_pillow_convert_l() {
    check_all("to_luma", |refs, case| {
        let input = refs.raster(&format!("{case}.input"));
        let c = input.channels;
        diff_raster(&to_luma(&input), &refs.raster(&format!("{case}.output")))
            .map(|d| format!("from {c} channels: {d}"))
    });
}

#[test]
fn bbox_matches_pillow_getbbox() {
    check_all("bbox", |refs, case| {
        let input = refs.raster(&format!("{case}.input"));
        let want = match refs.ints(&format!("{case}.output"))[..] {
            [0, ..] => None,
            [1, x1, y1, x2, y2] => Some((as_usize(x1), as_usize(y1), as_usize(x2), as_usize(y2))),
            ref other => panic!("{case}.output: bad bbox record {other:?}"),
        };
        let got = bbox(&input);
        (got != want).then(|| format!("got {got:?}, want {want:?}"))
    });
}

#[test]
fn crop_matches_pillow_crop_including_out_of_range_boxes() {
    check_all("crop", |refs, case| {
        let input = refs.raster(&format!("{case}.input"));
        let [x1, y1, x2, y2] = params(refs, case);
        let got = crop(&input, x1, y1, x2, y2);
        let (w, h) = (input.width, input.height);
        diff_raster(&got, &refs.raster(&format!("{case}.output")))
            .map(|d| format!("{w}x{h} box ({x1}, {y1}, {x2}, {y2}): {d}"))
    });
}
