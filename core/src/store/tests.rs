use serde_json::json;

use super::naming::{next_sequence_number, sample_file_name};
use super::report::append_info_key;
use super::*;
use sdapi_protocol::api::options::Options;

fn temp_root(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sdapi-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sequence_number_follows_a1111() {
    assert_eq!(next_sequence_number([]), 0);
    assert_eq!(next_sequence_number(["00000-1.png", "00007-99.png", "notes.txt", "00003-5.jpg"]), 8);
    // Only the first '-' part counts, and any extension (or none).
    assert_eq!(next_sequence_number(["00011", "12-a-b.png", "x-13.png"]), 13);
    assert_eq!(sample_file_name(12, -1, "png"), "00012--1.png");
    assert_eq!(sample_file_name(123456, 42, "webp"), "123456-42.webp");
}

#[test]
fn folders_follow_the_outdir_options() {
    let opts = Options::new();
    assert_eq!(sample_folder("txt2img", &opts, "2026-11-25"), "txt2img-images/2026-11-25");
    assert_eq!(sample_folder("img2img", &opts, "2026-11-25"), "img2img-images/2026-11-25");
    let mut o = Options::new();
    let _ = o.set("outdir_samples", json!("/abs/elsewhere"));
    assert_eq!(sample_folder("txt2img", &o, "d"), "txt2img-images/d");
    let _ = o.set("outdir_samples", json!("outputs/mine/"));
    assert_eq!(sample_folder("img2img", &o, "d"), "mine/d");
}

#[test]
fn keys_are_validated() {
    for bad in ["", "/abs", "a//b", "a/../b", "a\\b", "./a", "a/\n"] {
        assert!(validate_key(bad).is_err(), "{bad:?}");
    }
    assert!(validate_key("txt2img-images/2026-11-25/00000-1.png").is_ok());
}

#[test]
fn output_locations_are_appended_in_python_json() {
    let info = r#"{"prompt": "a cat", "seed": 1, "is_using_inpainting_conditioning": false}"#;
    let out = append_info_key(info, "output_locations", &json!(["s3://b/k1.png", "s3://b/é.png"]));
    assert_eq!(
        out,
        r#"{"prompt": "a cat", "seed": 1, "is_using_inpainting_conditioning": false, "output_locations": ["s3://b/k1.png", "s3://b/\u00e9.png"]}"#
    );
    assert_eq!(append_info_key("{}", "k", &json!(1)), r#"{"k": 1}"#);
    assert_eq!(append_info_key("not json", "k", &json!(1)), "not json");
}

#[tokio::test]
async fn local_store_numbers_samples_like_a1111() {
    let root = temp_root("numbers");
    let store = LocalStore::new(&root);
    let namer = SampleNamer::new();
    // A file left by an earlier run (or by A1111 itself) moves the counter on.
    std::fs::create_dir_all(root.join("txt2img-images/d")).unwrap();
    std::fs::write(root.join("txt2img-images/d/00004-7.png"), b"old").unwrap();
    let opts = PutOptions { content_type: "image/png".into(), ..Default::default() };
    let a = namer.save(&store, "txt2img-images/d", 1234, "png", b"one".to_vec(), opts.clone()).await.unwrap();
    let b = namer.save(&store, "txt2img-images/d", 1234, "png", b"two".to_vec(), opts.clone()).await.unwrap();
    assert_eq!(a.key, "txt2img-images/d/00005-1234.png");
    assert_eq!(b.key, "txt2img-images/d/00006-1234.png");
    assert_eq!(std::fs::read(root.join("txt2img-images/d/00006-1234.png")).unwrap(), b"two");
    assert_eq!(a.location, root.join("txt2img-images/d/00005-1234.png").display().to_string());
    // Another writer took the next name behind our back: we skip it instead of overwriting
    // (like A1111's `os.path.exists` loop, only the exact name counts).
    std::fs::write(root.join("txt2img-images/d/00007-9.png"), b"theirs").unwrap();
    let c = namer.save(&store, "txt2img-images/d", 9, "png", b"three".to_vec(), opts).await.unwrap();
    assert_eq!(c.key, "txt2img-images/d/00008-9.png");
    assert_eq!(std::fs::read(root.join("txt2img-images/d/00007-9.png")).unwrap(), b"theirs");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn local_store_put_get_and_conditional_put() {
    let root = temp_root("putget");
    let store = LocalStore::new(&root);
    assert_eq!(store.get("batch/j/result.json").await.unwrap(), None);
    store.put("batch/j/result.json", b"{}".to_vec(), PutOptions::default()).await.unwrap();
    store.put("batch/j/result.json", b"{\"a\":1}".to_vec(), PutOptions::default()).await.unwrap();
    assert_eq!(store.get("batch/j/result.json").await.unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
    let again = store.put("batch/j/result.json", vec![], PutOptions { if_absent: true, ..Default::default() }).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists { .. })), "{again:?}");
    assert!(matches!(store.put("../x", vec![], PutOptions::default()).await, Err(StoreError::InvalidKey { .. })));
    assert_eq!(store.list_names("batch/j").await.unwrap(), vec!["result.json".to_string()]);
    assert!(store.list_names("nothing/here").await.unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&root);
}
