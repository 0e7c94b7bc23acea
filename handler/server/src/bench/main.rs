//! `bench`: timings of the engine and the request path, to compare with
//! `scripts/bench/reference.py` (PyTorch/diffusers) measured in the same run. See
//! docs/benchmarks.md for the method and the figures.
//!
//! ```text
//! bench --smoke                         tiny shapes, every stage once, < 30 s (CI)
//! bench unet     [--latent 32] [--iters 5] [--warmup 1] [--arch sd15|tiny]
//! bench ops      [--latent 32] [--iters 5] [--warmup 1] [--device cpu|cuda] [--dtype auto|f32|f16]
//! bench load     [--arch sd15|sdxl|tiny]   one fresh process: reading the checkpoint once (warm cache,
//!                8 MiB buffer as `cat`), then loading it into an f32 model
//! bench parts    [--latent 32] [--iters 3] [--warmup 1] [--stages text,decode,encode]   text encoder, VAE decode of a
//!                latent×latent latent, VAE encode of the (8·latent)² image it decodes to
//! bench txt2img  [--size 256] [--steps 20] [--iters 3] [--arch sd15|tiny]
//! bench gen      [--arch sd15|sdxl|tiny] [--size 512] [--steps 20] [--iters 3] [--warmup 1] [--device cpu|cuda] [--dtype auto|f32|f16]
//!                random-weight UNet + VAE built on the device: Euler CFG loop and decode (scripts/gpu-check)
//! bench lora     [--rank 32] [--iters 3] [--arch sd15|tiny]   load with a LoRA merged, switch sets
//! bench overhead [--iters 10] [--steps 20]   tiny bundled model through the router
//! bench coldstart [--iters 3]                spawn `sdapi`, first image served
//! bench inpaint  [--size 512] [--iters 5] [--steps 10]   mask preparation and paste back, requests with/without a mask
//! bench batching [--size 256] [--steps 4] [--requests 8] [--rounds 2] [--arch sd15|tiny]   concurrent requests in shared runs vs one by one
//! ```
//! Every line of output is one JSON object (`{"bench": …, "median_ms": …}`).

mod batching;
mod coldstart;
mod inpaint;
mod overhead;

use std::path::PathBuf;

use sdapi_engine::bench::{
    Arch, BenchDevice, BenchError, BenchModel, GenModel, PipelineBench, Samples, default_models_dir, ensure_checkpoint,
    lora_times, time_ops, write_lora,
};
use serde_json::json;

/// Parsed `--name value` flags.
struct Args {
    mode: String,
    flags: Vec<(String, String)>,
}

impl Args {
    fn parse() -> Self {
        let mut it = std::env::args().skip(1);
        let mode = it.next().unwrap_or_else(|| "--smoke".into());
        let rest: Vec<String> = it.collect();
        let flags = rest
            .chunks(2)
            .map(|c| (c[0].trim_start_matches("--").to_string(), c.get(1).cloned().unwrap_or_default()))
            .collect();
        Self { mode, flags }
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.flags.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok()).unwrap_or(default)
    }

    fn arch(&self) -> Result<Arch, BenchError> {
        let name = self.get("arch", String::from("sd15"));
        Arch::from_name(&name)
            .ok_or_else(|| BenchError::Request(format!("--arch {name:?}: expected sd15, sdxl or tiny")))
    }

    fn models_dir(&self) -> PathBuf {
        self.flags
            .iter()
            .find(|(k, _)| k == "models-dir")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(default_models_dir)
    }
}

fn report(bench: &str, extra: serde_json::Value, s: &Samples) {
    let samples: Vec<f64> = s.ms.iter().map(|m| round(*m)).collect();
    let mut v = json!({"bench": bench, "median_ms": round(s.median()), "min_ms": round(s.min()), "max_ms": round(s.max()), "n": s.ms.len(), "samples_ms": samples});
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    println!("{v}");
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn unet(args: &Args, arch: Arch) -> Result<(), BenchError> {
    let latent = args.get("latent", 32usize);
    let model = BenchModel::load(&ensure_checkpoint(arch, &args.models_dir())?)?;
    let (s, std) = model.unet_cfg_step(latent, args.get("warmup", 1), args.get("iters", 5))?;
    report(
        "unet_cfg_step",
        json!({"arch": arch.name(), "latent": latent, "batch": 2, "eps_std": std, "load_ms": round(model.load_ms)}),
        &s,
    );
    Ok(())
}

/// Loading the checkpoint against reading its bytes once, in one fresh process: a warm-up read
/// (page cache), the timed read, then the load, which like a server's first load gets fresh memory
/// from the kernel. Later loads in one process reuse freed heap and are no measure of a cold start,
/// so a run is one load; scripts/bench/cpu_table.py repeats processes.
fn load(args: &Args, arch: Arch) -> Result<(), BenchError> {
    let path = ensure_checkpoint(arch, &args.models_dir())?;
    let bytes = std::fs::metadata(&path).map_err(|e| BenchError::Io(path.display().to_string(), e))?.len();
    read_once(&path)?;
    let start = std::time::Instant::now();
    read_once(&path)?;
    let read = Samples { ms: vec![start.elapsed().as_secs_f64() * 1e3] };
    report("file_read", json!({"arch": arch.name(), "bytes": bytes}), &read);
    let model = BenchModel::load(&path)?;
    let loaded = Samples { ms: vec![model.load_ms] };
    report(
        "checkpoint_load",
        json!({"arch": arch.name(), "bytes": bytes, "load_over_read": round(model.load_ms / read.ms[0])}),
        &loaded,
    );
    Ok(())
}

/// Reads a file start to end through one reused buffer and discards it.
fn read_once(path: &std::path::Path) -> Result<(), BenchError> {
    use std::io::Read;
    let io = |e| BenchError::Io(path.display().to_string(), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 8 << 20];
    while file.read(&mut buf).map_err(io)? > 0 {}
    Ok(())
}

fn parts(args: &Args, arch: Arch) -> Result<(), BenchError> {
    let latent = args.get("latent", 32usize);
    let (iters, warmup) = (args.get("iters", 3), args.get("warmup", 1));
    let stages = args.get("stages", String::from("text,decode,encode"));
    let wants = |stage: &str| stages.split(',').any(|s| s.trim() == stage);
    let model = BenchModel::load(&ensure_checkpoint(arch, &args.models_dir())?)?;
    if wants("text") {
        report("text_encode", json!({"arch": arch.name(), "batch": 2}), &model.text_encode(warmup, iters)?);
    }
    if wants("decode") {
        report("vae_decode", json!({"arch": arch.name(), "latent": latent}), &model.vae_decode(latent, warmup, iters)?);
    }
    if wants("encode") {
        let pixels = latent * 8;
        report("vae_encode", json!({"arch": arch.name(), "pixels": pixels}), &model.vae_encode(pixels, warmup, iters)?);
    }
    Ok(())
}

/// A whole generation with random weights on `--device` in `--dtype` (what scripts/gpu-check times).
fn generate(args: &Args, arch: Arch) -> Result<(), BenchError> {
    let device_spec = args.get("device", String::from("cpu"));
    let (size, steps) = (args.get("size", 512usize), args.get("steps", 20usize));
    let model = GenModel::open(arch, &device_spec, &args.get("dtype", String::from("auto")))?;
    let dtype = model.dtype();
    let r = model.run(size, steps, args.get("warmup", 1), args.get("iters", 3))?;
    let extra = json!({
        "arch": arch.name(), "size": size, "steps": steps, "device": device_spec, "dtype": format!("{dtype:?}").to_lowercase(),
        "build_ms": round(r.build_ms), "decode_median_ms": round(r.decode.median()), "non_finite": r.non_finite,
        "image_std": r.image_std,
        "unet_params": r.unet_params, "sigmas": r.sigmas.iter().map(|(s, _)| (s * 1e6).round() / 1e6).collect::<Vec<_>>(),
        "timesteps": r.sigmas.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
    });
    report("gen", extra, &r.total);
    Ok(())
}

fn ops(args: &Args) -> Result<(), BenchError> {
    let device_spec = args.get("device", String::from("cpu"));
    let target = BenchDevice::open(&device_spec, &args.get("dtype", String::from("auto")))?;
    let dtype = format!("{:?}", target.dtype).to_lowercase();
    for op in time_ops(&target, args.get("latent", 32usize), args.get("warmup", 1), args.get("iters", 5))? {
        report("op", json!({"op": op.name, "device": device_spec, "dtype": dtype}), &op.samples);
    }
    Ok(())
}

/// Loading the checkpoint with a rank-`rank` LoRA merged, and switching between two LoRA sets.
fn lora(args: &Args, arch: Arch) -> Result<(), BenchError> {
    let (rank, iters) = (args.get("rank", 32usize), args.get("iters", 3usize));
    let dir = args.models_dir();
    let checkpoint = ensure_checkpoint(arch, &dir)?;
    let lora_dir = dir.join("Lora");
    std::fs::create_dir_all(&lora_dir).map_err(|e| BenchError::Io(lora_dir.display().to_string(), e))?;
    let (a, b) = (
        lora_dir.join(format!("bench-{}-r{rank}-a.safetensors", arch.name())),
        lora_dir.join(format!("bench-{}-r{rank}-b.safetensors", arch.name())),
    );
    let modules = write_lora(&checkpoint, &a, rank, 1)?;
    write_lora(&checkpoint, &b, rank, 1_000_003)?;
    let t = lora_times(&checkpoint, &a, &b, iters)?;
    let extra = json!({"arch": arch.name(), "rank": rank, "modules": modules, "lora": a.display().to_string()});
    report("load_base", extra.clone(), &t.base);
    report("lora_read", extra.clone(), &t.read);
    report("load_with_lora", extra.clone(), &t.with_lora);
    report("lora_switch", extra, &t.switch);
    Ok(())
}

async fn txt2img(args: &Args, arch: Arch) -> Result<(), BenchError> {
    let (size, steps, iters) = (args.get("size", 256usize), args.get("steps", 20usize), args.get("iters", 3usize));
    let dir = args.models_dir();
    ensure_checkpoint(arch, &dir)?;
    let pipe = PipelineBench::new(&dir, &format!("bench-{}", arch.name()))?;
    // The first request loads the checkpoint (hash + load): report it apart.
    let first = pipe.txt2img(size, steps, 1).await?;
    println!("{}", json!({"bench": "txt2img_first", "arch": arch.name(), "process_ms": round(first.process_ms)}));
    let (mut total, mut exec, mut enc) = (Samples::default(), Samples::default(), Samples::default());
    for i in 0..iters {
        let r = pipe.txt2img(size, steps, 2 + i as u64).await?;
        total.push(r.process_ms + r.encode_ms);
        exec.push(r.execute_ms);
        enc.push(r.encode_ms);
    }
    let extra = json!({"arch": arch.name(), "size": size, "steps": steps, "sampler": "Euler a"});
    report("txt2img_total", extra.clone(), &total);
    report("txt2img_execute", extra.clone(), &exec);
    report("txt2img_png_base64", extra, &enc);
    Ok(())
}

/// Every stage once on tiny shapes: proves the benchmark still builds and runs (CI), times nothing.
async fn smoke(args: &Args) -> Result<(), BenchError> {
    let dir = std::env::temp_dir().join(format!("sdapi-bench-smoke-{}", std::process::id()));
    let mut a = Args {
        mode: String::new(),
        flags: vec![
            ("models-dir".into(), dir.display().to_string()),
            ("iters".into(), "1".into()),
            ("warmup".into(), "0".into()),
        ],
    };
    a.flags.push(("latent".into(), "8".into()));
    unet(&a, Arch::Tiny)?;
    parts(&a, Arch::Tiny)?;
    for op in time_ops(&BenchDevice::cpu_f32(), 8, 0, 1)? {
        report("op", json!({"op": op.name}), &op.samples);
    }
    a.flags.extend([("size".into(), "64".into()), ("steps".into(), "2".into())]);
    generate(&a, Arch::Tiny)?;
    txt2img(&a, Arch::Tiny).await?;
    a.flags.extend([("rank".into(), "4".into())]);
    lora(&a, Arch::Tiny)?;
    overhead::run(&a, 1, 2).await?;
    a.flags.extend([("requests".into(), "2".into()), ("rounds".into(), "1".into())]);
    batching::run(&a, Arch::Tiny).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = args;
    println!("{}", json!({"bench": "smoke", "ok": true}));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Same allocator tuning as the server, so the figures are the server's.
    sdapi_server::allocator::tune_allocator();
    let args = Args::parse();
    let arch = match args.arch() {
        Ok(arch) => arch,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let result = match args.mode.as_str() {
        "gen" => generate(&args, arch),
        "--smoke" | "smoke" => smoke(&args).await,
        "unet" => unet(&args, arch),
        "load" => load(&args, arch),
        "parts" => parts(&args, arch),
        "ops" => ops(&args),
        "txt2img" => txt2img(&args, arch).await,
        "lora" => lora(&args, arch),
        "overhead" => overhead::run(&args, args.get("iters", 10), args.get("steps", 20)).await,
        "coldstart" => coldstart::run(args.get("iters", 3)),
        "inpaint" => inpaint::run(&args).await,
        "batching" => batching::run(&args, arch).await,
        other => {
            eprintln!("unknown mode {other:?}; see the doc comment of handler/server/src/bench/main.rs");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
