"""Overload against the real binary (its own server, loopback only, fixed budget): 64 concurrent
clients send a mix of valid generations and invalid requests for a bounded time, half of the
valid ones hanging up early; meanwhile `/progress` is polled. Every completed generation must carry
its decodable images, every invalid request its A1111-shaped 4xx, `/progress` must answer
throughout, the server must serve normally afterwards, and its peak memory stays bounded.

Prints one JSON line with the figures (requests, outcomes by kind, p50/p99 latency, peak RSS);
docs/reliability.md records a run. Budget: `SDAPI_LOAD_SECONDS` (default 20).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import requests

from harness import LocalS3, Server, check_generation, png_from_b64

NEEDS_SERVER = False
CLIENTS = 64
SECONDS = float(os.environ.get("SDAPI_LOAD_SECONDS", "20"))
# A bound far above the tiny model's needs (~200 MB) that a leak under load would cross.
PEAK_RSS_LIMIT_MB = 2048

VALID = {"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": 1, "sampler_name": "Euler"}
INVALID = [
    ({"steps": -5}, 422),
    ({"width": 100000}, 422),
    ({"prompt": "x", "sampler_name": "Euler", "seed_resize_from_w": 1000000000, "seed_resize_from_h": 1000000000}, 422),
    ({"prompt": "<lora:tiny-lora:lots>"}, 422),
    ("{not json", 422),
]


def rss_mb(pid: int, key: str) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hang_up_early(url: str) -> None:
    """Sends a whole generation request, then closes the socket without reading the answer."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(VALID).encode()
    head = (f"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        time.sleep(0.05)


def poll_progress(url: str, stop: float, latencies_ms: list[float], failures: list[str]) -> None:
    """Polls `/progress` every 100 ms until `stop`, recording each answer's latency and failure."""
    while time.monotonic() < stop:
        t0 = time.monotonic()
        try:
            r = requests.get(f"{url}/sdapi/v1/progress?skip_current_image=true", timeout=10)
            if r.status_code != 200:
                failures.append(f"HTTP {r.status_code}")
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            failures.append(f"{type(e).__name__}: {e}")
        latencies_ms.append((time.monotonic() - t0) * 1e3)
        time.sleep(0.1)


def test_mixed_load_with_early_hang_ups(ctx):
    with Server(ctx.binary) as server:
        url = server.url
        baseline_mb = rss_mb(server.proc.pid, "VmRSS")
        stop = time.monotonic() + SECONDS
        lock = threading.Lock()
        outcomes: dict[str, int] = {}
        latencies: dict[str, list[float]] = {"valid": [], "invalid": []}
        problems: list[str] = []

        def record(kind: str, ms: float | None = None, problem: str | None = None) -> None:
            with lock:
                outcomes[kind] = outcomes.get(kind, 0) + 1
                if ms is not None:
                    latencies["valid" if kind.startswith("valid") else "invalid"].append(ms)
                if problem:
                    problems.append(problem)

        def client(i: int) -> None:
            n = 0
            while time.monotonic() < stop:
                n += 1
                kind = (i + n) % 4
                t0 = time.monotonic()
                try:
                    if kind == 0:  # valid, waits for the images
                        r = requests.post(f"{url}/sdapi/v1/txt2img", json=VALID, timeout=300)
                        ms = (time.monotonic() - t0) * 1e3
                        if r.status_code != 200:
                            record("valid_failed", ms, f"valid request: HTTP {r.status_code} {r.text[:200]}")
                            continue
                        body = r.json()
                        check_generation(body, 1)
                        png_from_b64(body["images"][0])
                        record("valid_ok", ms)
                    elif kind in (1, 3):  # valid, but the client hangs up
                        hang_up_early(url)
                        record("hung_up")
                    else:  # invalid
                        payload, status = INVALID[(i + n) % len(INVALID)]
                        if isinstance(payload, str):
                            r = requests.post(f"{url}/sdapi/v1/txt2img", data=payload,
                                              headers={"content-type": "application/json"}, timeout=60)
                        else:
                            r = requests.post(f"{url}/sdapi/v1/txt2img", json=payload, timeout=60)
                        ms = (time.monotonic() - t0) * 1e3
                        shaped = isinstance(r.json(), dict) and ("detail" in r.json() or "error" in r.json())
                        if r.status_code != status or not shaped:
                            record("invalid_wrong", ms, f"{payload!r}: HTTP {r.status_code} {r.text[:200]}")
                        else:
                            record("invalid_rejected", ms)
                except Exception as e:  # noqa: BLE001 - every failure is a finding
                    record("client_error", None, f"client {i}: {type(e).__name__}: {e}")

        progress_ms: list[float] = []
        progress_failures: list[str] = []

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=poll_progress, args=(url, stop, progress_ms, progress_failures)))
        for t in threads:
            t.start()
        peak_during = 0.0
        while any(t.is_alive() for t in threads):
            peak_during = max(peak_during, rss_mb(server.proc.pid, "VmRSS"))
            time.sleep(0.2)
        for t in threads:
            t.join()

        # Afterwards: the server serves normally.
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=VALID, timeout=120)
        assert r.status_code == 200, r.text[:300]
        check_generation(r.json(), 1)
        peak_mb = rss_mb(server.proc.pid, "VmHWM")
        counters = requests.get(f"{url}/internal/runner", timeout=30).json()

        def pct(values: list[float], q: float):
            v = sorted(values)
            return round(v[int(q * (len(v) - 1))], 1) if v else None

        figures = {
            "bench": "load", "clients": CLIENTS, "seconds": SECONDS, "requests": sum(outcomes.values()),
            "outcomes": outcomes,
            "valid_p50_ms": pct(latencies["valid"], 0.5), "valid_p99_ms": pct(latencies["valid"], 0.99),
            "invalid_p50_ms": pct(latencies["invalid"], 0.5), "invalid_p99_ms": pct(latencies["invalid"], 0.99),
            "runner": {k: counters.get(k) for k in ("jobs_submitted", "jobs_started", "jobs_completed", "jobs_cancelled")},
            "progress_polls": len(progress_ms), "progress_p99_ms": pct(progress_ms, 0.99),
            "rss_baseline_mb": round(baseline_mb, 1), "rss_peak_mb": round(max(peak_mb, peak_during), 1),
        }
        print("     " + json.dumps(figures))
        assert not problems, problems[:10]
        assert not progress_failures, progress_failures[:10]
        assert outcomes.get("valid_ok", 0) > 0 and outcomes.get("invalid_rejected", 0) > 0, outcomes
        assert figures["rss_peak_mb"] < PEAK_RSS_LIMIT_MB, figures


S3_CLIENTS = 16
S3_SECONDS = float(os.environ.get("SDAPI_LOAD_S3_SECONDS", "12"))
S3_BUCKET = "sdapi-load"


def test_load_with_the_s3_store_failing_mid_run(ctx):
    """Generations keep being answered with their images while the output bucket goes away: a
    local S3 server (moto) is stopped a third of the way through; before that images are stored,
    afterwards each response reports the failure (`X-Output-Error`, `output_errors`) and still
    carries every image."""
    with LocalS3(S3_BUCKET) as s3:
        env = {**s3.env, "SDAPI_S3_TIMEOUT_S": "3"}
        with Server(ctx.binary, env) as server:
            url = server.url
            start = time.monotonic()
            stop_s3_at, stop = start + S3_SECONDS / 3, start + S3_SECONDS
            lock = threading.Lock()
            outcomes: dict[str, int] = {}
            latencies: list[float] = []
            problems: list[str] = []

            def record(kind: str, problem: str | None = None) -> None:
                with lock:
                    outcomes[kind] = outcomes.get(kind, 0) + 1
                    if problem:
                        problems.append(problem)

            def client(i: int) -> None:
                n = 0
                while time.monotonic() < stop:
                    n += 1
                    if (i + n) % 3 == 0:
                        hang_up_early(url)
                        record("hung_up")
                        continue
                    t0 = time.monotonic()
                    try:
                        r = requests.post(f"{url}/sdapi/v1/txt2img", json=VALID, timeout=300)
                        latencies.append((time.monotonic() - t0) * 1e3)
                        if r.status_code != 200:
                            record("failed", f"HTTP {r.status_code} {r.text[:200]}")
                            continue
                        body = r.json()
                        check_generation(body, 1)  # the image is there whatever the store did
                        png_from_b64(body["images"][0])
                        info = json.loads(body["info"])
                        error = r.headers.get("X-Output-Error")
                        if error:
                            if not info.get("output_errors"):
                                record("failed", f"X-Output-Error without output_errors in info: {error}")
                            else:
                                record("store_failed_reported")
                        elif json.loads(r.headers.get("X-Output-Locations", "[]")):
                            record("stored")
                        else:
                            record("failed", f"neither stored nor a reported failure: {dict(r.headers)}")
                    except Exception as e:  # noqa: BLE001 - every failure is a finding
                        record("client_error", f"client {i}: {type(e).__name__}: {e}")

            progress_failures: list[str] = []
            threads = [threading.Thread(target=client, args=(i,)) for i in range(S3_CLIENTS)]
            threads.append(threading.Thread(target=poll_progress, args=(url, stop, [], progress_failures)))
            for t in threads:
                t.start()
            time.sleep(max(0.0, stop_s3_at - time.monotonic()))
            s3.stop(signal.SIGKILL)  # an abrupt outage, not a clean shutdown
            for t in threads:
                t.join()

            # Afterwards the server still generates (the failure is reported, not fatal).
            r = requests.post(f"{url}/sdapi/v1/txt2img", json=VALID, timeout=120)
            assert r.status_code == 200 and r.headers.get("X-Output-Error"), (r.status_code, dict(r.headers))
            check_generation(r.json(), 1)
            v = sorted(latencies)
            figures = {"bench": "load-s3-failing", "clients": S3_CLIENTS, "seconds": S3_SECONDS,
                       "s3_stopped_after_s": round(S3_SECONDS / 3, 1), "outcomes": outcomes,
                       "p50_ms": round(v[len(v) // 2], 1) if v else None,
                       "p99_ms": round(v[int(0.99 * (len(v) - 1))], 1) if v else None,
                       "rss_peak_mb": round(rss_mb(server.proc.pid, "VmHWM"), 1)}
            print("     " + json.dumps(figures))
            assert not problems, problems[:10]
            assert not progress_failures, progress_failures[:10]
            assert outcomes.get("stored", 0) > 0, f"nothing was stored before S3 went away: {outcomes}"
            assert outcomes.get("store_failed_reported", 0) > 0, f"no reported store failure: {outcomes}"
