"""Shared pieces of the end-to-end suites: server processes, HTTP helpers, response checks.

Stdlib plus `requests`, numpy and Pillow (tests/requirements.txt). Every process started here is
stopped by its own pid; nothing is killed by name.
"""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
FIXTURES = ROOT / "tests" / "fixtures" / "a1111-parity"

# Values fixed by the bundled model and by A1111 v1.10.1 (docs/a1111-behaviour.md §2.8, §5.1, §5.2).
MODEL_TITLE = "tiny-sd15.safetensors [7037055cdc]"
MODEL_NAME = "tiny-sd15"
MODEL_HASH = "7037055cdc"
A1111_SAMPLERS = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
]
A1111_SCHEDULERS = [  # (name, label)
    ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"),
    ("exponential", "Exponential"), ("polyexponential", "Polyexponential"),
    ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "KL Optimal"),
    ("align_your_steps", "Align Your Steps"), ("simple", "Simple"), ("normal", "Normal"),
    ("ddim", "DDIM"), ("beta", "Beta"),
]
INFO_KEYS = [  # Processed.js() keys in order (docs/a1111-behaviour.md §3.1)
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
    "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps",
    "batch_size", "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash",
    "sd_vae_name", "sd_vae_hash", "seed_resize_from_w", "seed_resize_from_h", "denoising_strength",
    "extra_generation_params", "index_of_first_image", "infotexts", "styles", "job_timestamp",
    "clip_skip", "is_using_inpainting_conditioning", "version",
]
ERROR_KEYS = ["error", "detail", "body", "errors"]  # A1111's middleware error shape (docs/a1111-behaviour.md §2.3)

READY_TIMEOUT_S = float(os.environ.get("SDAPI_E2E_READY_TIMEOUT", "120"))
REQUEST_TIMEOUT_S = float(os.environ.get("SDAPI_E2E_REQUEST_TIMEOUT", "600"))


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it; races are unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered{tail(log)}")
        try:
            r = requests.get(url, timeout=5)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s ({last}){tail(log)}")


def tail(log: Path | None, n: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()[-n:]
    return "\n--- last log lines ---\n" + "\n".join(lines)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, grace_s: float = 15) -> None:
    """Stop one process by its pid: SIGINT (graceful shutdown), then SIGKILL after `grace_s`."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@dataclass
class Server:
    """The real `sdapi` binary in server mode on a free loopback port."""
    binary: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    port: int = 0
    output_dir: Path | None = None
    log: Path | None = None
    _tmp: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        self._tmp = tempfile.TemporaryDirectory(prefix="sdapi-e2e-")
        tmp = Path(self._tmp.name)
        self.output_dir = tmp / "outputs"
        self.log = tmp / "server.log"
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SDAPI_", "AWS_LAMBDA_"))}
        env.update({
            "SDAPI_LISTEN": f"127.0.0.1:{self.port}",
            "SDAPI_MODELS_DIR": str(SAMPLES / "models"),
            "SDAPI_CHECKPOINT": MODEL_NAME,
            "SDAPI_OUTPUT_DIR": str(self.output_dir),
            "RUST_LOG": env.get("RUST_LOG", "info"),
        })
        env.update(self.env_extra)
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen([str(self.binary)], cwd=ROOT, env=env, stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_http(self.url + "/internal/ping", READY_TIMEOUT_S, self.proc, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalS3:
    """A local S3 (moto_server) on a free loopback port with `bucket` created: `client` is a boto3
    client on it, `env` what a server needs to store there (plus `SDAPI_OUTPUT_BUCKET`)."""

    def __init__(self, bucket: str, log: Path | None = None):
        self.bucket, self.log = bucket, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.client = None

    def start(self) -> "LocalS3":
        import boto3
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen([tool("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if self.log:
                out.close()
        try:
            wait_http(self.url + "/", 60, self.proc, self.log)
            self.client = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                                       aws_access_key_id="test", aws_secret_access_key="test")
            self.client.create_bucket(Bucket=self.bucket)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def env(self) -> dict[str, str]:
        return {"SDAPI_OUTPUT_BUCKET": self.bucket, "SDAPI_S3_FORCE_PATH_STYLE": "true",
                "AWS_ENDPOINT_URL": self.url, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test"}

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- HTTP helpers ------------------------------------------------------------------------------

def post(url: str, body=None, **kw) -> requests.Response:
    kw.setdefault("timeout", REQUEST_TIMEOUT_S)
    if body is not None and "data" not in kw:
        kw["json"] = body
    return requests.post(url, **kw)


def get(url: str, **kw) -> requests.Response:
    kw.setdefault("timeout", REQUEST_TIMEOUT_S)
    return requests.get(url, **kw)


def load_request(name: str) -> dict:
    return json.loads((SAMPLES / "requests" / f"{name}.json").read_text())


def runner_counters(base_url: str) -> dict:
    r = get(base_url + "/internal/runner", timeout=30)
    assert r.status_code == 200, f"/internal/runner: HTTP {r.status_code} {r.text[:200]}"
    c = r.json()
    for k in ("jobs_submitted", "jobs_completed", "images_generated"):
        assert isinstance(c.get(k), int), f"/internal/runner lacks integer {k}: {c}"
    return c


def counter_delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in after if isinstance(after.get(k), int) and isinstance(before.get(k), int)}


def runner_job_ids(header_value: str | None) -> list[int]:
    """Job ids from `X-Runner-Job`.

    Accepted form (one entry per runner job, comma-separated): `<id>` or `<id>;k=v;...` or
    `id=<id>;k=v;...`, e.g. `7;queue_ms=0;execute_ms=812, 8;queue_ms=0;execute_ms=790`."""
    assert header_value, "response has no X-Runner-Job header"
    ids = []
    for entry in header_value.split(","):
        first = entry.strip().split(";")[0].strip()
        if first.startswith("id="):
            first = first[3:]
        assert first.isdigit(), f"cannot read a job id from X-Runner-Job entry {entry!r}"
        ids.append(int(first))
    return ids


# --- response checks ---------------------------------------------------------------------------

def png_from_b64(s: str):
    from PIL import Image
    raw = base64.b64decode(s, validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "image is not a PNG"
    im = Image.open(io.BytesIO(raw))
    im.load()
    return im


def check_generation(body: dict, n_images: int, width: int = 64, height: int = 64) -> dict:
    """Assert the A1111 generation response shape; returns the parsed `info`."""
    assert set(body) >= {"images", "parameters", "info"}, f"keys: {sorted(body)}"
    assert isinstance(body["info"], str), "info must be a JSON string"
    info = json.loads(body["info"])
    # A1111's 32 keys in order; after them only the documented storage keys (docs/storage.md).
    keys = list(info)
    assert keys[:len(INFO_KEYS)] == INFO_KEYS, f"info keys differ from A1111's: {keys}"
    assert set(keys[len(INFO_KEYS):]) <= {"output_locations", "output_errors"}, f"unexpected info keys: {keys}"
    assert len(body["images"]) == n_images, f"{len(body['images'])} images, expected {n_images}"
    for i, s in enumerate(body["images"]):
        im = png_from_b64(s)
        assert im.size == (width, height), f"image {i}: size {im.size}"
        params = im.info.get("parameters")
        assert params, f"image {i}: no PNG 'parameters' text chunk"
        assert params == info["infotexts"][i], f"image {i}: parameters chunk differs from info.infotexts"
    return info


def check_error_shape(r: requests.Response, status: int | None = None, detail: str | None = None) -> dict:
    """A1111's four-key error body, with a 4xx/5xx status."""
    assert 400 <= r.status_code < 600, f"expected an error status, got {r.status_code}"
    if status is not None:
        assert r.status_code == status, f"status {r.status_code}, expected {status}: {r.text[:300]}"
    body = r.json()
    assert list(body) == ERROR_KEYS, f"error body keys {list(body)}, expected {ERROR_KEYS}"
    if detail is not None:
        assert body["detail"] == detail, f"detail {body['detail']!r}, expected {detail!r}"
    return body


def tool(name: str) -> str:
    """A console script of this venv first (run_all may be run as .venv/bin/python without an
    activated venv), then PATH. Missing is an error, not a skip."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} not found: pip install -r tests/requirements.txt (cargo-lambda: --no-deps)"
    return found
