use serde_json::{Map, Value, json};

use super::parser::{find_params, uses_emphasis};
use super::*;
use crate::api::options::Options;
use crate::api::request::{Img2ImgRequest, Txt2ImgRequest};
use crate::api::sampler_resolution::resolve_request_sampler;

fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity/cases")
}

struct Case {
    name: String,
    request: Value,
    case: Value,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let dir = entry.unwrap().path();
        let read = |f: &str| serde_json::from_str::<Value>(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        out.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into(),
            request: read("request.json"),
            case: read("case.json"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 16);
    out
}

/// Builds the infotexts of a case the way process_images would: request validated by our
/// models, sampler/scheduler resolved as in docs/a1111-behaviour.md §2.4 steps 4–5 and §6.1 step 5, overrides applied.
fn infotexts_for(c: &Case) -> Vec<String> {
    let img2img = c.case["mode"] == "img2img";
    let (fields, sampler_req, scheduler_req, override_settings) = if img2img {
        let r = Img2ImgRequest::from_json(&c.request).unwrap();
        (r.fields.clone(), r.requested_sampler().to_string(), r.scheduler.clone(), r.override_settings.clone())
    } else {
        let r = Txt2ImgRequest::from_json(&c.request).unwrap();
        (r.fields.clone(), r.requested_sampler().to_string(), r.scheduler.clone(), r.override_settings.clone())
    };
    let (sampler, scheduler) = resolve_request_sampler(&sampler_req, scheduler_req.as_deref());
    let (sampler, scheduler) = (sampler.name().to_string(), scheduler.label().to_string());

    let mut opts = Options::new();
    let mut overrides = override_settings.unwrap_or_default();
    overrides.remove("sd_model_checkpoint");
    opts.set_many(&overrides).unwrap();

    let mut extra = Map::new();
    if img2img {
        extra.insert("Denoising strength".into(), fields.get("denoising_strength").clone());
    }
    let seeds: Vec<i64> = c.case["seeds"].as_array().unwrap().iter().map(|s| s.as_i64().unwrap()).collect();
    seeds
        .iter()
        .map(|&seed| {
            let input = InfotextInput {
                prompt: fields.get("prompt").as_str().unwrap().into(),
                negative_prompt: fields.get("negative_prompt").as_str().unwrap().into(),
                steps: fields.get("steps").as_i64().unwrap(),
                sampler_name: sampler.clone(),
                scheduler: Some(scheduler.clone()),
                cfg_scale: fields.get("cfg_scale").as_f64().unwrap(),
                seed,
                width: fields.get("width").as_i64().unwrap(),
                height: fields.get("height").as_i64().unwrap(),
                model_hash: Some(c.case["model_sha256"].as_str().unwrap()[..10].into()),
                model_name: Some(c.case["model"].as_str().unwrap().into()),
                subseed_strength: fields.get("subseed_strength").clone(),
                seed_resize_from_w: fields.get("seed_resize_from_w").as_i64().unwrap(),
                seed_resize_from_h: fields.get("seed_resize_from_h").as_i64().unwrap(),
                extra_generation_params: extra.clone(),
                version: Some("v1.10.1".into()),
                ..Default::default()
            };
            create_infotext(&input, &opts)
        })
        .collect()
}

#[test]
fn writer_reproduces_every_fixture_infotext() {
    let mut checked = 0;
    for c in cases() {
        let want: Vec<String> =
            c.case["infotexts"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        assert_eq!(infotexts_for(&c), want, "case {}", c.name);
        checked += want.len();
    }
    assert!(checked >= 19);
}

#[test]
fn writer_quoting_and_optional_entries() {
    let mut extra = Map::new();
    extra.insert("Lora hashes".into(), json!("foo: abc123"));
    extra.insert("Hires prompt".into(), json!("a \"b\", é"));
    extra.insert("Denoising strength".into(), json!(0.5));
    extra.insert("Skip".into(), Value::Null);
    let input = InfotextInput {
        prompt: "a cat".into(),
        negative_prompt: "".into(),
        steps: 20,
        sampler_name: "Euler a".into(),
        scheduler: Some("Automatic".into()),
        cfg_scale: 7.0,
        seed: 1,
        width: 512,
        height: 768,
        subseed: 9,
        subseed_strength: json!(0.25),
        seed_resize_from_w: 256,
        seed_resize_from_h: 256,
        eta: None,
        tiling: true,
        extra_generation_params: extra,
        version: Some("v1.10.1".into()),
        ..Default::default()
    };
    let mut opts = Options::new();
    opts.set("eta_noise_seed_delta", json!(31337)).unwrap();
    opts.set("CLIP_stop_at_last_layers", json!(2)).unwrap();
    // Expected text assembled by hand from docs/a1111-behaviour.md §3.2's key order and quoting rule.
    assert_eq!(
        create_infotext(&input, &opts),
        "a cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1, Size: 512x768, \
         Variation seed: 9, Variation seed strength: 0.25, Seed resize from: 256x256, Denoising strength: 0.5, \
         Clip skip: 2, ENSD: 31337, Tiling: True, Lora hashes: \"foo: abc123\", Hires prompt: \"a \\\"b\\\", é\", Version: v1.10.1"
    );
}

#[test]
fn param_regex_scan() {
    let got = find_params(r#"Steps: 8, Sampler: Euler a, Lora hashes: "a: b, c", Size: 64x64, Empty: , Last: x"#);
    let want = vec![
        ("Steps", "8"),
        ("Sampler", "Euler a"),
        ("Lora hashes", r#""a: b, c""#),
        ("Size", "64x64"),
        ("Empty", ""),
        ("Last", "x"),
    ];
    let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn emphasis_detection() {
    assert!(uses_emphasis("(red:1.3) cube"));
    assert!(uses_emphasis("a [b] c"));
    assert!(uses_emphasis("a (b"));
    assert!(!uses_emphasis("a red cube, on a table"));
    assert!(!uses_emphasis("a \\(b\\) c"));
    assert!(!uses_emphasis("(b:1.0)"));
    assert!(!uses_emphasis("time: noon"));
}

/// The defaults docs/a1111-behaviour.md §3.4 adds, in order, for an infotext without hires/inpaint/emphasis keys.
fn tail_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("Clip skip", json!("1")),
        ("Hires resize-1", json!(0)),
        ("Hires resize-2", json!(0)),
        ("Hires sampler", json!("Use same sampler")),
        ("Hires schedule type", json!("Use same scheduler")),
        ("Hires checkpoint", json!("Use same checkpoint")),
        ("Hires prompt", json!("")),
        ("Hires negative prompt", json!("")),
        ("Mask mode", json!("Inpaint masked")),
        ("Masked content", json!("original")),
        ("Inpaint area", json!("Whole picture")),
        ("Masked area padding", json!(32)),
    ]
}

#[test]
fn parser_on_a_fixture_infotext_matches_section_3_4() {
    let text = "a red cube on a wooden table\nNegative prompt: blurry, low quality, (ugly:1.2)\nSteps: 8, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, Size: 64x64, Model hash: 7037055cdc, Model: tiny-sd15, RNG: NV, Version: v1.10.1";
    let got = parse_generation_parameters(text, &[]);
    let mut want: Vec<(&str, Value)> = vec![
        ("Steps", json!("8")),
        ("Sampler", json!("Euler")),
        ("Schedule type", json!("Automatic")),
        ("CFG scale", json!("7.0")),
        ("Seed", json!("1234")),
        ("Size-1", json!("64")),
        ("Size-2", json!("64")),
        ("Model hash", json!("7037055cdc")),
        ("Model", json!("tiny-sd15")),
        ("RNG", json!("NV")),
        ("Version", json!("v1.10.1")),
        ("Prompt", json!("a red cube on a wooden table")),
        ("Negative prompt", json!("blurry, low quality, (ugly:1.2)")),
    ];
    want.extend(tail_defaults());
    want.extend([
        ("Schedule max sigma", json!(0)),
        ("Schedule min sigma", json!(0)),
        ("Schedule rho", json!(0)),
        ("VAE Encoder", json!("Full")),
        ("VAE Decoder", json!("Full")),
        ("FP8 weight", json!("Disable")),
        ("Emphasis", json!("Original")),
        ("Refiner switch by sampling steps", json!(false)),
    ]);
    let want: Map<String, Value> = want.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    assert_eq!(got, want);
}

#[test]
fn parser_on_every_fixture_infotext() {
    for c in cases() {
        for (i, text) in c.case["infotexts"].as_array().unwrap().iter().enumerate() {
            let text = text.as_str().unwrap();
            let got = parse_generation_parameters(text, &[]);
            let req = &c.request;
            assert_eq!(got["Prompt"], req["prompt"], "{}", c.name);
            assert_eq!(got["Negative prompt"], req["negative_prompt"], "{}", c.name);
            assert_eq!(got["Steps"], json!(req["steps"].to_string()));
            assert_eq!(got["Sampler"], req["sampler_name"]);
            assert_eq!(got["Seed"], json!(c.case["seeds"][i].to_string()));
            assert_eq!(got["Size-1"], json!(c.case["width"].to_string()));
            assert_eq!(got["Size-2"], json!(c.case["height"].to_string()));
            assert_eq!(got["RNG"], req["override_settings"]["randn_source"]);
            let clip =
                req["override_settings"].get("CLIP_stop_at_last_layers").map(|v| v.to_string()).unwrap_or("1".into());
            assert_eq!(got["Clip skip"], json!(clip), "{}", c.name);
            let emphasis = uses_emphasis(req["prompt"].as_str().unwrap())
                || uses_emphasis(req["negative_prompt"].as_str().unwrap());
            assert_eq!(got.get("Emphasis").is_some(), emphasis, "{}", c.name);
            // v1.10.1 is new enough: no back-compat keys
            assert!(!got.contains_key("Downcast alphas_cumprod"));
            assert_eq!(got.keys().next_back().unwrap(), "Refiner switch by sampling steps");
        }
    }
}

#[test]
fn parser_edge_rules() {
    // fewer than 3 params on the last line → it is prompt text
    let got = parse_generation_parameters("a photo\nSteps: 5, Seed: 1", &[]);
    assert_eq!(got["Prompt"], json!("a photo\nSteps: 5, Seed: 1"));
    assert!(!got.contains_key("Steps"));
    // quoted values are json-unquoted; old versions get back-compat flags; skip_fields apply
    let got = parse_generation_parameters(
        "[a:b:3]\nNegative prompt: x\ny\nSteps: 5, Sampler: DDIM, Lora hashes: \"l1: abc, l2: def\", Version: v1.5.2",
        &["Seed"],
    );
    assert_eq!(got["Lora hashes"], json!("l1: abc, l2: def"));
    assert_eq!(got["Negative prompt"], json!("x\ny"));
    assert_eq!(got["Old prompt editing timelines"], json!(true));
    assert_eq!(got["Pad conds v0"], json!(true));
    assert_eq!(got["Downcast alphas_cumprod"], json!(true));
    // v1.7.0-225-g… is not older than v1.7.0-225
    let got = parse_generation_parameters("p\nSteps: 5, Sampler: Euler, Version: v1.7.0-225-gabcdef", &[]);
    assert!(!got.contains_key("Downcast alphas_cumprod"));
    // old "First pass size" → Size / Hires resize
    let got = parse_generation_parameters("p\nSteps: 5, Size: 1024x1024, First pass size: 0x0", &[]);
    assert_eq!(got["Size-1"], json!(512));
    assert_eq!(got["Hires resize-1"], json!(1024));
}

#[test]
fn info_json_formatting() {
    let info = InfoJson {
        prompt: "a cat é".into(),
        all_prompts: vec!["a cat é".into()],
        negative_prompt: "".into(),
        all_negative_prompts: vec!["".into()],
        seed: 1234,
        all_seeds: vec![1234],
        subseed: 99,
        all_subseeds: vec![99],
        subseed_strength: json!(0),
        width: 64,
        height: 64,
        sampler_name: "Euler".into(),
        cfg_scale: 7.0,
        steps: 8,
        batch_size: 1,
        restore_faces: false,
        face_restoration_model: None,
        sd_model_name: Some("tiny-sd15".into()),
        sd_model_hash: Some("7037055cdc".into()),
        sd_vae_name: None,
        sd_vae_hash: None,
        seed_resize_from_w: -1,
        seed_resize_from_h: -1,
        denoising_strength: Value::Null,
        extra_generation_params: Map::new(),
        index_of_first_image: 0,
        infotexts: vec!["a cat é\nSteps: 8".into()],
        styles: vec![],
        job_timestamp: "20240101120000".into(),
        clip_skip: 1,
        is_using_inpainting_conditioning: false,
        version: Some("v1.10.1".into()),
    };
    // What Python's json.dumps prints for the same dict (default separators, ASCII escapes).
    let want = r#"{"prompt": "a cat \u00e9", "all_prompts": ["a cat \u00e9"], "negative_prompt": "", "all_negative_prompts": [""], "seed": 1234, "all_seeds": [1234], "subseed": 99, "all_subseeds": [99], "subseed_strength": 0, "width": 64, "height": 64, "sampler_name": "Euler", "cfg_scale": 7.0, "steps": 8, "batch_size": 1, "restore_faces": false, "face_restoration_model": null, "sd_model_name": "tiny-sd15", "sd_model_hash": "7037055cdc", "sd_vae_name": null, "sd_vae_hash": null, "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": null, "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": ["a cat \u00e9\nSteps: 8"], "styles": [], "job_timestamp": "20240101120000", "clip_skip": 1, "is_using_inpainting_conditioning": false, "version": "v1.10.1"}"#;
    assert_eq!(info.to_info_string(), want);
    assert_eq!(info.to_value().as_object().unwrap().len(), 32);
}
