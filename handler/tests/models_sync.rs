//! `SDAPI_MODELS_S3_URI`: the models tree comes from a real local S3 server (moto, started here),
//! is skipped when already present, re-fetched when the local size differs, and verified against a
//! `sha256` metadata entry.

mod support;

use aws_sdk_s3::primitives::ByteStream;
use sdapi_core::models_dir::{HashCache, HashPolicy};
use sdapi_handler::storage::models_sync::{ON_DEMAND_FOLDERS, SyncError, sync_models, sync_models_except};
use support::Moto;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sdapi-models-sync-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn models_are_synced_once_and_verified() {
    let moto = Moto::start();
    let client = moto.create_bucket("models").await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ckpt = std::fs::read(root.join("tests/fixtures/a1111-parity/models/tiny-sd15.safetensors")).unwrap();
    client
        .put_object()
        .bucket("models")
        .key("sd/Stable-diffusion/tiny-sd15.safetensors")
        .metadata("sha256", sha256_hex(&ckpt))
        .body(ByteStream::from(ckpt.clone()))
        .send()
        .await
        .unwrap();
    client.put_object().bucket("models").key("sd/VAE/").body(ByteStream::from_static(b"")).send().await.unwrap();
    client
        .put_object()
        .bucket("models")
        .key("other/ignored.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();

    let dest = temp_dir("once");
    let first = sync_models(&client, "s3://models/sd", &dest).await.unwrap();
    assert_eq!((first.downloaded, first.skipped, first.bytes), (1, 0, ckpt.len() as u64));
    let local = dest.join("Stable-diffusion/tiny-sd15.safetensors");
    assert_eq!(std::fs::read(&local).unwrap(), ckpt);
    assert!(!dest.join("ignored.txt").exists(), "objects outside the prefix are not copied");
    // The digest computed while downloading is in the index's hash cache: the scan after the sync
    // finds it without reading the file again (CachedOnly never reads).
    let (cache_path, _) = HashCache::location(&dest);
    let cached = HashCache::load(cache_path).sha256(&local, HashPolicy::CachedOnly).unwrap();
    assert_eq!(cached, Some(sha256_hex(&ckpt)));

    let second = sync_models(&client, "s3://models/sd/", &dest).await.unwrap();
    assert_eq!((second.downloaded, second.skipped), (0, 1), "present with the same size: skipped");

    std::fs::write(&local, b"truncated").unwrap();
    let third = sync_models(&client, "s3://models/sd", &dest).await.unwrap();
    assert_eq!(third.downloaded, 1, "a file of the wrong size is fetched again");
    assert_eq!(std::fs::read(&local).unwrap(), ckpt);

    // An object whose bytes do not match its declared sha256 is refused and leaves nothing behind.
    client
        .put_object()
        .bucket("models")
        .key("bad/Stable-diffusion/x.safetensors")
        .metadata("sha256", "00".repeat(32))
        .body(ByteStream::from_static(b"not the declared bytes"))
        .send()
        .await
        .unwrap();
    let bad_dest = temp_dir("bad");
    let err = sync_models(&client, "s3://models/bad", &bad_dest).await.unwrap_err();
    assert!(matches!(err, SyncError::HashMismatch { .. }), "{err}");
    assert!(!bad_dest.join("Stable-diffusion/x.safetensors").exists());
}

#[tokio::test]
async fn an_unreachable_bucket_is_a_clear_error() {
    let mut moto = Moto::start();
    let client = moto.client();
    moto.stop();
    let err = sync_models(&client, "s3://models/sd", &temp_dir("down")).await.unwrap_err();
    assert!(matches!(err, SyncError::S3 { operation: "list", .. }), "{err}");
}

/// The start-up sync leaves LoRAs and embeddings to the on-demand fetcher.
#[tokio::test]
async fn networks_are_left_for_on_demand_fetching() {
    let moto = Moto::start();
    let client = moto.create_bucket("models").await;
    for key in ["sd/VAE/v.safetensors", "sd/Lora/l.safetensors", "sd/LyCORIS/y.safetensors", "sd/embeddings/e.pt"] {
        client.put_object().bucket("models").key(key).body(ByteStream::from_static(b"x")).send().await.unwrap();
    }
    let dest = temp_dir("on-demand");
    let report = sync_models_except(&client, "s3://models/sd", &dest, &ON_DEMAND_FOLDERS).await.unwrap();
    assert_eq!(report.downloaded, 1);
    assert!(dest.join("VAE/v.safetensors").is_file());
    assert!(!dest.join("Lora").exists() && !dest.join("LyCORIS").exists() && !dest.join("embeddings").exists());
}
