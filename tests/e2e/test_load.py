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
import socket
import threading
import time

import requests

from harness import Server, check_generation, png_from_b64

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

        def poll_progress() -> None:
            while time.monotonic() < stop:
                t0 = time.monotonic()
                try:
                    r = requests.get(f"{url}/sdapi/v1/progress?skip_current_image=true", timeout=10)
                    if r.status_code != 200:
                        progress_failures.append(f"HTTP {r.status_code}")
                except Exception as e:  # noqa: BLE001
                    progress_failures.append(f"{type(e).__name__}: {e}")
                progress_ms.append((time.monotonic() - t0) * 1e3)
                time.sleep(0.1)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=poll_progress))
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
