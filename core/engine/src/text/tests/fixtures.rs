//! Token ids, multipliers and schedules against the A1111 parity fixtures
//! (`tests/fixtures/a1111-parity`, recorded from A1111 v1.10.1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

use sdapi_protocol::prompt::{ScheduleParams, get_multicond_prompt_list};

use crate::text::{ChunkedBatch, ChunkingOptions, ClipTokenizer, LearnedConditioningPlan, multicond_plan};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity")
}

struct Case {
    name: String,
    request: Value,
    tensors: HashMap<String, Tensor>,
}

fn load_cases() -> Vec<Case> {
    let dir = fixtures_dir().join("cases");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixture cases dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let case_dir = dir.join(&name);
            let request: Value =
                serde_json::from_str(&std::fs::read_to_string(case_dir.join("request.json")).expect("request"))
                    .expect("request json");
            let tensors = candle_core::safetensors::load(case_dir.join("intermediates.safetensors"), &Device::Cpu)
                .expect("intermediates");
            Case { name, request, tensors }
        })
        .collect()
}

/// Denoiser calls per sampling run, as A1111 passes `steps` to the schedules.
fn total_steps(request: &Value) -> usize {
    let steps = request["steps"].as_u64().unwrap_or(50) as usize;
    let sampler = request["sampler_name"].as_str().unwrap_or("Euler");
    let second_order = ["Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE"];
    if second_order.contains(&sampler) { steps * 2 } else { steps }
}

/// The prompts of batch `n` (A1111 repeats a single prompt over `batch_size * n_iter`).
fn batch_prompts(request: &Value, key: &str) -> Vec<String> {
    let batch_size = request["batch_size"].as_u64().unwrap_or(1) as usize;
    vec![request[key].as_str().unwrap_or("").to_string(); batch_size]
}

fn iterations(case: &Case) -> usize {
    (0..).take_while(|n| case.tensors.contains_key(&format!("iter{n}.cond_tokens.0"))).count()
}

fn calls_recorded(case: &Case, n: usize, kind: &str) -> usize {
    (0..).take_while(|j| case.tensors.contains_key(&format!("iter{n}.{kind}_tokens.{j}"))).count()
}

/// Compares the chunks of every encoder call of `plan` with `iter{n}.{kind}_tokens/multipliers.{j}`.
/// Returns the number of token positions compared.
fn check_calls(case: &Case, n: usize, kind: &str, plan: &LearnedConditioningPlan) -> usize {
    let tokenizer = ClipTokenizer::shared();
    let options = ChunkingOptions::default();
    assert_eq!(
        calls_recorded(case, n, kind),
        plan.distinct.len(),
        "{}: iter{n} number of {kind} encoder calls",
        case.name
    );
    let mut compared = 0;
    for j in 0..plan.distinct.len() {
        let batch = ChunkedBatch::new(tokenizer, &plan.call_texts(j), &options).expect("tokenize");
        let ours_tokens: Vec<Vec<Vec<i64>>> = batch
            .chunks
            .iter()
            .map(|col| col.iter().map(|c| c.tokens.iter().map(|&t| i64::from(t)).collect()).collect())
            .collect();
        let ours_mults: Vec<Vec<Vec<f32>>> =
            batch.chunks.iter().map(|col| col.iter().map(|c| c.multipliers.to_vec()).collect()).collect();
        let theirs_tokens = case.tensors[&format!("iter{n}.{kind}_tokens.{j}")].to_vec3::<i64>().expect("i64");
        let theirs_mults = case.tensors[&format!("iter{n}.{kind}_multipliers.{j}")].to_vec3::<f32>().expect("f32");
        assert_eq!(ours_tokens, theirs_tokens, "{}: iter{n}.{kind}_tokens.{j}", case.name);
        // Exact: both sides are the f32 rounding of the same f64 product.
        assert_eq!(ours_mults, theirs_mults, "{}: iter{n}.{kind}_multipliers.{j}", case.name);
        compared += ours_tokens.iter().flatten().map(Vec::len).sum::<usize>();
    }
    compared
}

#[test]
fn every_case_tokens_and_multipliers_match_a1111() {
    let cases = load_cases();
    assert!(cases.len() >= 16, "expected all fixture cases, found {}", cases.len());
    let mut calls = 0;
    let mut positions = 0;
    for case in &cases {
        let params = ScheduleParams::new(total_steps(&case.request));
        let iters = iterations(case);
        assert!(iters >= 1, "{}: no token intermediates", case.name);
        for n in 0..iters {
            let cond_plan = multicond_plan(&batch_prompts(&case.request, "prompt"), &params);
            positions += check_calls(case, n, "cond", &cond_plan);
            let uncond_plan = LearnedConditioningPlan::new(&batch_prompts(&case.request, "negative_prompt"), &params);
            positions += check_calls(case, n, "uncond", &uncond_plan);
            calls += cond_plan.distinct.len() + uncond_plan.distinct.len();
        }
    }
    // 16 cases with one cond and one uncond call per iteration, batch2_iter2 has a second
    // iteration, the AND case a second cond call: 32 + 2 + 1.
    assert_eq!(calls, 35, "encoder calls compared");
    assert!(positions > 0);
}

#[test]
fn long_prompt_uses_comma_backoff_into_two_chunks() {
    let case = load_cases().into_iter().find(|c| c.name == "t2i_long_prompt_2chunks").expect("case");
    let tokens = case.tensors["iter0.cond_tokens.0"].to_vec3::<i64>().expect("i64");
    assert_eq!(tokens.len(), 2, "two chunks");
    // The first chunk ends early (back-off to a comma) and is EOS-padded before its final EOS.
    let first = &tokens[0][0];
    let comma = i64::from(ClipTokenizer::shared().comma_token());
    let last_text = first[1..76].iter().rposition(|&t| t != i64::from(ClipTokenizer::EOS)).expect("text");
    assert_eq!(first[1 + last_text], comma, "first chunk ends on a comma");
    assert!(last_text < 74, "chunk was shortened by the back-off");
}

#[test]
fn prompt_edit_and_schedule_matches_a1111() {
    let case = load_cases().into_iter().find(|c| c.name == "t2i_prompt_edit_and").expect("case");
    let params = ScheduleParams::new(total_steps(&case.request));
    let prompts = batch_prompts(&case.request, "prompt");
    let list = get_multicond_prompt_list(&prompts);
    let plan = LearnedConditioningPlan::new(&list.flat, &params);
    for (i, subs) in list.per_prompt.iter().enumerate() {
        let recorded =
            (0..).take_while(|k| case.tensors.contains_key(&format!("iter0.cond_schedule.{i}.{k}.weight"))).count();
        assert_eq!(recorded, subs.len(), "sub-prompts of image {i}");
        for (k, &(index, weight)) in subs.iter().enumerate() {
            let key = format!("iter0.cond_schedule.{i}.{k}");
            let end_steps = case.tensors[&format!("{key}.end_at_step")].to_vec1::<i64>().expect("i64");
            let ours: Vec<i64> = plan.distinct[index].iter().map(|(s, _)| *s as i64).collect();
            assert_eq!(ours, end_steps, "{key}.end_at_step");
            let theirs_weight = case.tensors[&format!("{key}.weight")].to_vec1::<f32>().expect("f32")[0];
            assert_eq!(weight as f32, theirs_weight, "{key}.weight");
        }
    }
    // And the texts behind the schedule, derived by hand from the prompt:
    // "[red:blue:0.5]" with 8 steps switches after int(0.5*8) = 4.
    assert_eq!(
        plan.distinct[0],
        vec![(4, "a red cube on a table".to_string()), (8, "a blue cube on a table".to_string())]
    );
    assert_eq!(list.flat[1], " a (shiny) sphere");
}
