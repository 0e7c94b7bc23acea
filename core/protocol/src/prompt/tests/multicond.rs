use crate::prompt::multicond::{get_multicond_prompt_list, split_and, split_weight};

// Expected values derived by hand from A1111's regexes `\bAND\b` and
// `^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$`.

#[test]
fn splits_on_whole_word_and_only() {
    assert_eq!(split_and("a AND b"), vec!["a ", " b"]);
    assert_eq!(split_and("ANDROID AND_x xAND"), vec!["ANDROID AND_x xAND"]);
    assert_eq!(split_and("AND"), vec!["", ""]);
    assert_eq!(split_and("a,AND,b"), vec!["a,", ",b"]);
    assert_eq!(split_and("a and b"), vec!["a and b"]);
}

#[test]
fn trailing_weights() {
    assert_eq!(split_weight(" a (shiny) sphere :0.6"), (" a (shiny) sphere", 0.6));
    assert_eq!(split_weight("cat : -1.5  "), ("cat", -1.5));
    assert_eq!(split_weight("cat:2."), ("cat", 2.0));
    assert_eq!(split_weight("cat:.5"), ("cat", 0.5));
    assert_eq!(split_weight("cat  "), ("cat", 1.0));
    // Not a number after the last colon: no weight, the colon stays in the text.
    assert_eq!(split_weight("[a:b:0.5] cube "), ("[a:b:0.5] cube", 1.0));
    assert_eq!(split_weight("cat:1.2.3"), ("cat:1.2.3", 1.0));
    assert_eq!(split_weight("cat:1e5"), ("cat:1e5", 1.0));
}

#[test]
fn deduplicates_sub_prompts_over_the_batch() {
    let prompts = vec!["x AND y:0.5".to_string(), "y AND z".to_string(), "x AND y:0.5".to_string()];
    let list = get_multicond_prompt_list(&prompts);
    // Leading whitespace stays in the text, so " y" and "y" are different sub-prompts.
    assert_eq!(list.flat, vec!["x", " y", "y", " z"]);
    assert_eq!(list.per_prompt, vec![vec![(0, 1.0), (1, 0.5)], vec![(2, 1.0), (3, 1.0)], vec![(0, 1.0), (1, 0.5)]]);
}
