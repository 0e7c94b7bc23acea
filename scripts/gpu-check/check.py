#!/usr/bin/env python3
"""The GPU check: parity fixtures on the device, and a generation against diffusers on it.

    check.py --sdapi BIN --bench BIN [--out results.json] [--device cuda] [--smoke] [--rounds 2]
             [--iters 3] [--budget-s 420] [--parity-dtypes f32,f16] [--skip-parity] [--skip-bench]
             [--skip-ops]

Run through scripts/gpu-check/gpu-check.sh on a machine with an NVIDIA GPU, PyTorch and the
packaged CUDA binaries (docs/cuda.md). Three parts, one JSON file:

1. parity: the packaged `sdapi` serves the bundled fixture models (samples/models) on the device
   (`SDAPI_DEVICE`, once per `SDAPI_DTYPE` of --parity-dtypes); every case of tests/fixtures/
   a1111-parity* is posted and compared by the fixtures' own compare.py: per case PASS (max |diff|
   <= 2 levels) or the max difference.
2. bench: `bench gen` and scripts/gpu-check/reference_gen.py (diffusers, SDPA) alternate, the same
   work on the same device: SD 1.5 at 512² and SDXL at 1024², 20 steps, f16, random weights. Per
   side: median of every timed run, peak device memory (nvidia-smi's memory.used above the idle
   baseline, polled every 50 ms while the process runs; the same probe for both sides; torch's own
   allocator peak beside it), NaN/inf, the UNet parameter count (both sides must agree) and the
   sigma schedule (must agree).
3. ops: `bench ops` and scripts/bench/reference.py ops (torch) time the same single ops (conv,
   GroupNorm, linear, attention at SD 1.5's 64² level) on the device in the bench's precision:
   per op both medians and the ratio, the profile of a gap when no profiler runs there.
4. summary: ratios ours/diffusers against the targets of docs/benchmarks.md.

--smoke runs everything on the CPU with tiny shapes (CI): it checks the orchestration, the JSON
and the reference's plan (`--plan`, so no torch is needed); with torch importable it also runs the
reference for real. Exit status: 0 when every part ran and no parity case errored; the ratios
are reported, not judged by the exit status.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FIXTURE_SETS = ["a1111-parity", "a1111-parity-sdxl", "a1111-parity-sd2", "a1111-parity-features"]
# (arch, size, steps) per mode, and the targets of the performance issue (ours / diffusers).
GPU_RUNS = [("sd15", 512, 20), ("sdxl", 1024, 20)]
SMOKE_RUNS = [("tiny", 64, 2)]
TARGETS = {"sd15": 0.8, "sdxl": 1.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sdapi", type=Path, required=True, help="the sdapi binary (CUDA build on a GPU)")
    p.add_argument("--bench", type=Path, required=True, help="the bench binary of the same build")
    p.add_argument("--out", type=Path, default=Path("gpu-check-results.json"))
    p.add_argument("--device", default=None, help="cuda (default) or cpu; --smoke implies cpu")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, 2 parity cases per set")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per side and shape")
    p.add_argument("--iters", type=int, default=3, help="timed generations per process")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip bench rounds once this much time is spent")
    p.add_argument("--parity-dtypes", default=None, help="SDAPI_DTYPE values for the parity runs")
    p.add_argument("--cases-per-set", type=int, default=0, help="0: every case")
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--skip-ops", action="store_true")
    p.add_argument("--python", default=sys.executable, help="the interpreter with torch and diffusers")
    a = p.parse_args(argv)
    if a.rounds < 1 or a.iters < 1 or a.budget_s <= 0 or a.cases_per_set < 0:
        p.error("--rounds and --iters must be >= 1, --budget-s > 0, --cases-per-set >= 0")
    a.device = a.device or ("cpu" if a.smoke else "cuda")
    if a.parity_dtypes is None:
        a.parity_dtypes = "f32" if a.device == "cpu" else "f32,f16"
    a.parity_dtypes = [d.strip() for d in a.parity_dtypes.split(",") if d.strip()]
    if any(d not in ("f32", "f16", "auto") for d in a.parity_dtypes):
        p.error("--parity-dtypes takes f32, f16 or auto")
    if a.smoke and not a.cases_per_set:
        a.cases_per_set = 2
    return a


# ---------------------------------------------------------------------------------------------
# Device memory probe


class MemoryProbe:
    """Peak memory of one child process: nvidia-smi's memory.used on a GPU (above the baseline read
    before the child starts), the child's own max RSS on the CPU."""

    def __init__(self, device: str):
        self.gpu = device.startswith("cuda") and shutil.which("nvidia-smi") is not None
        self.index = device.split(":")[1] if ":" in device else "0"

    def _used_mib(self) -> float | None:
        try:
            out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def run(self, cmd: list[str], env: dict, timeout_s: float) -> tuple[int, str, str, float | None]:
        """(exit code, stdout, stderr, peak MiB)."""
        baseline = self._used_mib() if self.gpu else None
        peak = [baseline]
        stop = threading.Event()

        def poll():
            while not stop.wait(0.05):
                v = self._used_mib()
                if v is not None and (peak[0] is None or v > peak[0]):
                    peak[0] = v

        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
            poller = threading.Thread(target=poll, daemon=True)
            if self.gpu:
                poller.start()
            deadline = time.monotonic() + timeout_s
            rusage = None
            while True:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    _, status, rusage = os.wait4(proc.pid, 0)
                    proc.returncode = 124
                    break
                time.sleep(0.02)
            stop.set()
            if self.gpu:
                poller.join()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if self.gpu:
            used = None if peak[0] is None or baseline is None else peak[0] - baseline
        else:
            used = rusage.ru_maxrss / 1024 if rusage else None  # KiB -> MiB
        return proc.returncode, stdout, stderr, used


def json_rows(stdout: str, bench: str) -> list[dict]:
    """The `{"bench": bench, ...}` lines a benchmark printed, in order (other output skipped)."""
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("bench") == bench:
                rows.append(row)
    return rows


def last_json(stdout: str, bench: str) -> dict | None:
    rows = json_rows(stdout, bench)
    return rows[-1] if rows else None


def bench_dtype(a) -> str:
    """The precision the bench and ops parts run in: f32 on the CPU, f16 (A1111's default) on a GPU."""
    return "f32" if a.device == "cpu" else "f16"


def child_env() -> dict:
    """The environment of a benchmark process: candle's thread pool as wide as torch's default."""
    env = dict(os.environ)
    env.setdefault("RAYON_NUM_THREADS", str(os.cpu_count() or 1))
    return env


# ---------------------------------------------------------------------------------------------
# Part 1: parity fixtures through the served binary


def load_comparer(fixtures: Path):
    spec = importlib.util.spec_from_file_location(f"compare_{fixtures.name.replace('-', '_')}", fixtures / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def post_json(url: str, body: bytes, timeout: float) -> dict:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # the server's error body says what failed on the device
        raise RuntimeError(f"HTTP {e.code}: {e.read()[:400].decode('utf-8', 'replace')}") from None


def parity(a, dtype: str) -> dict:
    # The e2e suites' server (bundled models from samples/models, a free loopback port, the ping
    # wait); imported here so the other parts (and scripts/bench) need no `requests`.
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    import harness

    result = {"dtype": dtype, "device": a.device, "cases": []}
    server = harness.Server(a.sdapi, env_extra={"SDAPI_DEVICE": a.device, "SDAPI_DTYPE": dtype})
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 - reported in the results, the other parts still run
        result["error"] = f"server did not start: {str(e)[-1500:]}"
        return result
    try:
        for set_name in FIXTURE_SETS:
            fixtures = ROOT / "tests" / "fixtures" / set_name
            cmp = load_comparer(fixtures)
            names = cmp.list_cases(str(fixtures))
            if a.cases_per_set:
                names = names[: a.cases_per_set]
            for name in names:
                case_dir = fixtures / "cases" / name
                case = json.loads((case_dir / "case.json").read_text())
                t0 = time.monotonic()
                try:
                    body = post_json(server.url + case["endpoint"], (case_dir / "request.json").read_bytes(), 600)
                    r = cmp.compare_case(str(case_dir), cmp.images_from_response(body), 2)
                except Exception as e:  # noqa: BLE001 - one case's failure is that case's result
                    r = {"case": name, "pass": False, "exact": False, "error": str(e)[:500]}
                maxes = [m["max_abs"] for m in r.get("images", []) if "max_abs" in m]
                row = {"set": set_name, "case": name, "pass": bool(r["pass"]), "exact": bool(r["exact"]),
                       "max_abs": max(maxes) if maxes else None, "seconds": round(time.monotonic() - t0, 2)}
                if "error" in r:
                    row["error"] = r["error"]
                elif any("shape_mismatch" in m for m in r.get("images", [])):
                    row["error"] = "shape mismatch"
                result["cases"].append(row)
                tag = "PASS" if row["pass"] else "FAIL"
                print(f"  parity {dtype} {set_name}/{name}: {tag} max|diff| {row['max_abs']}", flush=True)
        if any("error" in c for c in result["cases"]) and server.log is not None and server.log.exists():
            result["server_log_tail"] = server.log.read_text(errors="replace")[-3000:]
    finally:
        server.stop()
    cases = result["cases"]
    result["passed"] = sum(c["pass"] for c in cases)
    result["exact"] = sum(c["exact"] for c in cases)
    result["total"] = len(cases)
    result["errors"] = sum("error" in c for c in cases)
    return result


# ---------------------------------------------------------------------------------------------
# Part 2: generation against diffusers


def torch_available(python: str) -> str | None:
    """torch's version when `python` can import torch and diffusers, else None."""
    try:
        out = subprocess.run([python, "-c", "import torch, diffusers; print(torch.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def bench(a, have_torch: bool, started: float) -> list[dict]:
    runs = SMOKE_RUNS if a.smoke else GPU_RUNS
    dtype = bench_dtype(a)
    probe = MemoryProbe(a.device)
    env = child_env()
    out = []
    for arch, size, steps in runs:
        common = ["--arch", arch, "--size", str(size), "--steps", str(steps), "--iters", str(a.iters),
                  "--warmup", "1", "--device", a.device, "--dtype", dtype]
        sides = {"ours": [str(a.bench), "gen", *common],
                 "diffusers": [a.python, str(HERE / "reference_gen.py"), *common]}
        entry = {"arch": arch, "size": size, "steps": steps, "dtype": dtype, "device": a.device,
                 "ours": {"samples_ms": [], "peak_mib": [], "runs": []},
                 "diffusers": {"samples_ms": [], "peak_mib": [], "runs": []}}
        if not have_torch:
            entry["diffusers"]["skipped"] = "torch/diffusers not importable by " + a.python
        # The reference's configs and schedule, without torch: the sigmas must equal ours.
        plan = subprocess.run([a.python, str(HERE / "reference_gen.py"), "--plan", *common],
                              capture_output=True, text=True, timeout=60)
        entry["diffusers"]["plan"] = last_json(plan.stdout, "gen_plan")
        for rnd in range(a.rounds):
            for side, cmd in sides.items():
                if side == "diffusers" and not have_torch:
                    continue
                if time.monotonic() - started > a.budget_s:
                    entry[side].setdefault("skipped_rounds", []).append(rnd)
                    continue
                # A run may finish the budget's last round, plus a minute; never hang the check.
                left = a.budget_s - (time.monotonic() - started)
                rc, stdout, stderr, peak = probe.run(cmd, env, timeout_s=max(60.0, left + 60.0))
                row = last_json(stdout, "gen")
                print(f"  bench {arch} {size}² {side} round {rnd}: rc {rc} "
                      f"median {row and row.get('median_ms')} ms, peak {peak and round(peak)} MiB", flush=True)
                if rc != 0 or row is None:
                    entry[side]["runs"].append({"rc": rc, "error": (stderr or stdout)[-1500:]})
                    continue
                entry[side]["runs"].append(row)
                entry[side]["samples_ms"].extend(row["samples_ms"])
                if peak is not None:
                    entry[side]["peak_mib"].append(round(peak, 1))
        for side in ("ours", "diffusers"):
            s = entry[side]
            if s["samples_ms"]:
                s["median_ms"] = round(statistics.median(s["samples_ms"]), 2)
                s["n"] = len(s["samples_ms"])
                s["peak_mib_max"] = max(s["peak_mib"]) if s["peak_mib"] else None
                ok = [r for r in s["runs"] if "error" not in r]
                s["non_finite"] = any(r.get("non_finite") for r in ok)
                s["unet_params"] = ok[0].get("unet_params")
                if side == "ours":
                    s["sigmas"] = ok[0].get("sigmas")
        ours, ref = entry["ours"], entry["diffusers"]
        ref_sigmas = [round(x, 6) for x in (ref.get("plan") or {}).get("sigmas", [])] or None
        if ours.get("sigmas") is not None and ref_sigmas is not None:
            entry["sigmas_agree"] = all(abs(x - y) < 1e-5 for x, y in zip(ours["sigmas"], ref_sigmas)) \
                and len(ours["sigmas"]) == len(ref_sigmas)
        if ours.get("median_ms") and ref.get("median_ms"):
            entry["ratio"] = round(ours["median_ms"] / ref["median_ms"], 3)
            entry["params_agree"] = ours.get("unet_params") == ref.get("unet_params")
            if ours.get("peak_mib_max") and ref.get("peak_mib_max"):
                entry["memory_ratio"] = round(ours["peak_mib_max"] / ref["peak_mib_max"], 3)
            entry["target"] = TARGETS.get(arch)
            if entry["target"] is not None:
                entry["target_met"] = entry["ratio"] <= entry["target"]
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# Part 3: single ops against torch


def ops(a, have_torch: bool) -> dict:
    latent = 8 if a.smoke else 64
    dtype = bench_dtype(a)
    common = ["ops", "--latent", str(latent), "--iters", "5", "--warmup", "2", "--device", a.device, "--dtype", dtype]
    result = {"latent": latent, "device": a.device, "dtype": dtype, "ops": []}
    env = child_env()
    sides = {"ours": [str(a.bench), *common]}
    if have_torch:
        sides["torch"] = [a.python, str(ROOT / "scripts" / "bench" / "reference.py"), *common]
    else:
        result["torch_skipped"] = "torch not importable by " + a.python
    medians = {}
    for side, cmd in sides.items():
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        except subprocess.TimeoutExpired:
            result[f"{side}_error"] = "timed out after 300 s"
            continue
        if p.returncode != 0:
            result[f"{side}_error"] = (p.stderr or p.stdout)[-1500:]
            continue
        medians[side] = {row["op"]: row["median_ms"] for row in json_rows(p.stdout, "op")}
    for name, ours_ms in medians.get("ours", {}).items():
        theirs = medians.get("torch", {}).get(name)
        row = {"op": name, "ours_ms": ours_ms, "torch_ms": theirs}
        if theirs:
            row["ratio"] = round(ours_ms / theirs, 3)
        result["ops"].append(row)
        print(f"  op {name}: ours {ours_ms} ms, torch {theirs} ms" + (f" -> {row['ratio']}x" if theirs else ""),
              flush=True)
    return result


# ---------------------------------------------------------------------------------------------


def environment(a) -> dict:
    env = {"host": platform.node(), "python": platform.python_version(), "device": a.device, "smoke": a.smoke}
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        env["gpu"] = q.stdout.strip()
    return env


def main(argv=None) -> int:
    a = parse_args(argv)
    started = time.monotonic()
    for binary in (a.sdapi, a.bench):
        if not binary.is_file() or not os.access(binary, os.X_OK):
            print(f"not an executable file: {binary}", file=sys.stderr)
            return 2
    results = {"check": "gpu-check", "version": 1, "started_unix": int(time.time()), "environment": environment(a),
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}}
    torch_version = None if a.skip_bench and a.skip_ops else torch_available(a.python)
    results["environment"]["torch"] = torch_version
    failed = False
    if not a.skip_parity:
        results["parity"] = []
        for dtype in a.parity_dtypes:
            r = parity(a, dtype)
            results["parity"].append(r)
            failed |= "error" in r or r.get("errors", 0) > 0
            print(f"parity {dtype}: {r.get('passed')}/{r.get('total')} pass, {r.get('exact')} exact"
                  + (f", ERROR {r['error'][:200]}" if "error" in r else ""), flush=True)
    if not a.skip_ops:
        results["ops"] = ops(a, torch_version is not None)
        failed |= "ours_error" in results["ops"] or "torch_error" in results["ops"]
    if not a.skip_bench:
        results["bench"] = bench(a, torch_version is not None, started)
        failed |= any("error" in r for e in results["bench"] for s in ("ours", "diffusers") for r in e[s]["runs"])
    results["seconds"] = round(time.monotonic() - started, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))
    for e in results.get("bench", []):
        print(f"bench {e['arch']} {e['size']}²: ours {e['ours'].get('median_ms')} ms, diffusers "
              f"{e['diffusers'].get('median_ms', e['diffusers'].get('skipped'))} -> ratio {e.get('ratio')}"
              f" (target {e.get('target')}), peak MiB {e['ours'].get('peak_mib_max')} vs "
              f"{e['diffusers'].get('peak_mib_max')}", flush=True)
    print(f"wrote {a.out} in {results['seconds']} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
