//! The S3 output store (`SDAPI_OUTPUT_BUCKET`, `SDAPI_OUTPUT_PREFIX`).
//!
//! AWS settings come from the standard environment through aws-config (`AWS_REGION`,
//! `AWS_ENDPOINT_URL[_S3]`, credentials). The SDK has no variable for path-style addressing, which
//! S3-compatible servers (moto, s3s-fs, MinIO) need: `SDAPI_S3_FORCE_PATH_STYLE=true`.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use sdapi_core::store::{OutputStore, PutOptions, StoreError, StoreFuture, StoredObject, validate_key};

/// S3 limits all user metadata (keys + values) of one object to 2 KB.
pub const METADATA_BUDGET: usize = 2048;
/// Set when a metadata value did not fit and was cut (the PNG itself always holds the full infotext).
pub const TRUNCATED_KEY: &str = "truncated";

/// Client settings beyond the AWS environment.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub force_path_style: bool,
    /// Attempts per call, first included (SDK standard retry: exponential backoff with jitter).
    pub max_attempts: u32,
    /// Budget for one call, retries included. A slow or dead endpoint costs at most this per object,
    /// after which the response goes out with the failure reported (nothing waits forever).
    pub operation_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self { force_path_style: false, max_attempts: 3, operation_timeout: Duration::from_secs(20) }
    }
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// Loads the AWS environment and builds the client with our retry/timeout budget.
    pub async fn from_env(bucket: String, prefix: String, settings: &S3Settings) -> Self {
        let shared = aws_config::load_from_env().await;
        Self::new(build_client(&shared, settings), bucket, prefix)
    }

    pub fn new(client: Client, bucket: String, prefix: String) -> Self {
        Self { client, bucket, prefix }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The object key for a store key: the prefix is used as given (`outputs/` → `outputs/<key>`).
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn location(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.bucket)
    }

    /// Reads any object (batch request files may come from another bucket); `None` when missing.
    pub async fn read_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.read_object_bounded(bucket, key, u64::MAX).await? {
            BoundedRead::Bytes(bytes) => Ok(Some(bytes)),
            BoundedRead::Missing => Ok(None),
            BoundedRead::TooLarge(size) => Err(StoreError::Backend {
                operation: "GetObject",
                location: format!("s3://{bucket}/{key}"),
                message: format!("{size} bytes cannot be held"),
                transient: false,
            }),
        }
    }
}

/// An object read with a size bound.
#[derive(Debug)]
pub enum BoundedRead {
    Missing,
    /// Larger than the bound (its size as far as it was read or announced); not kept.
    TooLarge(u64),
    Bytes(Vec<u8>),
}

impl S3Store {
    /// Reads an object of at most `max_bytes`: a larger one is refused from its announced length,
    /// or as soon as the bytes read pass the bound, never held whole.
    pub async fn read_object_bounded(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<BoundedRead, StoreError> {
        let location = format!("s3://{bucket}/{key}");
        let mut out = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if status_of(&e) == Some(404) => return Ok(BoundedRead::Missing),
            Err(e) => return Err(backend_error("GetObject", location, e)),
        };
        if let Some(length) = out.content_length.and_then(|n| u64::try_from(n).ok()).filter(|&n| n > max_bytes) {
            return Ok(BoundedRead::TooLarge(length));
        }
        let mut data = Vec::new();
        loop {
            match out.body.try_next().await {
                Ok(Some(chunk)) => {
                    data.extend_from_slice(&chunk);
                    if data.len() as u64 > max_bytes {
                        return Ok(BoundedRead::TooLarge(data.len() as u64));
                    }
                }
                Ok(None) => return Ok(BoundedRead::Bytes(data)),
                Err(e) => {
                    return Err(StoreError::Backend {
                        operation: "GetObject",
                        location,
                        message: e.to_string(),
                        transient: true,
                    });
                }
            }
        }
    }
}

/// An S3 client from shared AWS settings plus ours (path style, retry and timeout budget).
pub fn build_client(shared: &aws_config::SdkConfig, settings: &S3Settings) -> Client {
    let attempts = settings.max_attempts.max(1);
    let attempt_timeout = settings.operation_timeout / attempts;
    let conf = aws_sdk_s3::config::Builder::from(shared)
        .force_path_style(settings.force_path_style)
        .retry_config(RetryConfig::standard().with_max_attempts(attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3).min(attempt_timeout))
                .operation_attempt_timeout(attempt_timeout)
                .operation_timeout(settings.operation_timeout)
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

fn status_of<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HttpStatus::status_u16)
}

/// The raw response type differs between SDK operations only in name; this reads its status.
trait HttpStatus {
    fn status_u16(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_u16(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Maps an SDK failure to a store error, deciding whether a later retry may help.
fn backend_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: HttpStatus + std::fmt::Debug>(
    operation: &'static str,
    location: String,
    e: SdkError<E, R>,
) -> StoreError {
    let status = status_of(&e);
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(_) => status.is_none_or(|s| s >= 500 || s == 429 || s == 408),
        _ => false,
    };
    let message = match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
    };
    let message = match status {
        Some(s) => format!("{message} (HTTP {s})"),
        None => message,
    };
    StoreError::Backend { operation, location, message, transient }
}

/// S3 user metadata travels as HTTP headers: ASCII only, 2 KB in all. Values are percent-encoded
/// (UTF-8 bytes outside printable ASCII, and `%` itself; `urllib.parse.unquote` reverses it), keys
/// are lower-cased to `[a-z0-9-]`, and values are cut (never inside an escape) once the budget is
/// spent, with `truncated: <keys>` recording what was cut.
pub fn encode_metadata(pairs: &[(String, String)]) -> Vec<(String, String)> {
    const MARKER_RESERVE: usize = 64;
    let mut budget = METADATA_BUDGET - MARKER_RESERVE;
    let mut out = Vec::new();
    let mut cut = Vec::new();
    for (k, v) in pairs {
        let key: String = k
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
            .collect();
        if key.is_empty() || budget <= key.len() {
            cut.push(key);
            continue;
        }
        budget -= key.len();
        let mut value = String::new();
        let mut truncated = false;
        for b in v.bytes() {
            let piece =
                if (0x20..0x7f).contains(&b) && b != b'%' { (b as char).to_string() } else { format!("%{b:02X}") };
            if piece.len() > budget {
                truncated = true;
                break;
            }
            budget -= piece.len();
            value.push_str(&piece);
        }
        if truncated {
            cut.push(key.clone());
        }
        out.push((key, value));
    }
    if !cut.is_empty() {
        let mut list = cut.join(",");
        list.truncate(MARKER_RESERVE - TRUNCATED_KEY.len());
        out.push((TRUNCATED_KEY.to_string(), list));
    }
    out
}

impl OutputStore for S3Store {
    fn put<'a>(&'a self, key: &'a str, body: Vec<u8>, options: PutOptions) -> StoreFuture<'a, StoredObject> {
        Box::pin(async move {
            validate_key(key)?;
            let full = self.full_key(key);
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .content_type(&options.content_type)
                .body(ByteStream::from(body));
            for (k, v) in encode_metadata(&options.metadata) {
                req = req.metadata(k, v);
            }
            if options.if_absent {
                // S3 conditional write: 412 when the key exists (servers without it just overwrite,
                // and the in-process counter still keeps numbers apart).
                req = req.if_none_match("*");
            }
            match req.send().await {
                Ok(_) => Ok(StoredObject { location: self.location(&full), key: full }),
                Err(e) if options.if_absent && status_of(&e) == Some(412) => {
                    Err(StoreError::AlreadyExists { key: full })
                }
                Err(e) => Err(backend_error("PutObject", self.location(&full), e)),
            }
        })
    }

    fn list_names<'a>(&'a self, folder: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let prefix = if folder.is_empty() { self.prefix.clone() } else { format!("{}/", self.full_key(folder)) };
            let mut names = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let resp = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .delimiter("/")
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| backend_error("ListObjectsV2", self.location(&prefix), e))?;
                names.extend(
                    resp.contents()
                        .iter()
                        .filter_map(|o| o.key())
                        .filter_map(|k| k.strip_prefix(&prefix))
                        .map(str::to_string),
                );
                match resp.next_continuation_token() {
                    Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            Ok(names)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            validate_key(key)?;
            self.read_object(&self.bucket, &self.full_key(key)).await
        })
    }

    fn describe(&self) -> String {
        self.location(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_ascii_and_fits() {
        let long = "é".repeat(2000);
        let m = encode_metadata(&[("Seed".into(), "42".into()), ("parameters".into(), format!("a cat 100%\n{long}"))]);
        assert_eq!(m[0], ("seed".into(), "42".into()));
        assert!(m[1].1.starts_with("a cat 100%25%0A%C3%A9"));
        let total: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(total <= METADATA_BUDGET, "{total}");
        assert!(m.iter().all(|(k, v)| k.is_ascii() && v.bytes().all(|b| (0x20..0x7f).contains(&b))));
        // Cut on an escape boundary, and the cut is recorded.
        assert!(!m[1].1.ends_with('%') && m[1].1.rsplit('%').next().is_some_and(|t| t.len() >= 2));
        assert_eq!(m.last().unwrap(), &(TRUNCATED_KEY.to_string(), "parameters".to_string()));
        let short = encode_metadata(&[("mode".into(), "txt2img".into())]);
        assert_eq!(short, vec![("mode".to_string(), "txt2img".to_string())]);
    }
}
