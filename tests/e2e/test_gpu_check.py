"""The GPU check's CPU-side parts in smoke mode (scripts/gpu-check, docs/cuda.md).

CI has no GPU and no torch: `gpu-check.sh --smoke` runs the same orchestration on the CPU with
the debug binaries and tiny shapes — the parity part serves the bundled fixture models and
compares two cases per set, the ops part times `bench ops`, the bench part runs `bench gen`
twice, and the diffusers reference contributes its plan (configs and sigma schedule, no torch) —
then writes the results JSON. With
torch and diffusers importable the reference also runs for real and a ratio is computed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT

NEEDS_SERVER = False
SCRIPT = ROOT / "scripts" / "gpu-check" / "gpu-check.sh"


def run_check(ctx, *args, timeout=600):
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    return subprocess.run(["bash", str(SCRIPT), "--bin-dir", str(ctx.binary.parent), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_smoke_mode_writes_the_results_json(ctx):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        p = run_check(ctx, "--smoke", "--out", str(out))
        print("     " + p.stdout.rstrip().replace("\n", "\n     "))
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        r = json.loads(out.read_text())
    assert r["check"] == "gpu-check" and r["environment"]["device"] == "cpu" and r["environment"]["smoke"]
    # Parity: two cases of each of the four fixture sets, served by the real binary, all passing.
    [par] = r["parity"]
    assert par["dtype"] == "f32" and par["total"] == 8 and par["errors"] == 0, par
    assert par["passed"] == 8, [c for c in par["cases"] if not c["pass"]]
    assert {c["set"] for c in par["cases"]} == {"a1111-parity", "a1111-parity-sdxl", "a1111-parity-sd2",
                                                "a1111-parity-features"}
    assert all(isinstance(c["max_abs"], int) and c["max_abs"] <= 2 for c in par["cases"]), par["cases"]
    # Ops: every single op timed on our side (torch's twins when torch is importable).
    o = r["ops"]
    assert (o["latent"], o["device"], o["dtype"]) == (8, "cpu", "f32") and "ours_error" not in o, o
    assert len(o["ops"]) == 10 and all(x["ours_ms"] > 0 for x in o["ops"]), o["ops"]
    assert any(x["op"] == "self-attn 64 tok 320 wide" for x in o["ops"]), o["ops"]
    if "torch_skipped" not in o:
        assert "torch_error" not in o and sum("ratio" in x for x in o["ops"]) == 8, o
    # Bench: ours ran twice (rounds) with the timed iterations; the reference's plan agrees.
    [b] = r["bench"]
    assert (b["arch"], b["size"], b["steps"], b["dtype"]) == ("tiny", 64, 2, "f32")
    ours = b["ours"]
    assert len(ours["runs"]) == 2 and ours["n"] == 6 and ours["median_ms"] > 0, ours
    assert ours["non_finite"] is False and ours["peak_mib_max"] > 0
    assert ours["unet_params"] == 792_964  # the tiny UNet; diffusers' count for its config
    plan = b["diffusers"]["plan"]
    assert plan["unet"]["block_out_channels"] == [32, 64] and plan["timesteps"] == [999, 0, 0]
    assert b["sigmas_agree"] is True, (ours["sigmas"], plan["sigmas"])
    if "skipped" in b["diffusers"]:
        print(f"     reference not run: {b['diffusers']['skipped']} (plan checked)")
    else:
        assert b["params_agree"] is True and b["ratio"] > 0, b


def test_bad_arguments_are_refused_before_anything_runs(ctx):
    p = run_check(ctx, "--smoke", "--rounds", "0", timeout=60)
    assert p.returncode == 2 and "--rounds" in p.stderr, p.stderr
    p = run_check(ctx, "--smoke", "--parity-dtypes", "bf16", timeout=60)
    assert p.returncode == 2 and "--parity-dtypes" in p.stderr, p.stderr
    with tempfile.TemporaryDirectory() as empty:
        p = subprocess.run(["bash", str(SCRIPT), "--smoke", "--bin-dir", empty], capture_output=True, text=True,
                           timeout=60, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
        assert p.returncode == 2 and "no sdapi" in p.stderr, p.stderr


def test_reference_plan_needs_no_torch_and_checks_its_arguments(ctx):
    ref = ROOT / "scripts" / "gpu-check" / "reference_gen.py"
    p = subprocess.run([sys.executable, str(ref), "--plan", "--arch", "sdxl", "--size", "1024", "--steps", "20"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["unet"]["transformer_layers_per_block"] == [1, 2, 10]
    assert plan["unet"]["projection_class_embeddings_input_dim"] == 2816
    assert len(plan["sigmas"]) == 21 and plan["sigmas"][-1] == 0.0
    bad = subprocess.run([sys.executable, str(ref), "--plan", "--size", "100"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "multiple of 8" in bad.stderr, bad.stderr
