//! `parse_generation_parameters` (docs/a1111-behaviour.md §3.4): infotext → dict, as `/png-info` returns it.

use crate::prompt::parse_attention;
use serde_json::{Map, Value};

/// One `key: value` match of A1111's `re_param`
/// (`\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`), scanned like `re.findall`.
pub fn find_params(line: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos <= chars.len() {
        match match_param_at(&chars, pos) {
            Ok((k, v, end)) => {
                out.push((k, v));
                pos = if end > pos { end } else { pos + 1 };
            }
            Err(next) => pos = next.max(pos + 1),
        }
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A match at `start`, or where the next match can start at the earliest. A key run that is not
/// followed by `:` fails the same way from every start inside it, so the scan skips to its end:
/// this keeps long texts without `:` linear (the regex scan is quadratic there).
fn match_param_at(s: &[char], start: usize) -> Result<(String, String, usize), usize> {
    let n = s.len();
    let mut i = start;
    while i < n && s[i].is_whitespace() {
        i += 1;
    }
    // key: \w[\w \-/]+ followed by ':' (the class excludes ':', so the run is maximal)
    if i >= n || !is_word(s[i]) {
        return Err(start + 1);
    }
    let key_start = i;
    i += 1;
    while i < n && (is_word(s[i]) || matches!(s[i], ' ' | '-' | '/')) {
        i += 1;
    }
    if i - key_start < 2 || i >= n || s[i] != ':' {
        return Err(i);
    }
    let key: String = s[key_start..i].iter().collect();
    i += 1;
    while i < n && s[i].is_whitespace() {
        i += 1;
    }
    // quoted alternative: "(?:\\.|[^\\"])+" then , or end
    if i < n && s[i] == '"' {
        let mut k = i + 1;
        while k < n {
            if s[k] == '\\' && k + 1 < n && s[k + 1] != '\n' {
                k += 2;
            } else if s[k] != '"' && s[k] != '\\' {
                k += 1;
            } else {
                break;
            }
        }
        if k > i + 1 && k < n && s[k] == '"' {
            let end = k + 1;
            if end == n {
                return Ok((key, s[i..end].iter().collect(), end));
            }
            if s[end] == ',' {
                return Ok((key, s[i..end].iter().collect(), end + 1));
            }
        }
    }
    // unquoted alternative: [^,]* then , or end
    let mut m = i;
    while m < n && s[m] != ',' {
        m += 1;
    }
    let value: String = s[i..m].iter().collect();
    let end = if m < n { m + 1 } else { m };
    Ok((key, value, end))
}

/// `unquote`: `json.loads` of a double-quoted value, falling back to the raw text.
fn unquote(v: &str) -> String {
    if v.len() >= 2
        && v.starts_with('"')
        && v.ends_with('"')
        && let Ok(Value::String(s)) = serde_json::from_str::<Value>(v)
    {
        return s;
    }
    v.to_string()
}

/// `^(\d+)x(\d+)$`.
fn split_size(v: &str) -> Option<(String, String)> {
    let v = v.strip_suffix('\n').unwrap_or(v);
    let (w, h) = v.split_once('x')?;
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    (digits(w) && digits(h)).then(|| (w.to_string(), h.to_string()))
}

/// True if A1111's attention parser gives any fragment but BREAK a weight ≠ 1.0 (decides
/// whether a default `Emphasis: Original` is added). The same parser the conditioning uses; where
/// A1111 would raise on a weight Python's `float` rejects, no emphasis is assumed.
pub fn uses_emphasis(text: &str) -> bool {
    parse_attention(text).is_ok_and(|parts| parts.iter().any(|p| p.weight != 1.0 && p.text != "BREAK"))
}

/// A parsed `packaging.version` reduced to release numbers and a post-release number.
fn parse_version(text: &str) -> Option<(Vec<u64>, Option<u64>)> {
    // r'([^-]+-[^-]+)-.*' keeps "v1.7.0-225" out of "v1.7.0-225-gabcdef"
    let parts: Vec<&str> = text.splitn(3, '-').collect();
    let t = if parts.len() == 3 { format!("{}-{}", parts[0], parts[1]) } else { text.to_string() };
    let t = t.trim().to_ascii_lowercase();
    let t = t.strip_prefix('v').unwrap_or(&t);
    let (release, post) = match t.split_once(['-', '_']) {
        Some((r, p)) => (r.to_string(), Some(p.trim_start_matches("post").parse::<u64>().ok()?)),
        None => match t.split_once(".post") {
            Some((r, p)) => (r.to_string(), Some(p.parse::<u64>().ok()?)),
            None => (t.to_string(), None),
        },
    };
    let nums: Option<Vec<u64>> = release.split('.').map(|x| x.parse().ok()).collect();
    let mut nums = nums?;
    while nums.len() > 1 && nums.last() == Some(&0) {
        nums.pop();
    }
    Some((nums, post))
}

fn version_lt(a: &(Vec<u64>, Option<u64>), b: &(Vec<u64>, Option<u64>)) -> bool {
    (a.0.clone(), a.1.map(|p| p as i128).unwrap_or(-1)) < (b.0.clone(), b.1.map(|p| p as i128).unwrap_or(-1))
}

/// `infotext_versions.backcompat` (with `opts.auto_backcompat` on).
fn backcompat(res: &mut Map<String, Value>) {
    let Some(ver) = res.get("Version").and_then(|v| v.as_str()).and_then(parse_version) else { return };
    let v160 = (vec![1, 6], None);
    let v170_tsnr = (vec![1, 7], Some(225));
    let v180 = (vec![1, 8], None);
    let prompt = res.get("Prompt").and_then(|v| v.as_str()).unwrap_or("").to_string();
    if version_lt(&ver, &v160) && prompt.contains('[') {
        res.insert("Old prompt editing timelines".into(), Value::Bool(true));
    }
    let sampler = res.get("Sampler").and_then(|v| v.as_str()).unwrap_or("");
    if version_lt(&ver, &v160) && matches!(sampler, "DDIM" | "PLMS") {
        res.insert("Pad conds v0".into(), Value::Bool(true));
    }
    if version_lt(&ver, &v170_tsnr) {
        res.insert("Downcast alphas_cumprod".into(), Value::Bool(true));
    }
    let has_refiner = res.get("Refiner").is_some_and(|v| v.as_str().is_none_or(|s| !s.is_empty()) && !v.is_null());
    if version_lt(&ver, &v180) && has_refiner {
        res.insert("Refiner switch by sampling steps".into(), Value::Bool(true));
    }
}

/// `processing.old_hires_fix_first_pass_dimensions`.
fn old_first_pass_dimensions(width: i64, height: i64) -> (i64, i64) {
    let scale = ((512.0 * 512.0) / (width as f64 * height as f64)).sqrt();
    (((scale * width as f64) / 64.0).ceil() as i64 * 64, ((scale * height as f64) / 64.0).ceil() as i64 * 64)
}

fn as_int(v: Option<&Value>, default: i64) -> i64 {
    match v {
        Some(Value::String(s)) => s.trim().parse().unwrap_or(default),
        Some(v) => v.as_i64().unwrap_or(default),
        None => default,
    }
}

/// `restore_old_hires_fix_params` (with `use_old_hires_fix_width_height` off).
fn restore_old_hires_fix_params(res: &mut Map<String, Value>) {
    let (Some(fw), Some(fh)) = (res.get("First pass size-1"), res.get("First pass size-2")) else { return };
    let (mut fw, mut fh) = (as_int(Some(fw), 0), as_int(Some(fh), 0));
    let width = as_int(res.get("Size-1"), 512);
    let height = as_int(res.get("Size-2"), 512);
    if fw == 0 || fh == 0 {
        (fw, fh) = old_first_pass_dimensions(width, height);
    }
    res.insert("Size-1".into(), fw.into());
    res.insert("Size-2".into(), fh.into());
    res.insert("Hires resize-1".into(), width.into());
    res.insert("Hires resize-2".into(), height.into());
}

/// `parse_generation_parameters(x, skip_fields)`. Styles are not inferred (we have no styles
/// file, so A1111's "Apply if any" would find none); Lora `infotext_pasted` rewriting is not done.
pub fn parse_generation_parameters(x: &str, skip_fields: &[&str]) -> Map<String, Value> {
    let mut res = Map::new();
    let stripped = x.trim();
    let mut lines: Vec<&str> = stripped.split('\n').collect();
    let mut lastline = lines.pop().unwrap_or("");
    if find_params(lastline).len() < 3 {
        lines.push(lastline);
        lastline = "";
    }

    let mut prompt = String::new();
    let mut negative = String::new();
    let mut done_with_prompt = false;
    for line in lines {
        let mut line = line.trim().to_string();
        if line.starts_with("Negative prompt:") {
            done_with_prompt = true;
            line = line.chars().skip(16).collect::<String>().trim().to_string();
        }
        let target = if done_with_prompt { &mut negative } else { &mut prompt };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(&line);
    }

    for (k, v) in find_params(lastline) {
        // Python indexes v[0]: an empty value raises and the key is skipped.
        if v.is_empty() {
            continue;
        }
        let v = if v.starts_with('"') && v.ends_with('"') { unquote(&v) } else { v };
        match split_size(&v) {
            Some((w, h)) => {
                res.insert(format!("{k}-1"), w.into());
                res.insert(format!("{k}-2"), h.into());
            }
            None => {
                res.insert(k, v.into());
            }
        }
    }

    res.insert("Prompt".into(), prompt.clone().into());
    res.insert("Negative prompt".into(), negative.clone().into());
    let default = |res: &mut Map<String, Value>, k: &str, v: Value| {
        if !res.contains_key(k) {
            res.insert(k.into(), v);
        }
    };
    default(&mut res, "Clip skip", "1".into());
    if let Some(hypernet) = res.get("Hypernet").map(crate::python_json::py_str) {
        let strength = res.get("Hypernet strength").map(crate::python_json::py_str).unwrap_or_else(|| "1.0".into());
        let p = format!("{}<hypernet:{hypernet}:{strength}>", res["Prompt"].as_str().unwrap_or(""));
        res.insert("Prompt".into(), p.into());
    }
    if !res.contains_key("Hires resize-1") {
        res.insert("Hires resize-1".into(), 0.into());
        res.insert("Hires resize-2".into(), 0.into());
    }
    default(&mut res, "Hires sampler", "Use same sampler".into());
    default(&mut res, "Hires schedule type", "Use same scheduler".into());
    default(&mut res, "Hires checkpoint", "Use same checkpoint".into());
    default(&mut res, "Hires prompt", "".into());
    default(&mut res, "Hires negative prompt", "".into());
    default(&mut res, "Mask mode", "Inpaint masked".into());
    default(&mut res, "Masked content", "original".into());
    default(&mut res, "Inpaint area", "Whole picture".into());
    default(&mut res, "Masked area padding", 32.into());
    restore_old_hires_fix_params(&mut res);
    default(&mut res, "RNG", "GPU".into());
    default(&mut res, "Schedule type", "Automatic".into());
    default(&mut res, "Schedule max sigma", 0.into());
    default(&mut res, "Schedule min sigma", 0.into());
    default(&mut res, "Schedule rho", 0.into());
    default(&mut res, "VAE Encoder", "Full".into());
    default(&mut res, "VAE Decoder", "Full".into());
    default(&mut res, "FP8 weight", "Disable".into());
    if res.get("FP8 weight").and_then(|v| v.as_str()) != Some("Disable") {
        default(&mut res, "Cache FP16 weight for LoRA", false.into());
    }
    if !res.contains_key("Emphasis") && (uses_emphasis(&prompt) || uses_emphasis(&negative)) {
        res.insert("Emphasis".into(), "Original".into());
    }
    default(&mut res, "Refiner switch by sampling steps", false.into());
    backcompat(&mut res);
    for k in skip_fields {
        res.shift_remove(*k);
    }
    res
}
