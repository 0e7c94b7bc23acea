//! The batch request file (docs/batch-jobs.md): one job object or a non-empty list of them, each
//! with exactly one of `txt2img` / `img2img` holding that endpoint's request body.

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::request::{Img2ImgRequest, Txt2ImgRequest};
use serde_json::{Value, json};

/// One entry of the file, before its body is validated.
#[derive(Debug, Clone)]
pub struct JobEntry {
    pub index: usize,
    pub name: Option<String>,
    pub mode: &'static str,
    pub body: Value,
}

impl JobEntry {
    /// Output folder of this entry under the job: `<index>-<name>`, or `<index>` when unnamed.
    pub fn folder(&self) -> String {
        match &self.name {
            Some(n) => format!("{}-{n}", self.index),
            None => self.index.to_string(),
        }
    }
}

/// A validated request body.
pub enum JobRequest {
    Txt2Img(Txt2ImgRequest),
    Img2Img(Img2ImgRequest),
}

/// Why the file as a whole cannot run (recorded as the manifest's `error`).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the request file is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Shape(String),
    #[error("the request file is {0} bytes, more than a batch job reads ({MAX_FILE_BYTES})")]
    TooLarge(u64),
}

/// Largest request file a job reads: a list of requests, init images included.
pub const MAX_FILE_BYTES: usize = 256 << 20;
/// Most requests in one file (each runs as its own generation, costed like an HTTP request).
pub const MAX_ENTRIES: usize = 1000;

impl FileError {
    /// A1111's four-key error shape, as the HTTP routes would answer.
    pub fn to_error_object(&self) -> Value {
        json!({"error": "BatchRequestError", "detail": self.to_string(), "body": "", "errors": ""})
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name != "."
        && name != ".."
}

/// Splits the file into entries; each entry's body is validated later, on its own.
pub fn parse_file(bytes: &[u8]) -> Result<Vec<JobEntry>, FileError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(FileError::TooLarge(bytes.len() as u64));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| FileError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) if items.is_empty() => return Err(FileError::Shape("the job list is empty".into())),
        Value::Array(items) if items.len() > MAX_ENTRIES => {
            return Err(FileError::Shape(format!("{} jobs in one file, more than {MAX_ENTRIES}", items.len())));
        }
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err(FileError::Shape("expected a job object or a list of them".into())),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let Value::Object(mut obj) = item else {
                return Err(FileError::Shape(format!("job {index}: expected an object")));
            };
            let name = match obj.remove("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) if valid_name(&n) => Some(n),
                Some(other) => {
                    return Err(FileError::Shape(format!(
                        "job {index}: name {other} must match [A-Za-z0-9._-]{{1,64}}"
                    )));
                }
            };
            let (mode, body) = match (obj.remove("txt2img"), obj.remove("img2img")) {
                (Some(b), None) => ("txt2img", b),
                (None, Some(b)) => ("img2img", b),
                _ => return Err(FileError::Shape(format!("job {index}: needs exactly one of txt2img / img2img"))),
            };
            Ok(JobEntry { index, name, mode, body })
        })
        .collect()
}

/// Validates an entry's body exactly as the HTTP route would; the error is the route's 422 body.
pub fn validate(entry: &JobEntry) -> Result<JobRequest, Value> {
    let to_json = |e: sdapi_protocol::api::errors::ValidationErrors| serde_json::to_value(&e).unwrap_or(Value::Null);
    match entry.mode {
        "txt2img" => Txt2ImgRequest::from_json(&entry.body).map(JobRequest::Txt2Img).map_err(to_json),
        _ => Img2ImgRequest::from_json(&entry.body).map(JobRequest::Img2Img).map_err(to_json),
    }
}

/// A1111's four-key error body for a request that failed while running.
pub fn api_error_json(e: &ApiError) -> Value {
    serde_json::to_value(e)
        .unwrap_or_else(|_| json!({"error": e.error, "detail": e.detail, "body": e.body, "errors": e.errors}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_into_entries() {
        let one = parse_file(br#"{"txt2img": {"prompt": "x"}}"#).unwrap();
        assert_eq!((one.len(), one[0].mode, one[0].folder()), (1, "txt2img", "0".to_string()));
        let list = parse_file(br#"[{"name": "a", "txt2img": {}}, {"name": "b.c", "img2img": {}}]"#).unwrap();
        assert_eq!(list[1].folder(), "1-b.c");
        assert_eq!(list[1].mode, "img2img");
        for bad in
            [&b"nope"[..], b"[]", b"3", br#"{"txt2img": {}, "img2img": {}}"#, br#"{"name": "../x", "txt2img": {}}"#]
        {
            assert!(parse_file(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn files_over_the_bounds_are_refused_before_running() {
        let many = format!("[{}]", vec![r#"{"txt2img": {}}"#; MAX_ENTRIES + 1].join(","));
        assert!(matches!(parse_file(many.as_bytes()), Err(FileError::Shape(m)) if m.contains("more than 1000")));
        let huge = vec![b' '; MAX_FILE_BYTES + 1];
        assert!(matches!(parse_file(&huge), Err(FileError::TooLarge(_))));
    }

    /// Fixed-budget mutation fuzzing of the request file: splitting and validating each entry
    /// never panics, whatever the bytes.
    #[test]
    fn fuzzed_request_files_never_panic() {
        use sdapi_protocol::fuzz::XorShift;
        let seeds: [&[u8]; 3] = [
            include_bytes!("../../../samples/requests/batch-job-single.json"),
            br#"[{"name": "a", "txt2img": {"prompt": "x", "steps": 3, "n_iter": 2, "override_settings": {"CLIP_stop_at_last_layers": 2}}}, {"img2img": {"init_images": ["AAAA"], "denoising_strength": 0.5}}]"#,
            br#"{"name": "n", "txt2img": {"prompt": "x", "styles": ["a"], "alwayson_scripts": {}, "seed": -1}}"#,
        ];
        let pieces: [&[u8]; 14] = [
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"\"",
            b"null",
            b"-1e999",
            b"\"txt2img\"",
            b"\"img2img\"",
            b"\"name\"",
            b"\\u0000",
            b"18446744073709551616",
        ];
        let mut rng = XorShift(0xba7c_4f11);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut bytes = rng.pick(&seeds).to_vec();
            for _ in 0..1 + rng.below(5) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(3) {
                    0 => bytes.splice(at..at, rng.pick(&pieces).iter().copied()).for_each(drop),
                    1 if at < bytes.len() => drop(bytes.drain(at..(at + 1 + rng.below(6)).min(bytes.len()))),
                    _ => bytes.insert(at, rng.below(256) as u8),
                }
            }
            if let Ok(entries) = parse_file(&bytes) {
                parsed += 1;
                for entry in &entries {
                    let _ = validate(entry);
                }
            }
        }
        assert!(parsed > 1_000, "the mutations should leave many files parseable: {parsed}");
    }
}
