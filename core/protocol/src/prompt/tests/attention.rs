use serde_json::Value;

use crate::prompt::attention::{parse_attention, parse_prompt_attention};

/// Every case of `data/attention.json` (outputs of A1111's `parse_prompt_attention`), exactly,
/// weights compared as f64 bit patterns.
#[test]
fn matches_a1111_on_recorded_cases() {
    let data: Value = serde_json::from_str(include_str!("data/attention.json")).expect("json");
    let cases = data["cases"].as_array().expect("cases");
    assert!(cases.len() >= 50);
    for case in cases {
        let prompt = case["prompt"].as_str().expect("prompt");
        let ours = parse_attention(prompt);
        if case.get("error").is_some() {
            assert!(ours.is_err(), "{prompt:?} should fail like A1111's float()");
            continue;
        }
        let ours = ours.unwrap_or_else(|e| panic!("{prompt:?}: {e}"));
        let theirs: Vec<(String, f64)> = case["parsed"]
            .as_array()
            .expect("parsed")
            .iter()
            .map(|p| {
                (p[0].as_str().expect("text").to_string(), p[1].as_str().expect("weight").parse::<f64>().expect("f64"))
            })
            .collect();
        let ours: Vec<(String, f64)> = ours.into_iter().map(|p| (p.text, p.weight)).collect();
        assert_eq!(ours, theirs, "prompt {prompt:?}");
    }
}

/// The example of docs/a1111-behaviour.md §7.1 through the f32 API of the brief.
#[test]
fn spec_example_in_f32() {
    let parsed = parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).");
    let expected: Vec<(String, f32)> = [
        ("a ", 1.0),
        ("house", 1.573),
        (" ", 1.1),
        ("on", 1.0),
        (" a ", 1.1),
        ("hill", 0.55),
        (", sun, ", 1.1),
        ("sky", 1.4641),
        (".", 1.1),
    ]
    .iter()
    .map(|(t, w)| (t.to_string(), *w))
    .collect();
    assert_eq!(parsed.len(), expected.len());
    for ((t, w), (et, ew)) in parsed.iter().zip(&expected) {
        assert_eq!(t, et);
        assert!((w - ew).abs() < 1e-6, "{t}: {w} vs {ew}");
    }
}

#[test]
fn break_marker_only_at_word_boundaries() {
    let parsed = parse_attention("a BREAK b").expect("parse");
    assert!(parsed[1].is_break());
    // Inside brackets the marker's weight is multiplied and it stops being a marker (as in A1111).
    let parsed = parse_attention("(a BREAK b)").expect("parse");
    assert!(parsed.iter().all(|p| !p.is_break()));
}

#[test]
fn invalid_weight_falls_back_to_literal_text_in_f32_api() {
    assert_eq!(parse_prompt_attention("(a:1.2.3)"), vec![("(a:1.2.3)".to_string(), 1.0)]);
}
