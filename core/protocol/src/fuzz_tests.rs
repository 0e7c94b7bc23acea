//! Fixed-budget fuzzing (deterministic, runs in CI with the unit tests) of the parsers every
//! request reaches: the lax request parser, the prompt syntax (attention, editing, alternation,
//! AND, BREAK, extra networks, comments), the infotext parser, and base64 image decoding. Each
//! input must give an answer or an error — never a panic — and the budgets are fixed so CI time
//! does not drift.

use serde_json::{Value, json};

use crate::fuzz::XorShift;

use crate::api::request::{Img2ImgRequest, Txt2ImgRequest};
use crate::images::{decode_base64_image, read_infotext, to_base64};
use crate::infotext::parse_generation_parameters;
use crate::prompt::{
    ScheduleParams, get_multicond_prompt_list, parse_attention, parse_extra_networks, prompt_schedule, strip_comments,
};

fn odd_value(rng: &mut XorShift, depth: usize) -> Value {
    let scalars = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1e308),
        json!(-9.2e18),
        json!(18446744073709551615u64),
        json!(0.5),
        json!(""),
        json!("1"),
        json!("nan"),
        json!("inf"),
        json!("-1e400"),
        json!("Euler a"),
        json!("<lora:x:1>"),
        json!("data:image/png;base64,AAAA"),
    ];
    match rng.below(if depth > 2 { 1 } else { 4 }) {
        0 => rng.pick(&scalars).clone(),
        1 => Value::Array((0..rng.below(4)).map(|_| odd_value(rng, depth + 1)).collect()),
        2 => json!({"a": odd_value(rng, depth + 1), "sd_model_checkpoint": odd_value(rng, depth + 1)}),
        _ => json!("x".repeat(rng.below(300))),
    }
}

#[test]
fn requests_with_odd_values_are_parsed_or_rejected() {
    const BUDGET: usize = 20_000;
    let fields = [
        "prompt",
        "negative_prompt",
        "styles",
        "seed",
        "subseed",
        "subseed_strength",
        "seed_resize_from_h",
        "seed_resize_from_w",
        "sampler_name",
        "sampler_index",
        "scheduler",
        "batch_size",
        "n_iter",
        "steps",
        "cfg_scale",
        "width",
        "height",
        "restore_faces",
        "tiling",
        "eta",
        "s_churn",
        "s_tmax",
        "s_tmin",
        "s_noise",
        "override_settings",
        "override_settings_restore_afterwards",
        "denoising_strength",
        "init_images",
        "mask",
        "resize_mode",
        "image_cfg_scale",
        "enable_hr",
        "hr_scale",
        "alwayson_scripts",
        "script_args",
        "unknown",
    ];
    let mut rng = XorShift(0xfeed_f00d_1234_5678);
    let (mut ok, mut rejected) = (0, 0);
    for _ in 0..BUDGET {
        let mut body = serde_json::Map::new();
        for _ in 0..rng.below(8) {
            body.insert((*rng.pick(&fields)).to_string(), odd_value(&mut rng, 0));
        }
        let body = if rng.below(20) == 0 { odd_value(&mut rng, 0) } else { Value::Object(body) };
        match (Txt2ImgRequest::from_json(&body), Img2ImgRequest::from_json(&body)) {
            (Ok(_), _) | (_, Ok(_)) => ok += 1,
            _ => rejected += 1,
        }
    }
    assert!(ok > 0 && rejected > 0, "{ok} parsed, {rejected} rejected");
}

#[test]
fn prompts_in_every_syntax_parse_or_fail_cleanly() {
    const BUDGET: usize = 20_000;
    let pieces = [
        "(",
        ")",
        "[",
        "]",
        ":",
        "|",
        "\\",
        "\\(",
        " AND ",
        " BREAK ",
        "BREAK",
        "a",
        "cat",
        "0.5",
        "1.7",
        "-1",
        "99",
        "1e9",
        "nan",
        ",",
        " ",
        "<lora:x:0.5>",
        "<",
        ">",
        "#",
        "\n",
        "::",
        "é",
        "🙂",
    ];
    let mut rng = XorShift(0x9999_8888_7777_6666);
    for _ in 0..BUDGET {
        let prompt: String = (0..rng.below(40)).map(|_| *rng.pick(&pieces)).collect();
        let _ = parse_attention(&prompt);
        let steps = 1 + rng.below(200);
        let schedule = prompt_schedule(&prompt, &ScheduleParams::new(steps));
        assert!(!schedule.is_empty() && schedule.len() <= steps.max(1) + 1, "{prompt:?}: {} entries", schedule.len());
        let _ = get_multicond_prompt_list(std::slice::from_ref(&prompt));
        let _ = parse_extra_networks(&prompt);
        let _ = strip_comments(&prompt);
    }
}

#[test]
fn mutated_infotexts_parse() {
    const BUDGET: usize = 20_000;
    let base = "a (cube:1.2), [red|blue]\nNegative prompt: blurry\nSteps: 8, Sampler: DPM++ 2M, Schedule type: Karras, \
                CFG scale: 7.0, Seed: 4321, Size: 64x96, Model hash: 7037055cdc, Lora hashes: \"a: 1, b: 2\", \
                Hires upscale: 2.0, Version: v1.10.1";
    let alphabet: Vec<char> = ":,\"\\\n x0123456789-+.Negative prompt:Steps{}[]()é".chars().collect();
    let mut rng = XorShift(0x1f0_7e47_aaaa_bbbb);
    for _ in 0..BUDGET {
        let mut text: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(6) {
            let i = rng.below(text.len() + 1);
            match rng.below(3) {
                0 if i < text.len() => text[i] = *rng.pick(&alphabet),
                1 => text.insert(i.min(text.len()), *rng.pick(&alphabet)),
                _ => text.truncate(i),
            }
        }
        let text: String = text.into_iter().collect();
        let _ = parse_generation_parameters(&text, &[]);
    }
}

#[test]
fn mutated_images_decode_or_fail_cleanly() {
    const BUDGET: usize = 3_000;
    let png = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/a1111-parity/cases/t2i_euler_nv_seed1234/image_0.png"
    ))
    .expect("fixture image");
    let mut rng = XorShift(0x1a6e_0000_0000_0001);
    let mut decoded = 0;
    for _ in 0..BUDGET {
        let mut bytes = png.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[i] = rng.next_u64() as u8,
                1 => bytes.insert(i, rng.next_u64() as u8),
                _ => bytes.truncate(i.max(8)),
            }
        }
        let _ = read_infotext(&bytes);
        let b64 =
            if rng.below(4) == 0 { format!("data:image/png;base64,{}", to_base64(&bytes)) } else { to_base64(&bytes) };
        let mangled: String = if rng.below(8) == 0 { b64.replacen('A', "*", 3) } else { b64 };
        decoded += usize::from(decode_base64_image(&mangled).is_ok());
    }
    println!("{BUDGET} mutated images, {decoded} decoded");
}
