//! "X/Y/Z plot" (`scripts/xyz_grid.py`): up to three axes, each a setting and a list of values;
//! one generation per cell (its first image), a labelled grid per Z value, and a grid of those
//! grids in front, with infotexts naming the axes.
//!
//! `script_args` are the UI's 18 controls in order: x type (index into the tab's axis list), x
//! values (text), x values (dropdown list), the same for y and z, draw legend, include lone
//! images, include sub-grids, keep -1 for seeds, vary seeds x / y / z, grid margin, csv mode.

use serde_json::{Map, Value};

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::choices::SamplerKind;
use sdapi_protocol::images::annotations::{GridAnnotation, draw_grid_annotations};
use sdapi_protocol::infotext::writer::quote;
use sdapi_protocol::python_json::float_repr;

use super::xyz_values::{AxisValueError, csv_join, csv_values, float_values, int_values, permutations};
use super::{annotation_error, grid_colors, image_grid, patch_info, with_fields};
use crate::processing::{GenerationRequest, Processed, ProcessingContext, fixed_seed, process_images_with};
use crate::runner::RgbImage;

/// The script's title as the API matches it (case-insensitively).
pub const XYZ_PLOT: &str = "x/y/z plot";

/// Most values one axis may expand to, and most cells one plot may have (A1111 bounds neither;
/// the grid's megapixels and the request's work bound what runs).
const MAX_AXIS_VALUES: usize = 1000;
const MAX_CELLS: usize = 1000;

pub fn is_xyz_plot(request: &GenerationRequest) -> bool {
    request.field("script_name").as_str().is_some_and(|n| n.eq_ignore_ascii_case(XYZ_PLOT))
}

/// How an axis reads its values (`AxisOption.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Text,
    Int,
    Float,
    /// `str_permutations`: every order of the values ("Prompt order").
    Permutations,
}

/// What an axis value does to the cell's request (`AxisOption.apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    Nothing,
    /// `apply_field`: a request field.
    Field(&'static str),
    /// `apply_override`: an `override_settings` entry (`true` when the value is "True"/"False").
    Override(&'static str, bool),
    PromptReplace,
    PromptOrder,
    Checkpoint,
    Vae,
    Styles,
    UniPcOrder,
    FaceRestore,
    Size,
}

/// How a value is labelled (`AxisOption.format_value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `label: value`.
    WithLabel,
    Value,
    JoinList,
    Nothing,
    /// The file name of a path.
    RemovePath,
}

/// Checks of all values before any cell runs (`AxisOption.confirm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    None,
    Samplers,
    Checkpoints,
    CheckpointsOrNone,
}

/// Which tab lists an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Both,
    Txt2Img,
    Img2Img,
}

/// One entry of A1111's `axis_options`.
#[derive(Debug, Clone, Copy)]
struct AxisOption {
    label: &'static str,
    kind: ValueKind,
    apply: Apply,
    format: Format,
    confirm: Confirm,
    /// Switching cost: the costliest axis is iterated outermost (model loads).
    cost: f64,
    /// The UI offers a dropdown (its values come from the dropdown list unless csv mode).
    choices: bool,
    tab: Tab,
}

const fn axis(label: &'static str, kind: ValueKind, apply: Apply) -> AxisOption {
    AxisOption {
        label,
        kind,
        apply,
        format: Format::WithLabel,
        confirm: Confirm::None,
        cost: 0.0,
        choices: false,
        tab: Tab::Both,
    }
}

use Apply::{Field, Override};
use ValueKind::{Float, Int, Text};

/// A1111 v1.10.1's `axis_options`, in order (the UI's index is into this list filtered by tab).
const AXIS_OPTIONS: &[AxisOption] = &[
    AxisOption { format: Format::Nothing, ..axis("Nothing", Text, Apply::Nothing) },
    axis("Seed", Int, Field("seed")),
    axis("Var. seed", Int, Field("subseed")),
    axis("Var. strength", Float, Field("subseed_strength")),
    axis("Steps", Int, Field("steps")),
    AxisOption { tab: Tab::Txt2Img, ..axis("Hires steps", Int, Field("hr_second_pass_steps")) },
    axis("CFG Scale", Float, Field("cfg_scale")),
    AxisOption { tab: Tab::Img2Img, ..axis("Image CFG Scale", Float, Field("image_cfg_scale")) },
    AxisOption { format: Format::Value, ..axis("Prompt S/R", Text, Apply::PromptReplace) },
    AxisOption { format: Format::JoinList, ..axis("Prompt order", ValueKind::Permutations, Apply::PromptOrder) },
    AxisOption {
        format: Format::Value,
        confirm: Confirm::Samplers,
        choices: true,
        tab: Tab::Txt2Img,
        ..axis("Sampler", Text, Field("sampler_name"))
    },
    AxisOption {
        confirm: Confirm::Samplers,
        choices: true,
        tab: Tab::Txt2Img,
        ..axis("Hires sampler", Text, Field("hr_sampler_name"))
    },
    AxisOption {
        format: Format::Value,
        confirm: Confirm::Samplers,
        choices: true,
        tab: Tab::Img2Img,
        ..axis("Sampler", Text, Field("sampler_name"))
    },
    AxisOption {
        format: Format::RemovePath,
        confirm: Confirm::Checkpoints,
        cost: 1.0,
        choices: true,
        ..axis("Checkpoint name", Text, Apply::Checkpoint)
    },
    axis("Negative Guidance minimum sigma", Float, Field("s_min_uncond")),
    axis("Sigma Churn", Float, Field("s_churn")),
    axis("Sigma min", Float, Field("s_tmin")),
    axis("Sigma max", Float, Field("s_tmax")),
    axis("Sigma noise", Float, Field("s_noise")),
    AxisOption { choices: true, ..axis("Schedule type", Text, Field("scheduler")) },
    axis("Schedule min sigma", Float, Override("sigma_min", false)),
    axis("Schedule max sigma", Float, Override("sigma_max", false)),
    axis("Schedule rho", Float, Override("rho", false)),
    axis("Beta schedule alpha", Float, Override("beta_dist_alpha", false)),
    axis("Beta schedule beta", Float, Override("beta_dist_beta", false)),
    axis("Eta", Float, Field("eta")),
    axis("Clip skip", Int, Override("CLIP_stop_at_last_layers", false)),
    axis("Denoising", Float, Field("denoising_strength")),
    axis("Initial noise multiplier", Float, Field("initial_noise_multiplier")),
    axis("Extra noise", Float, Override("img2img_extra_noise", false)),
    AxisOption { choices: true, tab: Tab::Txt2Img, ..axis("Hires upscaler", Text, Field("hr_upscaler")) },
    AxisOption { tab: Tab::Img2Img, ..axis("Cond. Image Mask Weight", Float, Field("inpainting_mask_weight")) },
    AxisOption { cost: 0.7, choices: true, ..axis("VAE", Text, Apply::Vae) },
    AxisOption { choices: true, ..axis("Styles", Text, Apply::Styles) },
    AxisOption { cost: 0.5, ..axis("UniPC Order", Int, Apply::UniPcOrder) },
    AxisOption { format: Format::Value, ..axis("Face restore", Text, Apply::FaceRestore) },
    axis("Token merging ratio", Float, Override("token_merging_ratio", false)),
    axis("Token merging ratio high-res", Float, Override("token_merging_ratio_hr", false)),
    AxisOption {
        choices: true,
        ..axis("Always discard next-to-last sigma", Text, Override("always_discard_next_to_last_sigma", true))
    },
    AxisOption { choices: true, ..axis("SGM noise multiplier", Text, Override("sgm_noise_multiplier", true)) },
    AxisOption {
        format: Format::RemovePath,
        confirm: Confirm::CheckpointsOrNone,
        cost: 1.0,
        choices: true,
        ..axis("Refiner checkpoint", Text, Field("refiner_checkpoint"))
    },
    axis("Refiner switch at", Float, Field("refiner_switch_at")),
    AxisOption { choices: true, ..axis("RNG source", Text, Override("randn_source", false)) },
    AxisOption { cost: 0.9, choices: true, ..axis("FP8 mode", Text, Override("fp8_storage", false)) },
    axis("Size", Text, Apply::Size),
];

/// The axes of a tab, in the UI's order (what `x_type` indexes).
fn tab_axes(img2img: bool) -> Vec<&'static AxisOption> {
    AXIS_OPTIONS
        .iter()
        .filter(|a| match a.tab {
            Tab::Both => true,
            Tab::Txt2Img => !img2img,
            Tab::Img2Img => img2img,
        })
        .collect()
}

/// The axis names of a tab in the UI's order: the choices of `x_type`, `y_type`, `z_type`.
pub fn axis_labels(img2img: bool) -> Vec<&'static str> {
    tab_axes(img2img).iter().map(|a| a.label).collect()
}

/// One value of an axis.
#[derive(Debug, Clone, PartialEq)]
enum AxisValue {
    Int(i64),
    Float(f64),
    Text(String),
    Order(Vec<String>),
}

impl AxisValue {
    fn to_json(&self) -> Value {
        match self {
            AxisValue::Int(v) => Value::from(*v),
            AxisValue::Float(v) => Value::from(*v),
            AxisValue::Text(v) => Value::from(v.clone()),
            AxisValue::Order(v) => Value::from(v.clone()),
        }
    }

    fn text(&self) -> String {
        match self {
            AxisValue::Int(v) => v.to_string(),
            // `round(x, 8)` before printing.
            AxisValue::Float(v) => float_repr(format!("{v:.8}").parse::<f64>().unwrap_or(*v)),
            AxisValue::Text(v) => v.clone(),
            AxisValue::Order(v) => v.join(", "),
        }
    }
}

/// The parsed `script_args`.
struct Args {
    axes: [(&'static AxisOption, String, Vec<String>); 3],
    draw_legend: bool,
    include_lone_images: bool,
    include_sub_grids: bool,
    no_fixed_seeds: bool,
    vary_seeds: [bool; 3],
    margin: usize,
    csv_mode: bool,
}

fn bad_args(message: impl std::fmt::Display) -> ApiError {
    ApiError::http(
        422,
        format!("script 'X/Y/Z plot' takes 18 arguments (x type, x values, x values list, … csv mode): {message}"),
    )
}

impl Args {
    fn parse(args: &[Value], img2img: bool) -> Result<Self, ApiError> {
        if args.len() != 18 {
            return Err(bad_args(format!("got {} arguments", args.len())));
        }
        let options = tab_axes(img2img);
        let axis_at = |i: usize| -> Result<(&'static AxisOption, String, Vec<String>), ApiError> {
            // `x_type or 0`: null picks "Nothing".
            let index = match &args[i] {
                Value::Null => 0,
                v => v.as_u64().ok_or_else(|| bad_args(format!("argument {i} must be an axis index")))? as usize,
            };
            let option =
                options.get(index).copied().ok_or_else(|| ApiError::python("IndexError", "list index out of range"))?;
            let text = args[i + 1].as_str().unwrap_or_default().to_string();
            let list = match &args[i + 2] {
                Value::Array(items) => {
                    items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect()
                }
                _ => Vec::new(),
            };
            Ok((option, text, list))
        };
        let flag = |i: usize| args[i].as_bool().unwrap_or(false);
        let margin = match &args[16] {
            Value::Null => 0.0,
            v => v
                .as_f64()
                .filter(|m| m.is_finite() && (0.0..=500.0).contains(m))
                .ok_or_else(|| bad_args("margin_size must be from 0 to 500"))?,
        } as usize;
        Ok(Self {
            axes: [axis_at(0)?, axis_at(3)?, axis_at(6)?],
            draw_legend: flag(9),
            include_lone_images: flag(10),
            include_sub_grids: flag(11),
            no_fixed_seeds: flag(12),
            vary_seeds: [flag(13), flag(14), flag(15)],
            margin,
            csv_mode: flag(17),
        })
    }
}

fn value_error(label: &str, e: AxisValueError) -> ApiError {
    ApiError::python("ValueError", format!("{label}: {e}"))
}

/// `process_axis`: the axis's values, parsed, expanded and confirmed.
fn axis_values(
    ctx: &ProcessingContext,
    option: &AxisOption,
    text: &str,
    list: &[String],
    csv_mode: bool,
) -> Result<Vec<AxisValue>, ApiError> {
    if option.apply == Apply::Nothing {
        return Ok(vec![AxisValue::Int(0)]);
    }
    let raw = if option.choices && !csv_mode { list.to_vec() } else { csv_values(text) };
    let label = option.label;
    let values: Vec<AxisValue> = match option.kind {
        ValueKind::Int => int_values(&raw, MAX_AXIS_VALUES)
            .map_err(|e| value_error(label, e))?
            .into_iter()
            .map(AxisValue::Int)
            .collect(),
        ValueKind::Float => float_values(&raw, MAX_AXIS_VALUES)
            .map_err(|e| value_error(label, e))?
            .into_iter()
            .map(AxisValue::Float)
            .collect(),
        ValueKind::Permutations => permutations(&raw, MAX_AXIS_VALUES)
            .map_err(|e| value_error(label, e))?
            .into_iter()
            .map(AxisValue::Order)
            .collect(),
        ValueKind::Text => {
            if raw.len() > MAX_AXIS_VALUES {
                return Err(value_error(label, AxisValueError::TooMany { limit: MAX_AXIS_VALUES }));
            }
            raw.into_iter().map(AxisValue::Text).collect()
        }
    };
    let models = ctx.models.read().unwrap_or_else(|e| e.into_inner());
    for value in &values {
        let text = value.text();
        let known = match option.confirm {
            Confirm::None => true,
            Confirm::Samplers => sampler_known(&text),
            Confirm::Checkpoints => models.find_checkpoint(&text).is_some(),
            Confirm::CheckpointsOrNone => {
                matches!(text.as_str(), "" | "None" | "none") || models.find_checkpoint(&text).is_some()
            }
        };
        if !known {
            let what = if option.confirm == Confirm::Samplers { "sampler" } else { "checkpoint" };
            return Err(ApiError::python("RuntimeError", format!("Unknown {what}: {text}")));
        }
    }
    Ok(values)
}

/// `x.lower() in sd_samplers.samplers_map` (names and aliases, lower-cased).
fn sampler_known(name: &str) -> bool {
    let lower = name.to_lowercase();
    SamplerKind::ALL.into_iter().any(|k| k.name().to_lowercase() == lower || k.aliases().contains(&lower.as_str()))
}

/// `opt.format_value`.
fn label_of(option: &AxisOption, value: &AxisValue) -> String {
    match option.format {
        Format::WithLabel => format!("{}: {}", option.label, value.text()),
        Format::Value | Format::JoinList => value.text(),
        Format::Nothing => String::new(),
        Format::RemovePath => value.text().rsplit(['/', '\\']).next().unwrap_or_default().to_string(),
    }
}

/// The cell's request: the axis value applied (`opt.apply(pc, x, xs)`).
fn apply(
    ctx: &ProcessingContext,
    request: &mut GenerationRequest,
    option: &AxisOption,
    value: &AxisValue,
    values: &[AxisValue],
) -> Result<(), ApiError> {
    let text_field =
        |request: &GenerationRequest, name: &str| request.field(name).as_str().unwrap_or_default().to_string();
    let set_override = |request: &mut GenerationRequest, key: &str, v: Value| {
        let mut overrides = request.field("override_settings").as_object().cloned().unwrap_or_default();
        overrides.insert(key.to_string(), v);
        request.set_field("override_settings", Value::Object(overrides));
    };
    match option.apply {
        Apply::Nothing => {}
        Apply::Field(name) => request.set_field(name, value.to_json()),
        Apply::Override(key, boolean) => {
            let v =
                if boolean { Value::Bool(value.text() == "True" || value.text() == "true") } else { value.to_json() };
            set_override(request, key, v);
        }
        Apply::PromptReplace => {
            let (search, with) = (values.first().map(AxisValue::text).unwrap_or_default(), value.text());
            let (prompt, negative) = (text_field(request, "prompt"), text_field(request, "negative_prompt"));
            if !prompt.contains(&search) && !negative.contains(&search) {
                return Err(ApiError::python(
                    "RuntimeError",
                    format!("Prompt S/R did not find {search} in prompt or negative prompt."),
                ));
            }
            request.set_field("prompt", Value::from(prompt.replace(&search, &with)));
            request.set_field("negative_prompt", Value::from(negative.replace(&search, &with)));
        }
        Apply::PromptOrder => {
            if let AxisValue::Order(tokens) = value {
                let prompt = reorder_prompt(&text_field(request, "prompt"), tokens);
                request.set_field("prompt", Value::from(prompt));
            }
        }
        Apply::Checkpoint => {
            let text = value.text();
            let name =
                ctx.models.read().unwrap_or_else(|e| e.into_inner()).find_checkpoint(&text).map(|c| c.name.clone());
            let name = name.ok_or_else(|| ApiError::python("RuntimeError", format!("Unknown checkpoint: {text}")))?;
            set_override(request, "sd_model_checkpoint", Value::from(name));
        }
        Apply::Vae => {
            let wanted = value.text().trim().to_lowercase();
            let name = match wanted.as_str() {
                "auto" | "automatic" => "Automatic".to_string(),
                "none" => "None".to_string(),
                _ => {
                    let models = ctx.models.read().unwrap_or_else(|e| e.into_inner());
                    let found = models.sd_vae_items().into_iter().find(|v| v.model_name.to_lowercase() == wanted);
                    found.map_or_else(|| "Automatic".to_string(), |v| v.model_name)
                }
            };
            set_override(request, "sd_vae", Value::from(name));
        }
        Apply::Styles => {
            let mut styles = request.field("styles").as_array().cloned().unwrap_or_default();
            styles.extend(value.text().split(',').map(|s| Value::from(s.to_string())));
            request.set_field("styles", Value::Array(styles));
        }
        Apply::UniPcOrder => {
            let steps = request.field("steps").as_i64().unwrap_or(50);
            let order = match value {
                AxisValue::Int(v) => (*v).min(steps - 1),
                other => other.text().parse::<i64>().unwrap_or(0).min(steps - 1),
            };
            set_override(request, "uni_pc_order", Value::from(order));
        }
        Apply::FaceRestore => {
            let text = value.text().to_lowercase();
            let active = matches!(text.as_str(), "codeformer" | "gfpgan" | "true" | "yes" | "y" | "1");
            request.set_field("restore_faces", Value::Bool(active));
        }
        Apply::Size => {
            let text = value.text();
            let (w, h) = text.split_once('x').unwrap_or((text.as_str(), ""));
            match (w.trim().parse::<i64>(), h.trim().parse::<i64>()) {
                (Ok(w), Ok(h)) => {
                    request.set_field("width", Value::from(w));
                    request.set_field("height", Value::from(h));
                }
                _ => tracing::warn!("Invalid size in XYZ plot: {text}"),
            }
        }
    }
    Ok(())
}

/// `apply_order`: the tokens taken out of the prompt in order of first appearance and put back
/// in the order given.
fn reorder_prompt(prompt: &str, tokens: &[String]) -> String {
    let position = |t: &String| prompt.find(t.as_str()).map_or(-1, |p| p as i64);
    let mut order: Vec<&String> = tokens.iter().collect();
    order.sort_by_key(|t| position(t));
    let mut rest = prompt.to_string();
    let mut parts = Vec::new();
    for token in order {
        // Python's find gives -1 when absent: the slice then takes all but the last character.
        match rest.find(token.as_str()) {
            Some(n) => {
                parts.push(rest[..n].to_string());
                rest = rest[n + token.len()..].to_string();
            }
            None => {
                let cut = rest.char_indices().last().map_or(0, |(i, _)| i);
                parts.push(rest[..cut].to_string());
                rest = rest[cut..].chars().skip(token.chars().count().saturating_sub(1)).collect();
            }
        }
    }
    let mut out = String::new();
    for (part, token) in parts.iter().zip(tokens) {
        out.push_str(part);
        out.push_str(token);
    }
    out + &rest
}

/// Cells in A1111's processing order: the costliest axis outermost.
fn cell_order(costs: [f64; 3], lens: [usize; 3]) -> Vec<[usize; 3]> {
    let [x, y, z] = costs;
    let (first, second) = if x > y && x > z {
        (0, if y > z { 1 } else { 2 })
    } else if y > x && y > z {
        (1, if x > z { 0 } else { 2 })
    } else if z > x && z > y {
        (2, if x > y { 0 } else { 1 })
    } else {
        (2, 1)
    };
    let third = 3 - first - second;
    let mut out = Vec::with_capacity(lens.iter().product());
    for a in 0..lens[first] {
        for b in 0..lens[second] {
            for c in 0..lens[third] {
                let mut idx = [0; 3];
                (idx[first], idx[second], idx[third]) = (a, b, c);
                out.push(idx);
            }
        }
    }
    out
}

/// The axis entries A1111 adds to a grid's infotext: `Script`, then per axis `X Type`,
/// `X Values` and, for seed axes with fixed seeds, `Fixed X Values`.
fn grid_entries(args: &Args, values: &[Vec<AxisValue>; 3], axes: &[usize]) -> Vec<(String, Value)> {
    let mut entries = vec![("Script".to_string(), Value::from("X/Y/Z plot"))];
    for &i in axes {
        let (option, text, list) = &args.axes[i];
        if option.apply == Apply::Nothing {
            continue;
        }
        let name = ["X", "Y", "Z"][i];
        let shown = if option.choices && !args.csv_mode { csv_join(list) } else { text.clone() };
        entries.push((format!("{name} Type"), Value::from(option.label)));
        entries.push((format!("{name} Values"), Value::from(shown)));
        if matches!(option.label, "Seed" | "Var. seed") && !args.no_fixed_seeds {
            let fixed: Vec<String> = values[i].iter().map(AxisValue::text).collect();
            entries.push((format!("Fixed {name} Values"), Value::from(fixed.join(", "))));
        }
    }
    entries
}

/// An infotext with `entries` added to its parameters, before `Version` as A1111 orders them.
fn with_entries(infotext: &str, entries: &[(String, Value)]) -> String {
    let added: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {}", quote(v))).collect();
    if added.is_empty() {
        return infotext.to_string();
    }
    let added = added.join(", ");
    match infotext.rfind(", Version: ") {
        Some(at) => format!("{}, {added}{}", &infotext[..at], &infotext[at..]),
        None if infotext.is_empty() => added,
        None => format!("{infotext}, {added}"),
    }
}

/// Runs "X/Y/Z plot".
pub async fn xyz_plot(ctx: &ProcessingContext, request: GenerationRequest) -> Result<Processed, ApiError> {
    let img2img = matches!(request, GenerationRequest::Img2Img { .. });
    let args = Args::parse(request.field("script_args").as_array().map(Vec::as_slice).unwrap_or_default(), img2img)?;
    let mut base = with_fields(request, &[("script_name", Value::Null), ("script_args", Value::Array(vec![]))]);
    if !args.no_fixed_seeds {
        let seed = fixed_seed(base.field("seed").as_i64().unwrap_or(-1));
        base.set_field("seed", Value::from(seed));
    }
    let options = ctx.options.read().unwrap_or_else(|e| e.into_inner()).clone();
    if !options.get("return_grid").and_then(Value::as_bool).unwrap_or(true) {
        base.set_field("batch_size", Value::from(1));
    }
    let mut values: [Vec<AxisValue>; 3] = Default::default();
    for (i, (option, text, list)) in args.axes.iter().enumerate() {
        values[i] = axis_values(ctx, option, text, list, args.csv_mode)?;
        if !args.no_fixed_seeds && matches!(option.label, "Seed" | "Var. seed") {
            for v in values[i].iter_mut() {
                if *v == AxisValue::Int(-1) {
                    *v = AxisValue::Int(fixed_seed(-1));
                }
            }
        }
    }
    let lens = [values[0].len(), values[1].len(), values[2].len()];
    let cells: usize = lens.iter().product();
    if cells == 0 {
        return Err(ApiError::python("ValueError", "X/Y/Z plot: an axis has no values"));
    }
    if cells > MAX_CELLS {
        return Err(ApiError::http(422, format!("X/Y/Z plot: {cells} cells, more than {MAX_CELLS}")));
    }
    let (width, height) = (base.field("width").as_i64().unwrap_or(512), base.field("height").as_i64().unwrap_or(512));
    let max_mp = options.get("img_max_size_mp").and_then(Value::as_f64).unwrap_or(200.0);
    let grid_mp = (cells as f64 * width as f64 * height as f64 / 1e6).round();
    if grid_mp >= max_mp {
        return Err(ApiError::python(
            "AssertionError",
            format!(
                "Error: Resulting grid would be too large ({grid_mp} MPixels) (max configured size is {max_mp} MPixels)"
            ),
        ));
    }
    let labels: Vec<Vec<String>> =
        (0..3).map(|i| values[i].iter().map(|v| label_of(args.axes[i].0, v)).collect()).collect();

    // The cells, costliest axis outermost; a failed generation leaves an empty cell.
    let index = |[ix, iy, iz]: [usize; 3]| ix + iy * lens[0] + iz * lens[0] * lens[1];
    let mut results: Vec<Option<Processed>> = (0..cells).map(|_| None).collect();
    let seed = base.field("seed").as_i64().unwrap_or(-1);
    for at in cell_order([args.axes[0].0.cost, args.axes[1].0.cost, args.axes[2].0.cost], lens) {
        if ctx.runner.state().is_interrupted() && results.iter().any(Option::is_some) {
            break;
        }
        let mut cell = base.clone();
        for i in 0..3 {
            apply(ctx, &mut cell, args.axes[i].0, &values[i][at[i]], &values[i])?;
        }
        let (xdim, ydim) = (if args.vary_seeds[0] { lens[0] } else { 1 }, if args.vary_seeds[1] { lens[1] } else { 1 });
        let mut cell_seed = cell.field("seed").as_i64().unwrap_or(seed);
        if args.vary_seeds[0] {
            cell_seed += at[0] as i64;
        }
        if args.vary_seeds[1] {
            cell_seed += (at[1] * xdim) as i64;
        }
        if args.vary_seeds[2] {
            cell_seed += (at[2] * xdim * ydim) as i64;
        }
        cell.set_field("seed", Value::from(cell_seed));
        match Box::pin(process_images_with(ctx, cell, &Map::new())).await {
            Ok(processed) => results[index(at)] = Some(processed),
            Err(e) => tracing::warn!(error = %e.detail, "X/Y/Z plot: a cell failed; it stays empty"),
        }
    }
    let Some(template) = results.iter().flatten().next().cloned() else {
        return Err(ApiError::runtime("X/Y/Z plot: no cell produced an image"));
    };
    let empty = |like: Option<&RgbImage>| {
        let (w, h) = like.map_or((width.max(0) as u32, height.max(0) as u32), |i| (i.width, i.height));
        RgbImage { width: w, height: h, pixels: vec![0; w as usize * h as usize * 3] }
    };
    let first_image = results.iter().flatten().find_map(|p| p.images.first()).cloned();
    let mut images: Vec<RgbImage> = Vec::with_capacity(cells + lens[2] + 1);
    let mut infotexts = Vec::with_capacity(cells + lens[2] + 1);
    let mut all_seeds = Vec::with_capacity(cells + lens[2]);
    let mut all_prompts = Vec::with_capacity(cells + lens[2]);
    for r in &results {
        let image = r.as_ref().and_then(|p| p.images.first().cloned());
        images.push(image.unwrap_or_else(|| empty(first_image.as_ref())));
        infotexts.push(r.as_ref().and_then(|p| p.infotexts.first().cloned()).unwrap_or_default());
        all_seeds.push(r.as_ref().and_then(|p| p.all_seeds.first().copied()).unwrap_or(-1));
        all_prompts.push(r.as_ref().map_or(Value::Null, prompt_of));
    }
    let colors = grid_colors(&template.options);
    let hor: Vec<Vec<GridAnnotation>> = labels[0].iter().map(|l| vec![GridAnnotation::new(l.clone(), true)]).collect();
    let ver: Vec<Vec<GridAnnotation>> = labels[1].iter().map(|l| vec![GridAnnotation::new(l.clone(), true)]).collect();
    let per_z = lens[0] * lens[1];
    for z in 0..lens[2] {
        let start = z * per_z + z;
        let cells_of_z = &images[start..start + per_z];
        let mut grid = image_grid(cells_of_z, lens[1], colors.background);
        if args.draw_legend {
            let cell = max_size(cells_of_z);
            let annotated = draw_grid_annotations(&grid.to_raster(), cell, &hor, &ver, args.margin, colors)
                .map_err(annotation_error)?;
            grid = RgbImage::from_raster(annotated);
        }
        images.insert(z, grid);
        all_prompts.insert(z, all_prompts[start].clone());
        all_seeds.insert(z, all_seeds[start]);
        infotexts.insert(z, infotexts[start].clone());
    }
    let sub_grids = &images[..lens[2]];
    let mut z_grid = image_grid(sub_grids, 1, colors.background);
    if args.draw_legend {
        let titles: Vec<Vec<GridAnnotation>> =
            labels[2].iter().map(|l| vec![GridAnnotation::new(l.clone(), true)]).collect();
        let annotated = draw_grid_annotations(
            &z_grid.to_raster(),
            max_size(sub_grids),
            &titles,
            &[vec![GridAnnotation::new("", true)]],
            0,
            colors,
        )
        .map_err(annotation_error)?;
        z_grid = RgbImage::from_raster(annotated);
    }
    images.insert(0, z_grid);
    infotexts.insert(0, infotexts[0].clone());
    // The grids' infotexts: the first cell of each Z with the axes named (X and Y for the
    // sub-grids; X, Y and Z for the main grid).
    for z in 0..lens[2] {
        let first_of_z = results[z * per_z].as_ref().and_then(|p| p.infotexts.first().cloned()).unwrap_or_default();
        infotexts[1 + z] = with_entries(&first_of_z, &grid_entries(&args, &values, &[0, 1]));
        if z == 0 {
            infotexts[0] = with_entries(&first_of_z, &grid_entries(&args, &values, &[0, 1, 2]));
        }
    }
    if !args.include_lone_images {
        images.truncate(lens[2] + 1);
    }
    if !args.include_sub_grids {
        // The lists hold every cell and sub-grid (and infotexts the main grid too): z entries
        // after the first always exist.
        for _ in 0..lens[2] {
            if images.len() > 1 {
                images.remove(1);
            }
            all_prompts.remove(1);
            all_seeds.remove(1);
            infotexts.remove(1);
        }
    }
    let mut processed = template;
    let seeds: Vec<Value> = all_seeds.iter().map(|s| Value::from(*s)).collect();
    patch_info(
        &mut processed.info,
        vec![
            ("infotexts", Value::from(infotexts.clone())),
            ("index_of_first_image", Value::from(1)),
            ("all_seeds", Value::Array(seeds)),
            ("all_prompts", Value::Array(all_prompts)),
        ],
    );
    processed.images = images;
    processed.infotexts = infotexts;
    processed.all_seeds = all_seeds;
    processed.index_of_first_image = 1;
    processed.interrupted = results.iter().flatten().any(|p| p.interrupted);
    Ok(processed)
}

/// A cell's `processed.prompt` (its first prompt).
fn prompt_of(p: &Processed) -> Value {
    serde_json::from_str::<Value>(&p.info).ok().and_then(|v| v.get("prompt").cloned()).unwrap_or(Value::Null)
}

/// The largest width and height among `images` (`map(max, zip(*sizes))`).
fn max_size(images: &[RgbImage]) -> (usize, usize) {
    let w = images.iter().map(|i| i.width).max().unwrap_or(0) as usize;
    let h = images.iter().map(|i| i.height).max().unwrap_or(0) as usize;
    (w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_lists_follow_a1111s_per_tab() {
        let txt: Vec<&str> = tab_axes(false).iter().map(|a| a.label).collect();
        let img: Vec<&str> = tab_axes(true).iter().map(|a| a.label).collect();
        assert_eq!(txt.len(), 42);
        assert_eq!(img.len(), 41);
        assert_eq!((txt[6], txt[7]), ("CFG Scale", "Prompt S/R"));
        assert_eq!(&txt[..6], ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps"]);
        assert_eq!(txt[9], "Sampler");
        assert_eq!(img[8], "Prompt order");
        assert_eq!(img[9], "Sampler");
        assert_eq!(txt.last(), Some(&"Size"));
    }

    #[test]
    fn cells_run_costliest_axis_outermost() {
        // Equal costs: z, then y, then x (A1111's defaults).
        assert_eq!(cell_order([0.0; 3], [2, 2, 1]), vec![[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]);
        // A checkpoint axis on x: x outermost.
        assert_eq!(cell_order([1.0, 0.0, 0.0], [2, 2, 1]), vec![[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]);
    }

    #[test]
    fn labels_and_infotext_entries() {
        let steps = AXIS_OPTIONS.iter().find(|a| a.label == "Steps").unwrap();
        assert_eq!(label_of(steps, &AxisValue::Int(20)), "Steps: 20");
        let cfg = AXIS_OPTIONS.iter().find(|a| a.label == "CFG Scale").unwrap();
        assert_eq!(label_of(cfg, &AxisValue::Float(0.1 + 0.2)), "CFG Scale: 0.3");
        let ckpt = AXIS_OPTIONS.iter().find(|a| a.label == "Checkpoint name").unwrap();
        assert_eq!(label_of(ckpt, &AxisValue::Text("sub/model.safetensors".into())), "model.safetensors");
        let text = "a cat\nSteps: 4, Seed: 1, Version: v1.10.1";
        let entries =
            vec![("Script".to_string(), Value::from("X/Y/Z plot")), ("X Values".to_string(), Value::from("1, 2"))];
        assert_eq!(
            with_entries(text, &entries),
            "a cat\nSteps: 4, Seed: 1, Script: X/Y/Z plot, X Values: \"1, 2\", Version: v1.10.1"
        );
    }

    #[test]
    fn prompt_order_moves_the_tokens() {
        let tokens = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(reorder_prompt("a cat, red, big", &tokens(&["big", "red"])), "a cat, big, red");
        assert_eq!(reorder_prompt("a cat, red, big", &tokens(&["red", "big"])), "a cat, red, big");
    }
}
