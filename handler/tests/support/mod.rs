//! A real S3 API for the storage tests: `moto_server` on a free loopback port, as a child process.
//! Missing moto is a failure, never a skip.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use sdapi_handler::storage::s3::{S3Settings, S3Store, build_client};

/// Where moto_server is looked for: `SDAPI_TEST_MOTO_SERVER`, the repo's `.venv` (what
/// `scripts/test-all.sh` creates), then `PATH`.
fn moto_exe() -> PathBuf {
    if let Ok(p) = std::env::var("SDAPI_TEST_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("moto_server")).find(|p| p.exists()))
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found (SDAPI_TEST_MOTO_SERVER, .venv/bin, PATH). Install it as scripts/test-all.sh \
                 does: python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt \
                 (or pip install \"moto[server]==5.2.5\")"
            )
        })
}

pub struct Moto {
    child: Option<Child>,
    pub endpoint: String,
    pub log: PathBuf,
}

impl Moto {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let log = std::env::temp_dir().join(format!("sdapi-moto-{port}.log"));
        let out = std::fs::File::create(&log).expect("moto log");
        let err = out.try_clone().expect("moto log");
        let exe = moto_exe();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut moto = Self { child: Some(child), endpoint: format!("http://127.0.0.1:{port}"), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = moto.child.as_mut().map(Child::try_wait) {
                panic!("moto_server exited with {status}: {}", std::fs::read_to_string(&moto.log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "moto_server did not open port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Static test credentials, path style, the given retry/timeout budget.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "static",
            )))
            .endpoint_url(&self.endpoint)
            .build()
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        build_client(&self.sdk_config(), &settings())
    }

    pub fn store(&self, bucket: &str, prefix: &str) -> S3Store {
        S3Store::new(self.client(), bucket.into(), prefix.into())
    }

    pub async fn create_bucket(&self, bucket: &str) -> aws_sdk_s3::Client {
        let c = self.client();
        c.create_bucket().bucket(bucket).send().await.expect("create bucket");
        c
    }

    /// Stops the server (the "S3 went away mid-request" case).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small budget so failure tests take seconds, not the production 20 s.
pub fn settings() -> S3Settings {
    S3Settings { force_path_style: true, max_attempts: 2, operation_timeout: Duration::from_secs(3) }
}

pub async fn get_object(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> (Vec<u8>, aws_sdk_s3::operation::get_object::GetObjectOutput) {
    let mut out = c.get_object().bucket(bucket).key(key).send().await.unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    let body = std::mem::take(&mut out.body).collect().await.expect("body").into_bytes().to_vec();
    (body, out)
}

pub async fn list_keys(c: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let r = c.list_objects_v2().bucket(bucket).prefix(prefix).send().await.expect("list");
    r.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
}
