use serde_json::Value;

use crate::prompt::schedules::{ScheduleParams, get_learned_conditioning_prompt_schedules, prompt_schedule};

/// All cases of `data/schedules.json`: hand-picked prompts (A1111's doctests among them) and
/// ~1500 random bracket soups, each run through A1111's lark-based function under 8 Python hash
/// seeds, keeping those whose answer does not depend on the seed.
#[test]
fn matches_a1111_on_recorded_cases() {
    let data: Value = serde_json::from_str(include_str!("data/schedules.json")).expect("json");
    let cases = data["cases"].as_array().expect("cases");
    assert!(cases.len() > 1000);
    let mut failures = Vec::new();
    for case in cases {
        let prompt = case["prompt"].as_str().expect("prompt");
        let params = ScheduleParams {
            steps: case["steps"].as_u64().expect("steps") as usize,
            hires_steps: case["hires_steps"].as_u64().map(|s| s as usize),
            use_old_scheduling: case["use_old_scheduling"].as_bool().expect("old"),
        };
        let theirs: Vec<(usize, String)> = case["schedule"]
            .as_array()
            .expect("schedule")
            .iter()
            .map(|e| (e[0].as_u64().expect("step") as usize, e[1].as_str().expect("text").to_string()))
            .collect();
        let ours = prompt_schedule(prompt, &params);
        if ours != theirs {
            failures.push(format!("{prompt:?} {params:?}\n  ours   {ours:?}\n  theirs {theirs:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

/// The example at the top of A1111's prompt_parser.py (steps = 100), written there by hand.
#[test]
fn a1111_comment_example() {
    let prompt = "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]".to_string();
    let got = &get_learned_conditioning_prompt_schedules(&[prompt], 100)[0];
    let expected = [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ];
    let expected: Vec<(usize, String)> = expected.iter().map(|(s, t)| (*s, t.to_string())).collect();
    assert_eq!(got, &expected);
}

/// Hand-derived: a `|` outside an alternation makes the prompt unparseable, so it is used
/// verbatim even though it contains an edit.
#[test]
fn unparseable_prompt_is_verbatim() {
    let got = prompt_schedule("a|b [c:d:2]", &ScheduleParams::new(10));
    assert_eq!(got, vec![(10, "a|b [c:d:2]".to_string())]);
}

/// Hand-derived: new scheduling reads "2" as step 2 and "0.2" as int(0.2 * 10) = 2; old
/// scheduling reads "1.0" as step 1 (not < 1), new reads it as int(1.0 * 10) = 10.
#[test]
fn decimal_point_rules() {
    let new = ScheduleParams::new(10);
    let old = ScheduleParams { use_old_scheduling: true, ..new };
    assert_eq!(prompt_schedule("[a:b:2]", &new)[0].0, 2);
    assert_eq!(prompt_schedule("[a:b:0.2]", &new)[0].0, 2);
    assert_eq!(prompt_schedule("[a:b:1.0]", &new), vec![(10, "a".to_string())]);
    assert_eq!(prompt_schedule("[a:b:1.0]", &old)[0], (1, "a".to_string()));
}
