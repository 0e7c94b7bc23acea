//! CI smoke of the benchmark binary: every stage (random-weight checkpoint through the real loader,
//! UNet/VAE/CLIP, op list, process_images txt2img, router overhead) runs once on tiny shapes.
//! No timing assertions: timings on a shared CI machine are noise.

#[test]
fn bench_smoke_runs_every_stage() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_bench")).arg("--smoke").output().expect("run bench --smoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench --smoke failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    for bench in ["unet_cfg_step", "vae_decode", "text_encode", "txt2img_total", "request_overhead", "\"smoke\""] {
        assert!(stdout.contains(bench), "no {bench} line in:\n{stdout}");
    }
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}
