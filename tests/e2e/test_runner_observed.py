"""The ProcessingRunner seen from outside the process: every generation goes through it.

Observed through `X-Runner-Job` (one entry per runner job of the request, see
harness.runner_job_ids), `GET /internal/runner` counters, `/sdapi/v1/progress` and
`/sdapi/v1/interrupt`. One runner job = one batch (A1111's n_iter loop).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from harness import (MODEL_NAME, check_generation, counter_delta, get, load_request, post, runner_counters,
                     runner_job_ids)

T2I = "/sdapi/v1/txt2img"


def small(seed: int, **kw) -> dict:
    body = {"prompt": "a red cube", "seed": seed, "steps": 4, "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": MODEL_NAME}}
    body.update(kw)
    return body


def test_txt2img_carries_runner_job_header(ctx):
    r = post(ctx.url + T2I, small(1))
    assert r.status_code == 200, r.text[:300]
    assert len(runner_job_ids(r.headers.get("X-Runner-Job"))) == 1


def test_img2img_carries_runner_job_header(ctx):
    r = post(ctx.url + "/sdapi/v1/img2img", load_request("img2img-64"))
    assert r.status_code == 200, r.text[:300]
    assert len(runner_job_ids(r.headers.get("X-Runner-Job"))) == 1


def test_counters_move_by_batches_and_images(ctx):
    before = runner_counters(ctx.url)
    r = post(ctx.url + T2I, load_request("txt2img-batch2x2"))  # batch_size 2 x n_iter 2
    assert r.status_code == 200, r.text[:300]
    check_generation(r.json(), 4)
    after = runner_counters(ctx.url)
    d = counter_delta(before, after)
    assert (d["jobs_submitted"], d["jobs_completed"], d["images_generated"]) == (2, 2, 4), d
    ids = runner_job_ids(r.headers.get("X-Runner-Job"))
    assert len(ids) == 2 and ids[0] < ids[1], ids
    assert after.get("queue_depth", 0) == 0, after


def test_send_images_false_still_runs_the_runner(ctx):
    before = runner_counters(ctx.url)
    r = post(ctx.url + T2I, small(3, send_images=False))
    assert r.status_code == 200 and r.json()["images"] == [], r.text[:300]
    assert counter_delta(before, runner_counters(ctx.url))["images_generated"] == 1


def test_eight_concurrent_requests_fifo(ctx):
    before = runner_counters(ctx.url)
    seeds = list(range(100, 108))

    def one(i: int):
        # Staggered starts fix the arrival order; each request is queued behind the previous ones.
        time.sleep(0.15 * i)
        return post(ctx.url + T2I, small(seeds[i], steps=8))

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(one, range(8)))
    job_ids = []
    for seed, r in zip(seeds, responses):
        assert r.status_code == 200, r.text[:300]
        info = check_generation(r.json(), 1)
        assert info["seed"] == seed, (seed, info["seed"])
        ids = runner_job_ids(r.headers.get("X-Runner-Job"))
        assert len(ids) == 1, ids
        job_ids.append(ids[0])
    assert len(set(job_ids)) == 8, job_ids
    assert job_ids == sorted(job_ids), f"job ids not in submission order: {job_ids}"
    d = counter_delta(before, runner_counters(ctx.url))
    assert (d["jobs_submitted"], d["jobs_completed"], d["images_generated"]) == (8, 8, 8), d


def wait_for_sampling(url: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        p = get(url + "/sdapi/v1/progress?skip_current_image=true", timeout=10).json()
        if p["state"]["job_count"] > 0 and p["state"]["sampling_step"] > 0:
            return p
        time.sleep(0.02)
    raise AssertionError("generation never reported a sampling step in /progress")


def test_progress_increases_during_long_request(ctx):
    result = {}
    t = threading.Thread(target=lambda: result.update(r=post(ctx.url + T2I, small(5, steps=150))))
    t.start()
    samples = []
    try:
        samples.append(wait_for_sampling(ctx.url))
        while t.is_alive():
            p = get(ctx.url + "/sdapi/v1/progress?skip_current_image=true", timeout=10).json()
            if p["state"]["job_count"] > 0:
                samples.append(p)
            time.sleep(0.02)
    finally:
        t.join()
    assert result["r"].status_code == 200, result["r"].text[:300]
    assert len(samples) >= 3, f"only {len(samples)} progress samples during a 150-step request"
    progress = [s["progress"] for s in samples]
    steps = [s["state"]["sampling_step"] for s in samples]
    assert progress == sorted(progress) and progress[-1] > progress[0], progress
    assert steps == sorted(steps) and steps[-1] > steps[0], steps
    assert all(0.0 < x <= 1.0 for x in progress), progress
    assert all(s["state"]["job_count"] == 1 and s["state"]["sampling_steps"] == 150 for s in samples), samples[-1]
    # A1111 computes eta_relative = elapsed/progress - elapsed before clamping progress to 1, so it
    # turns slightly negative on the last steps (0.01 + 149/150 > 1); only require a finite number,
    # and a positive one while the request is far from done.
    import math
    assert all(math.isfinite(s["eta_relative"]) for s in samples)
    assert samples[0]["eta_relative"] > 0.0, samples[0]
    # Idle again afterwards.
    assert get(ctx.url + "/sdapi/v1/progress", timeout=10).json()["state"]["job_count"] == 0


def test_interrupt_returns_images_finished_so_far(ctx):
    result = {}
    # n_iter 3: interrupting during the first batch keeps its (partially denoised) image and
    # skips the remaining batches, as A1111 does.
    body = small(7, steps=400, n_iter=3)
    t = threading.Thread(target=lambda: result.update(r=post(ctx.url + T2I, body)))
    t.start()
    try:
        wait_for_sampling(ctx.url)
        r = post(ctx.url + "/sdapi/v1/interrupt", None, timeout=10)
        assert r.status_code == 200 and r.json() == {}, r.text
    finally:
        t.join()
    r = result["r"]
    assert r.status_code == 200, r.text[:300]
    info = check_generation(r.json(), 1)
    assert info["seed"] == 7
    # The interrupt flag must not leak into the next request.
    r2 = post(ctx.url + T2I, small(8))
    assert r2.status_code == 200 and len(r2.json()["images"]) == 1, r2.text[:300]


def test_client_disconnect_does_not_block_the_queue(ctx):
    """A request whose client goes away while it waits in the queue is dropped, not run."""
    import json as _json
    import socket
    from urllib.parse import urlparse

    before = runner_counters(ctx.url)
    busy = threading.Thread(target=lambda: post(ctx.url + T2I, small(7, steps=150)))
    busy.start()
    wait_for_sampling(ctx.url)
    # Queue a second request on a raw socket, then hang up before it can start.
    u = urlparse(ctx.url)
    payload = _json.dumps(small(8, steps=150)).encode()
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall(b"POST " + T2I.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    time.sleep(0.3)
    s.close()
    after_small = post(ctx.url + T2I, small(9))  # must not wait for the abandoned 150 steps
    busy.join()
    assert after_small.status_code == 200, after_small.text[:300]
    d = counter_delta(before, runner_counters(ctx.url))
    assert d["jobs_cancelled"] == 1, d
    assert d["jobs_completed"] == 2, d
