//! "Prompt matrix" (`scripts/prompt_matrix.py`): the prompt (or negative prompt) is split at `|`
//! into a fixed first part and optional parts; one image per combination of optional parts, in
//! one `process_images` run with per-image prompts, then a grid of them labelled with the parts
//! (active where the part is in that cell's prompt) in front of the images.

use serde_json::{Map, Value};

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::images::annotations::draw_prompt_matrix;

use super::{annotation_error, grid_colors, image_grid, patch_info, with_fields};
use crate::processing::{
    GenerationRequest, ImagePlan, Processed, ProcessingContext, fixed_seed, process_images_planned,
};
use crate::runner::RgbImage;

/// The script's title as the API matches it (case-insensitively).
pub const PROMPT_MATRIX: &str = "prompt matrix";

/// Most combinations one request may ask for (A1111 has no bound; 13 parts are 4096 images).
const MAX_COMBINATIONS: usize = 4096;

/// Whether a request runs "Prompt matrix".
pub fn is_prompt_matrix(request: &GenerationRequest) -> bool {
    request.field("script_name").as_str().is_some_and(|n| n.eq_ignore_ascii_case(PROMPT_MATRIX))
}

/// `script_args` = [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]
/// (the UI's order); an empty list takes the UI's defaults.
#[derive(Debug, Clone, PartialEq)]
struct Args {
    put_at_start: bool,
    different_seeds: bool,
    negative: bool,
    delimiter: &'static str,
    margin: usize,
}

fn bad_args(message: String) -> ApiError {
    ApiError::http(
        422,
        format!(
            "script 'Prompt matrix' takes [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]: {message}"
        ),
    )
}

impl Args {
    fn parse(args: &[Value]) -> Result<Self, ApiError> {
        if args.is_empty() {
            return Ok(Self {
                put_at_start: false,
                different_seeds: false,
                negative: false,
                delimiter: ", ",
                margin: 0,
            });
        }
        if args.len() != 5 {
            return Err(bad_args(format!("got {} arguments", args.len())));
        }
        let flag =
            |i: usize, name: &str| args[i].as_bool().ok_or_else(|| bad_args(format!("{name} must be true or false")));
        let negative = match args[2].as_str() {
            Some("positive") => false,
            Some("negative") => true,
            // A1111 raises ValueError for these.
            other => {
                return Err(ApiError::python(
                    "ValueError",
                    format!("Unknown prompt type {}", text_of(other, &args[2])),
                ));
            }
        };
        let delimiter = match args[3].as_str() {
            Some("comma") => ", ",
            Some("space") => " ",
            other => {
                return Err(ApiError::python(
                    "ValueError",
                    format!("Unknown variations delimiter {}", text_of(other, &args[3])),
                ));
            }
        };
        // The UI's slider: 0 to 500.
        let margin = args[4]
            .as_f64()
            .filter(|m| m.is_finite() && (0.0..=500.0).contains(m))
            .ok_or_else(|| bad_args("margin_size must be a number from 0 to 500".into()))?
            as usize;
        Ok(Self {
            put_at_start: flag(0, "put_at_start")?,
            different_seeds: flag(1, "different_seeds")?,
            negative,
            delimiter,
            margin,
        })
    }
}

fn text_of(s: Option<&str>, v: &Value) -> String {
    s.map(str::to_string).unwrap_or_else(|| v.to_string())
}

/// Every combination's prompt, combination `k` taking the optional parts whose bit is set in `k`
/// (each part stripped of spaces, then of commas).
fn combinations(parts: &[&str], args: &Args) -> Vec<String> {
    let optional = parts.get(1..).unwrap_or_default();
    let first = parts.first().copied().unwrap_or_default();
    (0..1usize << optional.len())
        .map(|k| {
            let selected =
                optional.iter().enumerate().filter(|(n, _)| k & (1 << n) != 0).map(|(_, t)| t.trim().trim_matches(','));
            let texts: Vec<&str> = if args.put_at_start {
                selected.chain(std::iter::once(first)).collect()
            } else {
                std::iter::once(first).chain(selected).collect()
            };
            texts.join(args.delimiter)
        })
        .collect()
}

/// Runs "Prompt matrix" for a txt2img or img2img request.
pub async fn prompt_matrix(ctx: &ProcessingContext, request: GenerationRequest) -> Result<Processed, ApiError> {
    let args = Args::parse(request.field("script_args").as_array().map(Vec::as_slice).unwrap_or_default())?;
    let text_field = if args.negative { "negative_prompt" } else { "prompt" };
    let original = request.field(text_field).as_str().unwrap_or_default().to_string();
    let parts: Vec<&str> = original.split('|').collect();
    if parts.len() > MAX_COMBINATIONS.ilog2() as usize + 1 {
        return Err(ApiError::http(
            422,
            format!("Prompt matrix: {} optional parts make more than {MAX_COMBINATIONS} images", parts.len() - 1),
        ));
    }
    let prompts = combinations(&parts, &args);
    let batch_size = request.field("batch_size").as_i64().unwrap_or(1).max(1) as usize;
    let n_iter = prompts.len().div_ceil(batch_size);
    let seed = fixed_seed(request.field("seed").as_i64().unwrap_or(-1));
    let seeds = (0..prompts.len() as i64).map(|i| seed + if args.different_seeds { i } else { 0 }).collect();
    let run = with_fields(
        request,
        &[
            ("script_name", Value::Null),
            ("script_args", Value::Array(vec![])),
            ("n_iter", Value::from(n_iter)),
            ("seed", Value::from(seed)),
        ],
    );
    let plan = if args.negative {
        ImagePlan { negative_prompts: Some(prompts.clone()), seeds, ..Default::default() }
    } else {
        ImagePlan { prompts: Some(prompts.clone()), seeds, ..Default::default() }
    };
    let mut processed = Box::pin(process_images_planned(ctx, run, &Map::new(), Some(&plan))).await?;
    // An interrupted run has fewer images than cells: A1111 fails on the grid; the images stand.
    if processed.images.len() != prompts.len() {
        return Ok(processed);
    }
    let colors = grid_colors(&processed.options);
    let first = &processed.images[0];
    let cell = (first.width as usize, first.height as usize);
    let grid = image_grid(&processed.images, 1 << ((parts.len() - 1) / 2), colors.background);
    let labels: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
    let grid = draw_prompt_matrix(&grid.to_raster(), cell, &labels, args.margin, colors).map_err(annotation_error)?;
    processed.images.insert(0, RgbImage::from_raster(grid));
    let first_infotext = processed.infotexts.first().cloned().unwrap_or_default();
    processed.infotexts.insert(0, first_infotext);
    processed.index_of_first_image = 1;
    patch_info(
        &mut processed.info,
        vec![("infotexts", Value::from(processed.infotexts.clone())), ("index_of_first_image", Value::from(1))],
    );
    Ok(processed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_follow_a1111s_bit_order() {
        let args = Args::parse(&[]).unwrap();
        let parts: Vec<&str> = "a cat| red , | big".split('|').collect();
        // Python's " red , ".strip().strip(",") is "red " (the space before the comma stays).
        assert_eq!(combinations(&parts, &args), ["a cat", "a cat, red ", "a cat, big", "a cat, red , big"]);
        let at_start = Args { put_at_start: true, delimiter: " ", ..args };
        assert_eq!(combinations(&parts, &at_start), ["a cat", "red  a cat", "big a cat", "red  big a cat"]);
        assert_eq!(combinations(&["solo"], &at_start), ["solo"]);
    }

    #[test]
    fn arguments_are_checked() {
        let ok = Args::parse(&serde_json::from_str::<Vec<Value>>(r#"[true, true, "negative", "space", 8]"#).unwrap());
        assert_eq!(
            ok.unwrap(),
            Args { put_at_start: true, different_seeds: true, negative: true, delimiter: " ", margin: 8 }
        );
        assert_eq!(Args::parse(&[Value::Bool(true)]).unwrap_err().status, 422);
        let bad_type =
            Args::parse(&serde_json::from_str::<Vec<Value>>(r#"[false, false, "both", "comma", 0]"#).unwrap());
        assert_eq!(bad_type.unwrap_err().error, "ValueError");
        let huge_margin =
            Args::parse(&serde_json::from_str::<Vec<Value>>(r#"[false, false, "positive", "comma", 1e9]"#).unwrap());
        assert_eq!(huge_margin.unwrap_err().status, 422);
    }
}
