//! Network files as they come: PyTorch archives read without a general unpickler, and garbage
//! (truncated, wrong shapes, code-executing pickles, memo bombs, forged sizes) refused with a
//! clear error or skipped — never a crash. The last test drives a broken LoRA through the real
//! runner and checks the service keeps serving.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdapi_core::models_dir::ModelIndex;
use sdapi_core::processing::{GenerationRequest, ProcessingContext, process_images};
use sdapi_core::runner::{ProcessingRunner, Runner};
use sdapi_engine::checkpoint::open_checkpoint;
use sdapi_engine::executor::DiffusionExecutor;
use sdapi_engine::networks::{EmbeddingData, LayerIndex, LoraFile, LoraPatch};
use sdapi_protocol::api::request::Txt2ImgRequest;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdapi-netfiles-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Pickle opcodes, protocol 2.
fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: u32) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}

/// `torch._utils._rebuild_tensor_v2(storage 'key', 0, (rows, cols), (cols, 1), False, OrderedDict())`.
fn tensor_pickle(out: &mut Vec<u8>, key: &str, rows: u32, cols: u32, storage_numel: u32) {
    out.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    out.push(b'(');
    unicode(out, "storage");
    out.extend_from_slice(b"ctorch\nFloatStorage\n");
    unicode(out, key);
    unicode(out, "cpu");
    int(out, storage_numel);
    out.extend_from_slice(b"tQ");
    int(out, 0);
    out.push(b'(');
    int(out, rows);
    int(out, cols);
    out.push(b't');
    out.push(b'(');
    int(out, cols);
    int(out, 1);
    out.push(b't');
    out.push(0x89);
    out.extend_from_slice(b"ccollections\nOrderedDict\n)R");
    out.extend_from_slice(b"tR");
}

/// A PyTorch zip archive (`archive/data.pkl` + one storage per tensor), all entries stored.
fn write_archive(path: &Path, pickle: &[u8], storages: &[(&str, Vec<f32>)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    for (key, data) in storages {
        zip.start_file(format!("archive/data/{key}"), stored).unwrap();
        for v in data {
            zip.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    zip.start_file("archive/version", stored).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

/// A1111's classic embedding: `{"string_to_param": {"*": tensor}, "step": 500}`.
fn classic_embedding_pickle(rows: u32, cols: u32, storage_numel: u32) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    unicode(&mut p, "string_to_param");
    p.extend_from_slice(b"}(");
    unicode(&mut p, "*");
    tensor_pickle(&mut p, "0", rows, cols, storage_numel);
    p.push(b'u');
    unicode(&mut p, "step");
    int(&mut p, 500);
    p.extend_from_slice(b"u.");
    p
}

#[test]
fn a_classic_pt_embedding_is_read_without_unpickling() {
    let dir = temp_dir("pt");
    let path = dir.join("classic.pt");
    let data: Vec<f32> = (0..2 * 32).map(|i| i as f32 / 64.0).collect();
    write_archive(&path, &classic_embedding_pickle(2, 32, 64), &[("0", data.clone())]);
    let emb = EmbeddingData::read(&path).expect("classic .pt embedding");
    assert_eq!((emb.count(), emb.width()), (2, 32));
    let vectors = emb.vectors_for(&[32]).expect("fits a 32-wide text encoder");
    assert_eq!(vectors[0].flatten_all().unwrap().to_vec1::<f32>().unwrap(), data);
    assert!(emb.vectors_for(&[768]).is_none(), "a 768-wide model skips it");
    assert_eq!(emb.info().step, Some(500), "the listing shows the training step");
}

#[test]
fn a_pickle_that_would_run_code_is_refused_by_name() {
    let dir = temp_dir("evil");
    let path = dir.join("evil.pt");
    let mut p = vec![0x80, 2];
    p.extend_from_slice(b"cos\nsystem\n(");
    unicode(&mut p, "touch /tmp/pwned");
    p.extend_from_slice(b"tR.");
    write_archive(&path, &p, &[]);
    let err = EmbeddingData::read(&path).expect_err("refused").to_string();
    assert!(err.contains("os.system"), "{err}");
    let err = LoraFile::read(&path).expect_err("refused").to_string();
    assert!(err.contains("os.system"), "{err}");
}

#[test]
fn forged_and_broken_archives_are_errors() {
    let dir = temp_dir("forged");
    // A tensor claiming far more data than the file holds.
    let forged = dir.join("forged.pt");
    write_archive(&forged, &classic_embedding_pickle(1 << 20, 1 << 10, 64), &[("0", vec![0.0; 64])]);
    let err = EmbeddingData::read(&forged).expect_err("forged size").to_string();
    assert!(err.contains("more than the file has"), "{err}");
    // A memo bomb: each step stores the list and puts two copies of it in a new one.
    let bomb = dir.join("bomb.pt");
    let mut p = vec![0x80, 2, b']'];
    for _ in 0..48 {
        p.extend_from_slice(&[b'q', 0, b'(', b'h', 0, b'h', 0, b't']);
    }
    p.push(b'.');
    write_archive(&bomb, &p, &[]);
    let err = EmbeddingData::read(&bomb).expect_err("memo bomb").to_string();
    assert!(err.contains("more than"), "{err}");
    // Not an archive at all, and a legacy (non-zip) pickle.
    let junk = dir.join("junk.pt");
    std::fs::write(&junk, b"this is not a tensor file").unwrap();
    assert!(EmbeddingData::read(&junk).expect_err("junk").to_string().contains("not a PyTorch zip archive"));
    let legacy = dir.join("legacy.ckpt");
    std::fs::write(&legacy, [0x80, 2, b'}', b'.']).unwrap();
    assert!(LoraFile::read(&legacy).is_err());
    // Structurally valid pickles candle cannot make tensors of (an arg tuple too short).
    let short = dir.join("short.pt");
    let mut p = vec![0x80, 2, b'}', b'('];
    unicode(&mut p, "x");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(K\x00tRu.");
    write_archive(&short, &p, &[]);
    assert!(EmbeddingData::read(&short).is_err());
}

#[test]
fn truncated_and_malformed_safetensors_are_errors() {
    let dir = temp_dir("st");
    let good = root().join("tests/fixtures/a1111-parity-features/models/Lora/tiny-lora.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(LoraFile::read(&truncated).is_err());
    let header_only = dir.join("header.safetensors");
    std::fs::write(&header_only, &bytes[..100]).unwrap();
    assert!(LoraFile::read(&header_only).is_err());
    let huge_header = dir.join("huge.safetensors");
    std::fs::write(&huge_header, u64::MAX.to_le_bytes()).unwrap();
    assert!(EmbeddingData::read(&huge_header).is_err());
    // Valid safetensors without any network weights.
    let empty = dir.join("nothing.safetensors");
    let mut map = std::collections::HashMap::new();
    map.insert("unrelated".to_string(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&map, &empty).unwrap();
    let err = LoraFile::read(&empty).expect_err("no modules").to_string();
    assert!(err.contains("no LoRA"), "{err}");
    // Embeddings with too many vectors, or two unrelated tensors.
    let long = dir.join("long.safetensors");
    map.clear();
    map.insert("emb_params".to_string(), Tensor::zeros((80, 32), DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&map, &long).unwrap();
    assert!(EmbeddingData::read(&long).expect_err("80 vectors").to_string().contains("1 to 75"));
    let two = dir.join("two.safetensors");
    map.insert("other".to_string(), Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&map, &two).unwrap();
    assert!(EmbeddingData::read(&two).is_err());
}

/// A LoRA whose update does not fit its target leaves that weight as it is (A1111 skips it too).
#[test]
fn a_lora_of_the_wrong_shape_changes_nothing() {
    let dir = temp_dir("shape");
    let path = dir.join("wrong.safetensors");
    let mut map = std::collections::HashMap::new();
    let key = "lora_unet_down_blocks_0_attentions_0_proj_in";
    map.insert(format!("{key}.lora_up.weight"), Tensor::ones((7, 2), DType::F32, &Device::Cpu).unwrap());
    map.insert(format!("{key}.lora_down.weight"), Tensor::ones((2, 5), DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&map, &path).unwrap();
    let checkpoint = root().join("tests/fixtures/a1111-parity/models/tiny-sd15.safetensors");
    let mut patched = open_checkpoint(&checkpoint).unwrap();
    let index = LayerIndex::new(patched.family, patched.store.names());
    let (patch, report) = LoraPatch::new(&LoraFile::read(&path).unwrap(), patched.family, &index, 1.0, 1.0, None);
    assert_eq!(report.matched, 1);
    patched.store.add_patch(Arc::new(patch));
    let name = "model.diffusion_model.input_blocks.1.1.proj_in.weight";
    let base = open_checkpoint(&checkpoint).unwrap().store.load(name, DType::F32, &Device::Cpu).unwrap();
    let merged = patched.store.load(name, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        base.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        merged.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

/// Through `process_images` and the real runner: a request naming a broken LoRA fails with a
/// message naming the file, a broken embedding is skipped, and the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_network_files_fail_one_request_and_the_service_goes_on() {
    let models = temp_dir("models");
    for sub in ["Stable-diffusion", "Lora", "embeddings"] {
        std::fs::create_dir_all(models.join(sub)).unwrap();
    }
    for file in ["tiny-sd15.safetensors", "tiny-sd15.yaml"] {
        let link = models.join("Stable-diffusion").join(file);
        if !link.exists() {
            std::os::unix::fs::symlink(root().join("tests/fixtures/a1111-parity/models").join(file), &link).unwrap();
        }
    }
    std::fs::write(models.join("Lora/broken.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    std::fs::write(models.join("embeddings/broken-emb.safetensors"), b"garbage").unwrap();
    let index = ModelIndex::scan(&models).unwrap();
    assert_eq!(index.networks.loras.len(), 1);
    let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(DiffusionExecutor::new("cpu").unwrap()));
    let ctx = ProcessingContext::new(runner, index, "test");
    let request = |prompt: &str| {
        let body = serde_json::json!({"prompt": prompt, "steps": 2, "width": 64, "height": 64, "seed": 1});
        GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap())
    };
    let err = process_images(&ctx, request("a cube <lora:broken:1>")).await.expect_err("broken LoRA");
    let message = format!("{err:?}");
    assert!(message.contains("broken.safetensors"), "{message}");
    // A tag whose multiplier is not a number is the client's error.
    let bad = process_images(&ctx, request("a cube <lora:broken:lots>")).await.expect_err("bad multiplier");
    assert_eq!(bad.status, 422, "{bad:?}");
    let ok = process_images(&ctx, request("a cube, broken-emb")).await.expect("the next request is served");
    assert_eq!(ok.images.len(), 1);
    assert!(!ok.infotexts[0].contains("TI hashes"), "{}", ok.infotexts[0]);
}

/// SDXL embeddings (`clip_l` + `clip_g`) reach both text encoders: the prompt's call reports the
/// embedding once per encoder in `TI hashes`; an SD 1.x-width embedding is skipped on SDXL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdxl_embeddings_feed_both_text_encoders() {
    let models = temp_dir("sdxl");
    for sub in ["Stable-diffusion", "embeddings"] {
        std::fs::create_dir_all(models.join(sub)).unwrap();
    }
    for file in ["tiny-sdxl.safetensors", "tiny-sdxl.yaml"] {
        let link = models.join("Stable-diffusion").join(file);
        if !link.exists() {
            std::os::unix::fs::symlink(root().join("tests/fixtures/a1111-parity-sdxl/models").join(file), &link)
                .unwrap();
        }
    }
    let mut map = std::collections::HashMap::new();
    map.insert("clip_l".to_string(), Tensor::ones((2, 8), DType::F32, &Device::Cpu).unwrap());
    map.insert("clip_g".to_string(), (Tensor::ones((2, 16), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap());
    candle_core::safetensors::save(&map, models.join("embeddings/xl-emb.safetensors")).unwrap();
    let sd1 = root().join("tests/fixtures/a1111-parity-features/models/embeddings/tiny-emb.safetensors");
    std::fs::copy(sd1, models.join("embeddings/tiny-emb.safetensors")).unwrap();
    let short = |name: &str| {
        sdapi_core::models_dir::sha256_file(&models.join("embeddings").join(name)).unwrap()[..12].to_string()
    };

    let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(DiffusionExecutor::new("cpu").unwrap()));
    let ctx = ProcessingContext::new(runner, ModelIndex::scan(&models).unwrap(), "test");
    let request = |prompt: &str| {
        let body = serde_json::json!({"prompt": prompt, "steps": 2, "width": 64, "height": 64, "seed": 1});
        GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap())
    };
    let with = process_images(&ctx, request("a photo of xl-emb and tiny-emb")).await.unwrap();
    let h = short("xl-emb.safetensors");
    assert!(with.infotexts[0].contains(&format!("TI hashes: \"xl-emb: {h}, xl-emb: {h}\"")), "{}", with.infotexts[0]);
    assert!(!with.infotexts[0].contains("tiny-emb:"), "the 32-wide embedding is skipped on SDXL");
    let without = process_images(&ctx, request("a photo of xl emb and tiny-emb")).await.unwrap();
    assert!(!without.infotexts[0].contains("TI hashes"));
    assert_ne!(with.images[0].pixels, without.images[0].pixels, "the vectors change the conditioning");
}

/// The base weights are never modified: after a LoRA request the plain request gives the plain
/// image again, and switching back to a set gives that set's image again (the runner keeps the
/// checkpoint resident between them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_lora_sets_restores_exactly() {
    let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(DiffusionExecutor::new("cpu").unwrap()));
    let index = ModelIndex::scan(&root().join("samples/models")).unwrap();
    let ctx = ProcessingContext::new(runner, index, "test");
    let run = |prompt: &'static str| {
        let ctx = ctx.clone();
        async move {
            let body = serde_json::json!({"prompt": prompt, "steps": 3, "width": 64, "height": 64, "seed": 5,
                "override_settings": {"sd_model_checkpoint": "tiny-sd15"}});
            let request = GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap());
            process_images(&ctx, request).await.unwrap().images.remove(0).pixels
        }
    };
    let plain = run("a cube").await;
    let lora = run("a cube<lora:tiny-lora:0.8>").await;
    let half = run("a cube<lora:tiny-lora:0.4>").await;
    assert_ne!(plain, lora);
    assert_ne!(lora, half);
    assert_eq!(run("a cube").await, plain, "no LoRA after a LoRA: the base image");
    assert_eq!(run("a cube<lora:tiny-lora:0.8>").await, lora, "the same set again: the same image");
}
