#!/usr/bin/env python3
"""The CPU table of docs/benchmarks.md: ours (`bench`) and PyTorch/diffusers (reference.py)
alternating process by process, every sample kept, peak RSS of every process.

    scripts/bench/cpu_table.py [--bench target/release/bench] [--python /tmp/venv-bench/bin/python]
                               [--rounds 3] [--txt2img-rounds 5] [--load-rounds 5] [--out /tmp/cpu-table.jsonl]

Per round and side one process per measurement: UNet CFG step at 256² (32² latent), CLIP-L on
two 77-token chunks plus VAE decode 32² → 256² and encode 256² → 32², and a whole 256² txt2img
(20 steps Euler a, CFG 7, decode, PNG + base64; one image per process, so its peak RSS is the
request's), and the checkpoint load (one process each: a warm read of the file, then the load; ours
through the real loader, torch as safetensors' load_file + .float()). Threads: RAYON_NUM_THREADS / torch.set_num_threads, default 2. Prints one markdown
row per figure: medians of all samples, ratio ours/torch, n per side, peak RSS per side.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "gpu-check"))
from check import MemoryProbe  # noqa: E402  peak RSS of a child through wait4


def run(cmd: list[str], env: dict) -> tuple[list[dict], float]:
    """The JSON lines a process printed, and its peak RSS in MiB (the GPU check's probe, on the CPU)."""
    rc, stdout, stderr, peak = MemoryProbe("cpu").run(cmd, env, timeout_s=3600)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(stdout + stderr)[-3000:]}")
    rows = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="target/release/bench")
    ap.add_argument("--python", default="/tmp/venv-bench/bin/python")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--txt2img-rounds", type=int, default=5)
    ap.add_argument("--load-rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models-dir", default="/tmp/sdapi-bench-models")
    ap.add_argument("--out", type=Path, default=Path("/tmp/cpu-table.jsonl"))
    a = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    ref = [a.python, str(HERE / "reference.py")]
    ours = [a.bench]
    md = ["--models-dir", a.models_dir]
    plan = [  # (label, rounds, our args, reference args)
        ("ops", 1, ["ops", "--latent", "32", "--iters", "5"], ["ops", "--latent", "32", "--iters", "5"]),
        ("unet", a.rounds, ["unet", "--latent", "32", "--iters", "2", "--warmup", "1", *md],
         ["unet", "--latent", "32", "--iters", "2", "--warmup", "1"]),
        ("parts", a.rounds, ["parts", "--latent", "32", "--iters", "2", "--warmup", "1", *md],
         ["parts", "--latent", "32", "--iters", "2"]),
        ("load", a.load_rounds, ["load", *md],
         ["load", "--checkpoint", str(Path(a.models_dir) / "Stable-diffusion" / "bench-sd15.safetensors")]),
        ("txt2img", a.txt2img_rounds, ["txt2img", "--size", "256", "--steps", "20", "--iters", "1", *md],
         ["txt2img", "--size", "256", "--steps", "20", "--iters", "1"]),
    ]
    samples: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], list[float]] = {}
    started = time.time()
    with a.out.open("w") as log:
        for label, rounds, our_args, ref_args in plan:
            for rnd in range(rounds):
                for side, cmd in (("ours", ours + our_args), ("torch", ref + ref_args + ["--threads", str(a.threads)])):
                    rows, peak = run(cmd, env)
                    for r in rows:
                        if "samples_ms" not in r:
                            continue
                        name = f"op {r['op']}" if r["bench"] == "op" else r["bench"]
                        samples.setdefault((name, side), []).extend(r["samples_ms"])
                        log.write(json.dumps({**r, "impl": side, "round": rnd, "peak_rss_mib": round(peak, 1)}) + "\n")
                    rss.setdefault((label, side), []).append(peak)
                    print(f"{label} round {rnd} {side}: peak {peak:.0f} MiB, "
                          + ", ".join(f"{r['bench']} {r['median_ms']:.0f} ms" for r in rows if "median_ms" in r), flush=True)
    print(f"\n{time.time() - started:.0f} s\n")
    print("| measurement | ours (median) | torch (median) | ours / torch | n ours / torch |")
    print("| --- | ---: | ---: | ---: | ---: |")
    ops = sorted({name for name, _ in samples if name.startswith("op ")})
    for bench in ("unet_cfg_step", "text_encode", "vae_decode", "vae_encode", "txt2img_total", "file_read",
                  "checkpoint_load", *ops):
        o, t = samples.get((bench, "ours"), []), samples.get((bench, "torch"), [])
        if o and t:
            mo, mt = statistics.median(o), statistics.median(t)
            print(f"| {bench} | {mo:.1f} ms | {mt:.1f} ms | **{mo / mt:.2f}** | {len(o)} / {len(t)} |")
        elif o:
            print(f"| {bench} | {statistics.median(o):.1f} ms | – | – | {len(o)} / 0 |")
    for side in ("ours", "torch"):
        loads, reads = samples.get(("checkpoint_load", side), []), samples.get(("file_read", side), [])
        if loads and reads:
            print(f"| load ÷ warm read, {side} | {statistics.median(loads) / statistics.median(reads):.1f}× | | | {len(loads)} |")
    for label in ("unet", "parts", "txt2img"):  # ops processes hold no model: not compared
        o, t = rss.get((label, "ours"), []), rss.get((label, "torch"), [])
        if o and t:
            print(f"| peak RSS, {label} process | {max(o):.0f} MiB | {max(t):.0f} MiB | **{max(o) / max(t):.2f}** | {len(o)} / {len(t)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
