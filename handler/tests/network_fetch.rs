//! LoRAs and embeddings fetched from the models bucket on demand, against a real local S3 (moto,
//! started here): names that cannot escape the cache, size limits, verification, the cache's size
//! bound, and the whole request path (the runner gets the fetched file; S3 going away fails only
//! the request that needed it).

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use sdapi_core::networks::NetworkFetcher;
use sdapi_handler::app::{AppState, router};
use sdapi_handler::storage::network_fetch::{FetchLimits, S3NetworkFetcher};
use support::Moto;

use common::{RecordingRunner, body_json, get, post_json, repo_root, send, test_config};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sdapi-network-fetch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("tests/fixtures/a1111-parity-features/models").join(rel)).unwrap()
}

async fn put(client: &aws_sdk_s3::Client, key: &str, bytes: Vec<u8>) {
    client.put_object().bucket("models").key(key).body(ByteStream::from(bytes)).send().await.unwrap();
}

async fn bucket_with_networks(moto: &Moto) -> aws_sdk_s3::Client {
    let client = moto.create_bucket("models").await;
    put(&client, "sd/Lora/remote-lora.safetensors", fixture("Lora/tiny-lora.safetensors")).await;
    put(&client, "sd/Lora/second-lora.safetensors", fixture("Lora/tiny-lora.safetensors")).await;
    put(&client, "sd/Lora/broken.safetensors", b"not a safetensors file at all".to_vec()).await;
    put(&client, "sd/Lora/huge.safetensors", vec![0u8; 200_000]).await;
    put(&client, "sd/embeddings/remote-emb.safetensors", fixture("embeddings/tiny-emb.safetensors")).await;
    client
}

fn fetcher(moto: &Moto, cache: &Path, limits: FetchLimits) -> S3NetworkFetcher {
    S3NetworkFetcher::new(moto.client(), "s3://models/sd", cache.to_path_buf(), limits).unwrap()
}

const LIMITS: FetchLimits = FetchLimits { max_lora_bytes: 100_000, cache_bytes: 1 << 30 };

#[tokio::test]
async fn files_arrive_checked_and_names_cannot_escape() {
    let moto = Moto::start();
    bucket_with_networks(&moto).await;
    let cache = temp_dir("checked");
    let f = fetcher(&moto, &cache, LIMITS);

    assert_eq!(f.fetch_lora("remote-lora").await, Ok(true));
    assert_eq!(
        std::fs::read(cache.join("Lora/remote-lora.safetensors")).unwrap(),
        fixture("Lora/tiny-lora.safetensors")
    );
    assert_eq!(f.fetch_lora("remote-lora").await, Ok(true), "a second request finds it cached");
    assert_eq!(f.fetch_lora("nope").await, Ok(false));
    for bad in ["../Lora/remote-lora", "a/b", "/etc/passwd", "s3://other/x", ".hidden"] {
        assert!(f.fetch_lora(bad).await.is_err(), "{bad:?} must be refused");
    }
    let broken = f.fetch_lora("broken").await.unwrap_err();
    assert!(broken.contains("not a usable network file"), "{broken}");
    assert!(!cache.join("Lora/broken.safetensors").exists(), "a bad download is removed");
    let huge = f.fetch_lora("huge").await.unwrap_err();
    assert!(huge.contains("SDAPI_NETWORK_MAX_MB"), "{huge}");
    assert!(!cache.join("Lora/huge.safetensors").exists());

    let known = Default::default();
    assert_eq!(f.fetch_embeddings(&["a photo of REMOTE-EMB".into()], &known).await, Ok(1));
    assert!(cache.join("embeddings/remote-emb.safetensors").is_file());
    assert_eq!(f.fetch_embeddings(&["nothing to see".into()], &known).await, Ok(0));
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test]
async fn the_cache_stays_within_its_bound() {
    let moto = Moto::start();
    bucket_with_networks(&moto).await;
    let cache = temp_dir("bound");
    // Room for one 80 KB LoRA: fetching a second evicts the least recently used one.
    let f = fetcher(&moto, &cache, FetchLimits { max_lora_bytes: 100_000, cache_bytes: 100_000 });
    assert_eq!(f.fetch_lora("remote-lora").await, Ok(true));
    assert_eq!(f.fetch_lora("second-lora").await, Ok(true));
    assert!(!cache.join("Lora/remote-lora.safetensors").exists(), "the older file is evicted");
    assert!(cache.join("Lora/second-lora.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test]
async fn a_request_naming_a_remote_lora_gets_it_and_s3_faults_fail_only_that_request() {
    let mut moto = Moto::start();
    bucket_with_networks(&moto).await;
    let cache = temp_dir("request");
    let runner = Arc::new(RecordingRunner::default());
    let state = AppState::with_runner(test_config(), runner.clone())
        .expect("state")
        .with_fetcher(Arc::new(fetcher(&moto, &cache, LIMITS)));
    let app = router(state);

    let body = r#"{"prompt": "a cube <lora:remote-lora:0.5>", "negative_prompt": "remote-emb", "steps": 2, "width": 64, "height": 64}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", body)).await;
    let json = body_json(resp).await;
    assert_eq!(status, 200, "{json}");
    let info: serde_json::Value = serde_json::from_str(json["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["extra_generation_params"]["Lora hashes"], "remote-lora: 108bacb306aa", "{info}");
    {
        let jobs = runner.jobs.lock().unwrap();
        let job = jobs.last().unwrap();
        assert_eq!(job.networks.loras.len(), 1);
        assert_eq!(job.networks.loras[0].path, cache.join("Lora/remote-lora.safetensors"));
        assert_eq!((job.networks.loras[0].te_multiplier, job.networks.loras[0].unet_multiplier), (0.5, 0.5));
        assert!(job.networks.embeddings.iter().any(|e| e.name == "remote-emb"), "the mentioned embedding came too");
        assert_eq!(job.prompts, vec!["a cube ".to_string()]);
    }
    let (_, resp) = send(&app, get("/sdapi/v1/loras")).await;
    let names: Vec<String> =
        body_json(resp).await.as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap().to_string()).collect();
    assert!(names.contains(&"remote-lora".to_string()), "{names:?}");

    // S3 goes away: a request needing a LoRA that is not cached fails with the reason, a request
    // with a cached one (or none) is served.
    moto.stop();
    let missing = r#"{"prompt": "<lora:second-lora:1>", "steps": 2, "width": 64, "height": 64}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", missing)).await;
    let json = body_json(resp).await;
    assert_eq!(status, 500, "{json}");
    assert!(json["errors"].as_str().unwrap_or_default().contains("second-lora"), "{json}");
    let cached = r#"{"prompt": "again <lora:remote-lora:1>", "steps": 2, "width": 64, "height": 64}"#;
    let (status, _) = send(&app, post_json("/sdapi/v1/txt2img", cached)).await;
    assert_eq!(status, 200);
    let bad_name = r#"{"prompt": "<lora:../../etc/passwd:1>", "steps": 2, "width": 64, "height": 64}"#;
    let (status, _) = send(&app, post_json("/sdapi/v1/txt2img", bad_name)).await;
    assert_eq!(status, 422);
    let _ = std::fs::remove_dir_all(&cache);
}
