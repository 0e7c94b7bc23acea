"""Asynchronous jobs and webhooks through the real binary (docs/jobs.md): `Prefer: respond-async`
→ 202 + Location, polling to the same result the synchronous call gives, cancellation while queued
and while running, signed webhooks with retries, refused private destinations, and a job read
from another server sharing the output store."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from concurrent.futures import ThreadPoolExecutor

from harness import MODEL_NAME, LocalS3, Server, check_error_shape, counter_delta, get, png_from_b64, post, runner_counters

T2I = "/sdapi/v1/txt2img"
ASYNC = {"Prefer": "respond-async"}
SECRET = "whsec_" + base64.b64encode(b"sdapi-e2e-webhook-secret").decode()


def request(steps: int = 3, seed: int = 4242) -> dict:
    return {"prompt": "a red cube", "seed": seed, "steps": steps, "width": 64, "height": 64,
            "sampler_name": "Euler", "override_settings": {"sd_model_checkpoint": MODEL_NAME}}


def submit(url: str, body: dict, headers: dict | None = None) -> dict:
    r = post(url + T2I, body, headers={**ASYNC, **(headers or {})})
    assert r.status_code == 202, f"HTTP {r.status_code}: {r.text[:300]}"
    job = r.json()
    assert r.headers["location"] == job["location"] == f"/sdapi/v1/jobs/{job['id']}", (r.headers, job)
    assert job["state"] == "queued"
    return job


def wait(url: str, job_id: str, until=("succeeded", "failed", "cancelled"), timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = get(f"{url}/sdapi/v1/jobs/{job_id}", timeout=10)
        assert r.status_code == 200, r.text[:300]
        record = r.json()
        if record["state"] in until:
            return record
        assert time.monotonic() < deadline, f"job {job_id} still {record['state']}"
        time.sleep(0.05)


def test_async_result_equals_the_synchronous_answer(ctx):
    sync = post(ctx.url + T2I, request()).json()
    job = submit(ctx.url, request())
    done = wait(ctx.url, job["id"])
    assert done["state"] == "succeeded" and done["status_code"] == 200, done
    result = done["result"]
    assert result["images"] == sync["images"], "same seed, same pixels"
    assert json.loads(result["info"])["infotexts"] == json.loads(sync["info"])["infotexts"]
    assert result["parameters"] == sync["parameters"]
    listed = get(ctx.url + "/sdapi/v1/jobs").json()
    assert any(j["id"] == job["id"] and j["result"] is None for j in listed), "the list leaves results out"


def test_errors_are_synchronous_or_recorded(ctx):
    # A malformed body is refused at once, as the synchronous route refuses it.
    r = post(ctx.url + T2I, {"prompt": "x", "steps": "abc"}, headers=ASYNC)
    assert r.status_code == 422
    # A failure during processing ends the job as failed, with the synchronous error body.
    job = submit(ctx.url, {**request(), "script_name": "no such script"})
    done = wait(ctx.url, job["id"])
    assert done["state"] == "failed" and done["status_code"] == 422, done
    assert set(done["result"]) >= {"detail"}, done["result"]
    check_error_shape(get(ctx.url + "/sdapi/v1/jobs/job-doesnotexist"), 404)
    check_error_shape(get(ctx.url + "/sdapi/v1/jobs/..%2f..%2fetc"), 404)


def test_cancel_while_queued_and_while_running(ctx):
    long = submit(ctx.url, request(steps=400, seed=1))
    queued = submit(ctx.url, request(steps=3, seed=2))
    wait(ctx.url, long["id"], until=("running",))
    assert get(f"{ctx.url}/sdapi/v1/jobs/{queued['id']}").json()["queue_position"] >= 1
    # A1111's own task tracking sees the same (the job id is the task id).
    active = post(ctx.url + "/internal/progress", {"id_task": long["id"]}).json()
    assert active["active"] and not active["completed"] and 0 <= active["progress"] <= 1, active
    waiting = post(ctx.url + "/internal/progress", {"id_task": queued["id"]}).json()
    assert waiting["queued"] and not waiting["active"] and waiting["textinfo"].startswith("In queue: "), waiting
    pending = get(ctx.url + "/internal/pending-tasks").json()
    assert queued["id"] in pending["tasks"] and long["id"] not in pending["tasks"], pending
    r = requests_delete(f"{ctx.url}/sdapi/v1/jobs/{queued['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text[:300]
    assert queued["id"] not in get(ctx.url + "/internal/pending-tasks").json()["tasks"]
    # Running: interrupted like /interrupt, the partial image is kept.
    time.sleep(0.5)
    r = requests_delete(f"{ctx.url}/sdapi/v1/jobs/{long['id']}")
    assert r.status_code == 200, r.text[:300]
    done = wait(ctx.url, long["id"])
    assert done["state"] == "cancelled" and len(done["result"]["images"]) == 1, {k: done[k] for k in ("state", "status_code")}
    assert wait(ctx.url, queued["id"])["state"] == "cancelled", "a cancelled queued job never runs"
    assert post(ctx.url + "/internal/progress", {"id_task": long["id"]}).json()["completed"]
    # The service goes on.
    assert wait(ctx.url, submit(ctx.url, request())["id"])["state"] == "succeeded"


def requests_delete(url: str):
    import requests
    return requests.delete(url, timeout=30)


def test_webhook_to_a_private_address_is_refused_by_default(ctx):
    r = post(ctx.url + T2I, request(), headers={**ASYNC, "X-Webhook-Url": "http://127.0.0.1:9/hook"})
    body = check_error_shape(r, 422)
    assert "SDAPI_WEBHOOK_ALLOW_PRIVATE" in str(body["detail"]), body


class Receiver(BaseHTTPRequestHandler):
    """Fails the first `fail_first` deliveries with 500, then records and accepts them."""
    calls: list = []
    fail_first = 2

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Receiver.calls.append((dict(self.headers), body))
        self.send_response(500 if len(Receiver.calls) <= Receiver.fail_first else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_signed_webhook_is_retried_until_delivered(ctx):
    httpd = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    env = {"SDAPI_WEBHOOK_ALLOW_PRIVATE": "1", "SDAPI_WEBHOOK_SECRET": SECRET, "SDAPI_WEBHOOK_BACKOFF_S": "0.2"}
    try:
        with Server(ctx.binary, env) as s:
            job = submit(s.url, request(), {"X-Webhook-Url": hook})
            wait(s.url, job["id"])
            deadline = time.monotonic() + 30
            while len(Receiver.calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            record = wait(s.url, job["id"])
            while not (record.get("webhook") or {}).get("delivered") and time.monotonic() < deadline:
                time.sleep(0.05)
                record = get(f"{s.url}/sdapi/v1/jobs/{job['id']}").json()
    finally:
        httpd.shutdown()
    assert len(Receiver.calls) == 3, f"{len(Receiver.calls)} deliveries"
    ids = {h["webhook-id"] for h, _ in Receiver.calls}
    assert ids == {f"msg_{job['id']}"}, "one stable id across retries"
    headers, body = Receiver.calls[-1]
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected, "Standard Webhooks signature"
    event = json.loads(body)
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job["id"], event["type"]
    assert record["webhook"] == {"url": hook, "attempts": 3, "delivered": True, "error": None}, record["webhook"]


def test_a_job_is_readable_from_another_server_sharing_the_store(ctx):
    with tempfile.TemporaryDirectory() as shared:
        env = {"SDAPI_OUTPUT_DIR": shared}
        with Server(ctx.binary, env) as a, Server(ctx.binary, env) as b:
            job = submit(a.url, request())
            done_a = wait(a.url, job["id"])
            done_b = wait(b.url, job["id"])
            assert done_b["state"] == "succeeded" and done_b["result"]["images"] == done_a["result"]["images"]


def test_sigterm_records_every_job_and_exits_within_the_grace_period(ctx):
    import signal
    from pathlib import Path
    with Server(ctx.binary, {"SDAPI_SHUTDOWN_GRACE_S": "2"}) as s:
        long = submit(s.url, request(steps=1000, seed=1))
        queued = submit(s.url, request(steps=3, seed=2))
        wait(s.url, long["id"], until=("running",))
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(timeout=30)
        took = time.monotonic() - t0
        records = {p.stem: json.loads(p.read_text()) for p in (Path(s.output_dir) / "jobs").glob("*.json")}
    assert took < 2 + 3, f"exited after {took:.1f} s (grace 2 s)"
    running, waiting = records[long["id"]], records[queued["id"]]
    assert running["state"] == "cancelled" and len(running["result"]["images"]) == 1, running["state"]
    assert waiting["state"] == "failed" and waiting["status_code"] == 503, waiting
    assert "submit it again" in waiting["result"]["detail"]


def test_a_job_is_readable_from_another_server_sharing_an_s3_bucket(ctx):
    """Two processes on one local S3 (moto): the job record written by one under `jobs/` is what
    the other answers, result included."""
    with LocalS3("jobs-e2e") as s3:
        env = {**s3.env, "SDAPI_OUTPUT_PREFIX": "svc/"}
        with Server(ctx.binary, env) as a, Server(ctx.binary, env) as b:
            job = submit(a.url, request())
            done_a = wait(a.url, job["id"])
            done_b = wait(b.url, job["id"])
            assert done_b["state"] == "succeeded" and done_b["result"]["images"] == done_a["result"]["images"]
            listed = s3.client.list_objects_v2(Bucket="jobs-e2e", Prefix="svc/jobs/").get("Contents", [])
            keys = [o["Key"] for o in listed]
            assert keys == [f"svc/jobs/{job['id']}.json"], keys


def test_preload_loads_the_default_checkpoint_before_the_first_request(ctx):
    """SDAPI_PRELOAD: the model is on the device before any request; /ready says so."""
    with Server(ctx.binary, {"SDAPI_PRELOAD": "1"}) as s:
        deadline = time.monotonic() + 120
        while (r := get(s.url + "/ready")).status_code != 200:
            assert r.status_code == 503 and r.json()["status"] == "loading", r.text
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.1)
        counters = get(s.url + "/internal/runner").json()
        assert counters["model_loads"] == 1 and counters["jobs_submitted"] == 0, counters
        assert post(s.url + T2I, request()).status_code == 200
        assert get(s.url + "/internal/runner").json()["model_loads"] == 1, "the first request found it loaded"


def test_compatible_requests_share_one_batch_and_keep_their_images(ctx):
    """SDAPI_BATCH_MAX_IMAGES=8: eight concurrent compatible requests queued behind a busy job run
    as one UNet batch, and each gets the images it gets alone (within 1 level: a larger batch
    changes the summation order of the matrix products)."""
    prompts = ["a red cube", "a blue ball", "a green tree on a hill", "a yellow house", "a cat",
               "a dog on a sofa", "a ship at sea", "two red apples"]
    bodies = [{**request(steps=6, seed=100 + i), "prompt": p, "sampler_name": "Euler a",
               "negative_prompt": "blurry" if i % 2 else ""} for i, p in enumerate(prompts)]
    with Server(ctx.binary, {"SDAPI_BATCH_MAX_IMAGES": "8"}) as s:
        alone = [post(s.url + T2I, b).json()["images"] for b in bodies]
        before = runner_counters(s.url)
        busy = submit(s.url, request(steps=120, seed=9))
        wait(s.url, busy["id"], until=("running",))
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda b: post(s.url + T2I, b, timeout=300), bodies))
        delta = counter_delta(before, runner_counters(s.url))
        assert (delta["shared_runs"], delta["jobs_in_shared_runs"]) == (1, 8), delta
        exact = 0
        for i, (solo, r) in enumerate(zip(alone, answers)):
            assert r.status_code == 200, r.text[:300]
            a = png_from_b64(solo[0]).convert("RGB").tobytes()
            b = png_from_b64(r.json()["images"][0]).convert("RGB").tobytes()
            worst = max(abs(x - y) for x, y in zip(a, b))
            assert worst <= 1, f"request {i}: {worst} levels from its solo run"
            exact += a == b
        print(f"{exact} of {len(bodies)} shared-run images bit-identical to their solo runs")
        assert wait(s.url, busy["id"])["state"] == "succeeded"
