"""The Lambda path through `cargo lambda watch` / `cargo lambda invoke` (cargo-lambda 1.9.2).

Every committed event in samples/events/ goes through the Lambda runtime emulator into the same
binary (lambda_http for HTTP events, the batch handler for S3/SQS), and the HTTP requests also go
over the watch function-URL endpoint. A local S3 (moto) holds the batch request file and
receives outputs. Pitfalls handled here (docs/deploy.md): loopback
only (`--invoke-address 127.0.0.1`, never `-A`), CARGO_TARGET_DIR instead of the broken
`--target-dir`, the REST stage stripped with AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH, processes
stopped by signalling their own pid.

Needs `cargo` on PATH (watch runs `cargo run`; with the binary built it only links nothing) and
`cargo-lambda` and `moto_server` from tests/requirements.txt. Missing tools are a failure.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from harness import (A1111_SAMPLERS, ROOT, SAMPLES, LocalS3, check_generation, counter_delta, free_port, get, post,
                     runner_job_ids, stop_process, tail, tool, wait_http)

NEEDS_SERVER = True  # the identical-answers test compares with the shared plain server
FUNCTION = "sdapi"  # the binary name; watch serves it at /lambda-url/sdapi/...
BUCKET = "sdapi-outputs-123456789012"  # the bucket named in samples/events/s3-put-batch-request.json
PREFIX = "outputs/"
EVENTS = SAMPLES / "events"
HTTP_TXT2IMG_EVENTS = ["function-url-txt2img", "http-api-txt2img", "rest-api-prod-txt2img", "alb-txt2img"]
HTTP_SAMPLER_EVENTS = ["function-url-samplers", "http-api-samplers", "rest-api-prod-samplers", "alb-samplers"]
COMPILE_TIMEOUT_S = float(os.environ.get("SDAPI_E2E_WATCH_TIMEOUT", "1200"))


class Env:
    watch: subprocess.Popen | None = None
    moto: LocalS3 | None = None
    port = 0
    tmp: tempfile.TemporaryDirectory | None = None
    watch_log: Path | None = None
    s3 = None
    sqs = None
    jobs_queue = ""


E = Env()


def fn_url(path: str) -> str:
    return f"http://127.0.0.1:{E.port}/lambda-url/{FUNCTION}{path}"


def setup_suite(ctx):
    cargo_lambda = tool("cargo-lambda")
    assert shutil.which("cargo"), "cargo not on PATH: cargo lambda watch runs the function with cargo run"
    E.tmp = tempfile.TemporaryDirectory(prefix="sdapi-lambda-")
    tmp = Path(E.tmp.name)

    E.moto = LocalS3(BUCKET, tmp / "moto.log").start()
    E.s3 = E.moto.client
    E.s3.put_object(Bucket=BUCKET, Key="requests/batch-job-single.json",
                    Body=(SAMPLES / "requests" / "batch-job-single.json").read_bytes(),
                    ContentType="application/json")

    # The deployment's jobs queue (asynchronous requests are handed to it on Lambda).
    import boto3
    E.sqs = boto3.client("sqs", endpoint_url=E.moto.url, region_name="us-east-1",
                         aws_access_key_id="test", aws_secret_access_key="test")
    E.jobs_queue = E.sqs.create_queue(QueueName="sdapi-jobs")["QueueUrl"]

    E.port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDAPI_", "AWS_"))}
    env.update({
        # The binary handed to run_all lives in <target>/<profile>/sdapi; reuse that target dir so
        # watch's `cargo run` finds it built (the --target-dir flag is broken in 1.9.2).
        "CARGO_TARGET_DIR": str(ctx.binary.parent.parent),
        "SDAPI_MODELS_DIR": str(SAMPLES / "models"), "SDAPI_CHECKPOINT": "tiny-sd15",
        "SDAPI_OUTPUT_DIR": str(tmp / "outputs"),
        **E.moto.env, "SDAPI_OUTPUT_PREFIX": PREFIX, "SDAPI_JOBS_QUEUE_URL": E.jobs_queue,
        "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH": "true",  # REST API events carry stage "prod"
    })
    E.watch_log = tmp / "watch.log"
    cmd = [cargo_lambda, "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", str(E.port),
           "--ignore-changes", "--package", "sdapi-server", "--bin", FUNCTION]
    if ctx.binary.parent.name == "release":
        cmd.append("--release")
    with open(E.watch_log, "wb") as log:
        E.watch = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:  # the watcher's port opens first; the function starts on the first request
        assert E.watch.poll() is None, f"cargo lambda watch exited with {E.watch.returncode}{tail(E.watch_log)}"
        try:
            socket.create_connection(("127.0.0.1", E.port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, f"watch port never opened{tail(E.watch_log)}"
            time.sleep(0.2)
    # The first request blocks until `cargo run` has built and started the function.
    wait_http(fn_url("/internal/ping"), COMPILE_TIMEOUT_S, E.watch, E.watch_log)


def teardown_suite(ctx):
    # SIGINT to the watcher's own pid stops it and its function child (which has its own group).
    if E.watch is not None:
        stop_process(E.watch)
    if E.moto is not None:
        E.moto.stop()
    if E.tmp is not None:
        E.tmp.cleanup()


def invoke(event: str | Path) -> dict:
    """`cargo lambda invoke --data-file` with JSON output: the raw Lambda response object. `event`:
    a committed event's name, or the path of an event file."""
    path = event if isinstance(event, Path) else EVENTS / f"{event}.json"
    proc = subprocess.run([tool("cargo-lambda"), "lambda", "invoke", "--invoke-address", "127.0.0.1",
                           "--invoke-port", str(E.port), "--data-file", str(path),
                           "--output-format", "json", FUNCTION],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, f"invoke {event}: rc {proc.returncode}\n{proc.stdout[-1000:]}\n{proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def http_parts(resp: dict) -> tuple[int, dict, dict | list]:
    """(status, lower-cased single-value headers, parsed JSON body) of an HTTP-event response."""
    headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
    for k, vs in (resp.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), ",".join(vs))
    body = resp.get("body") or ""
    if resp.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return resp["statusCode"], headers, json.loads(body)


def counters() -> dict:
    r = get(fn_url("/internal/runner"), timeout=60)
    assert r.status_code == 200, r.text[:300]
    return r.json()


# cargo-lambda 1.9.2's emulator answers the function's `POST .../response` before the waiting
# function-URL client has read that request's body, so a response body that arrives in several
# reads (a few images) is now and then lost: the client gets the emulator's own problem+json 500,
# or no answer at all. The function's counters tell that loss apart from a failure of ours: only
# when the function finished every job is the request sent once more.
EMULATOR_READ_TIMEOUT_S = 90


def emulator_lost_response(r: requests.Response) -> bool:
    """The emulator's own error (RFC 7807 problem JSON); A1111 error bodies have no `type` key."""
    if r.status_code != 500:
        return False
    try:
        return str(r.json().get("type", "")).startswith("https://httpstatuses.com/")
    except ValueError:
        return False


def generate_via_function_url(body: dict, jobs: int) -> tuple[requests.Response, dict]:
    """POSTs a txt2img through watch's function URL; returns the response and the counters before it."""
    for attempt in (1, 2):
        before = counters()
        try:
            r = post(fn_url("/sdapi/v1/txt2img"), body, timeout=EMULATOR_READ_TIMEOUT_S)
            if not emulator_lost_response(r):
                return r, before
            lost = f"the emulator's 500 {r.text[:200]}"
        except requests.exceptions.ReadTimeout:
            lost = f"no answer in {EMULATOR_READ_TIMEOUT_S} s"
        d = counter_delta(before, counters())
        assert (d["jobs_completed"], d["jobs_failed"]) == (jobs, 0), \
            f"{lost}, and the function did not finish its {jobs} job(s): {d}{tail(E.watch_log)}"
        print(f"     attempt {attempt}: {lost} although the function finished its jobs ({d}); "
              "the emulator lost the response, sending again", flush=True)
    raise AssertionError(f"the emulator lost the response twice{tail(E.watch_log)}")


# --- HTTP events through `cargo lambda invoke` ----------------------------------------------------

def _txt2img_event(event: str):
    before = counters()
    status, headers, body = http_parts(invoke(event))
    assert status == 200, f"{event}: {status} {str(body)[:300]}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    info = check_generation(body, 1)
    assert info["seed"] == 1234 and info["steps"] == 4, info
    assert len(runner_job_ids(headers.get("x-runner-job"))) == 1
    d = counter_delta(before, counters())
    assert (d["jobs_submitted"], d["jobs_completed"], d["images_generated"]) == (1, 1, 1), d


def test_invoke_function_url_txt2img(ctx):
    _txt2img_event("function-url-txt2img")


def test_invoke_http_api_default_stage_txt2img(ctx):
    _txt2img_event("http-api-txt2img")


def test_invoke_rest_api_prod_stage_txt2img(ctx):
    _txt2img_event("rest-api-prod-txt2img")


def test_invoke_alb_txt2img(ctx):
    _txt2img_event("alb-txt2img")


def test_invoke_sampler_events(ctx):
    for event in HTTP_SAMPLER_EVENTS:
        status, _, body = http_parts(invoke(event))
        assert status == 200, f"{event}: {status}"
        assert [s["name"] for s in body] == A1111_SAMPLERS, event


def test_invoke_runner_event(ctx):
    status, _, body = http_parts(invoke("function-url-runner"))
    assert status == 200 and isinstance(body.get("jobs_submitted"), int), body


def test_every_event_file_is_exercised(ctx):
    used = set(HTTP_TXT2IMG_EVENTS + HTTP_SAMPLER_EVENTS) | {"function-url-runner", "s3-put-batch-request",
                                                               "sqs-batch-request"}
    present = {p.stem for p in EVENTS.glob("*.json")}
    assert present == used, f"events without a test: {sorted(present - used)}; missing: {sorted(used - present)}"


# --- the same requests over the watch function-URL endpoint ---------------------------------------

def test_http_function_url_txt2img(ctx):
    r, before = generate_via_function_url(json.loads((SAMPLES / "requests" / "txt2img-minimal.json").read_text()), 1)
    assert r.status_code == 200, r.text[:300]
    check_generation(r.json(), 1)
    assert len(runner_job_ids(r.headers.get("X-Runner-Job"))) == 1
    d = counter_delta(before, counters())
    assert (d["jobs_submitted"], d["images_generated"]) == (1, 1), d


def test_http_function_url_batch2x2(ctx):
    r, before = generate_via_function_url(json.loads((SAMPLES / "requests" / "txt2img-batch2x2.json").read_text()), 2)
    assert r.status_code == 200, r.text[:300]
    check_generation(r.json(), 4)
    assert len(runner_job_ids(r.headers.get("X-Runner-Job"))) == 2
    d = counter_delta(before, counters())
    assert (d["jobs_submitted"], d["jobs_completed"], d["images_generated"]) == (2, 2, 4), d


def test_http_function_url_samplers_and_bare_base_url(ctx):
    r = get(fn_url("/sdapi/v1/samplers"), timeout=60)
    assert r.status_code == 200 and [s["name"] for s in r.json()] == A1111_SAMPLERS
    # Single-function project: A1111 clients can use the watch root as their base URL.
    r = get(f"http://127.0.0.1:{E.port}/sdapi/v1/samplers", timeout=60)
    assert r.status_code == 200 and len(r.json()) == 20


# --- batch events (S3 ObjectCreated, SQS) ----------------------------------------------------------

def read_manifest(job_id: str) -> dict:
    obj = E.s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}batch/{job_id}/result.json")
    return json.loads(obj["Body"].read())


def check_manifest(m: dict, job_id: str, n_images: int):
    assert m["job_id"] == job_id and m["status"] == "completed", m
    assert len(m["requests"]) == 1 and m["requests"][0]["status"] == "completed", m
    keys = m["requests"][0]["images"]
    assert len(keys) == n_images, keys
    for key in keys:
        data = E.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", key
    info = json.loads(m["requests"][0]["info"])
    assert info["seed"] == 1234, info


def test_invoke_s3_put_event_runs_batch_job(ctx):
    before = counters()
    resp = invoke("s3-put-batch-request")
    assert "errorType" not in resp, resp
    check_manifest(read_manifest("batch-job-single"), "batch-job-single", 1)
    d = counter_delta(before, counters())
    assert (d["jobs_submitted"], d["jobs_completed"], d["images_generated"]) == (1, 1, 1), d


def test_invoke_sqs_event_runs_batch_job(ctx):
    before = counters()
    resp = invoke("sqs-batch-request")
    # Partial-batch responses (ReportBatchItemFailures): nothing failed.
    assert resp == {"batchItemFailures": []}, resp
    message_id = json.loads((EVENTS / "sqs-batch-request.json").read_text())["Records"][0]["messageId"]
    check_manifest(read_manifest(message_id), message_id, 1)
    d = counter_delta(before, counters())
    assert (d["jobs_submitted"], d["images_generated"]) == (1, 1), d


# --- asynchronous requests on Lambda: handed to the jobs queue ---------------------------------------

def submit_async(body: dict) -> dict:
    r = post(fn_url("/sdapi/v1/txt2img"), body, headers={"Prefer": "respond-async"}, timeout=60)
    assert r.status_code == 202, f"HTTP {r.status_code}: {r.text[:300]}"
    job = r.json()
    assert r.headers["location"] == job["location"] == f"/sdapi/v1/jobs/{job['id']}", (r.headers, job)
    return job


def job_record(job_id: str) -> dict:
    r = get(fn_url(f"/sdapi/v1/jobs/{job_id}"), timeout=60)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def deliver_queued_message(job_id: str) -> dict:
    """Takes the job's hand-off message off the queue and invokes the function with it as the SQS
    event source mapping would; returns the Lambda response."""
    got = E.sqs.receive_message(QueueUrl=E.jobs_queue, MaxNumberOfMessages=1, WaitTimeSeconds=5).get("Messages", [])
    assert len(got) == 1, f"no message on the jobs queue: {got}"
    m = got[0]
    assert json.loads(m["Body"])["sdapi_job"]["id"] == job_id, m["Body"]
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0", "SenderId": "test",
                       "ApproximateFirstReceiveTimestamp": "0"},
        "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sdapi-jobs", "awsRegion": "us-east-1"}]}
    path = Path(E.tmp.name) / f"sqs-{job_id}.json"
    path.write_text(json.dumps(event))
    E.sqs.delete_message(QueueUrl=E.jobs_queue, ReceiptHandle=m["ReceiptHandle"])
    return invoke(path)


def test_async_request_is_handed_to_the_jobs_queue_and_run_by_its_consumer(ctx):
    body = {"prompt": "a red cube", "seed": 77, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler"}
    sync, _ = generate_via_function_url(body, 1)
    assert sync.status_code == 200, sync.text[:300]
    before = counters()
    job = submit_async(body)
    # Answered at once: nothing ran in the HTTP invocation, the record is in the bucket.
    assert job_record(job["id"])["state"] == "queued"
    assert counter_delta(before, counters())["jobs_submitted"] == 0
    assert "Contents" in E.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}jobs/{job['id']}")

    assert deliver_queued_message(job["id"]) == {"batchItemFailures": []}
    done = job_record(job["id"])
    assert done["state"] == "succeeded" and done["status_code"] == 200, done
    assert done["result"]["images"] == sync.json()["images"], "same request, same pixels as the synchronous call"
    d = counter_delta(before, counters())
    assert (d["jobs_submitted"], d["images_generated"]) == (1, 1), d


def test_a_handed_off_job_cancelled_while_queued_never_runs(ctx):
    job = submit_async({"prompt": "a blue ball", "seed": 5, "steps": 3, "width": 64, "height": 64})
    r = requests.delete(fn_url(f"/sdapi/v1/jobs/{job['id']}"), timeout=60)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text[:300]
    before = counters()
    assert deliver_queued_message(job["id"]) == {"batchItemFailures": []}
    assert job_record(job["id"])["state"] == "cancelled"
    assert counter_delta(before, counters())["jobs_submitted"] == 0, "the consumer skipped it"


# --- one router: the same answers under cargo lambda watch and as a plain server ---------------------

def _comparable(body: dict) -> dict:
    """A generation response minus what legitimately differs between two runs (the timestamp)."""
    info = json.loads(body["info"])
    info.pop("job_timestamp", None)
    info.pop("output_locations", None)
    return {"images": body["images"], "parameters": body["parameters"], "info": info}


def test_function_url_and_plain_server_answer_identically(ctx):
    assert ctx.server is not None, "needs the shared plain server"
    for path in ("/sdapi/v1/samplers", "/sdapi/v1/schedulers", "/sdapi/v1/sd-models", "/sdapi/v1/options"):
        a, b = get(fn_url(path), timeout=60), get(ctx.url + path, timeout=60)
        assert a.status_code == b.status_code == 200, path
        if path == "/sdapi/v1/sd-models":  # the watch process may see other paths for the same files
            assert [m["title"] for m in a.json()] == [m["title"] for m in b.json()]
        elif path != "/sdapi/v1/options":  # options are process state; compare keys only
            assert a.json() == b.json(), path
        else:
            assert list(a.json()) == list(b.json())
    body = json.loads((SAMPLES / "requests" / "txt2img-minimal.json").read_text())
    body["subseed"] = 5  # -1 would resolve to a random variation seed on each side
    (a, _), b = generate_via_function_url(body, 1), post(ctx.url + "/sdapi/v1/txt2img", body)
    assert a.status_code == b.status_code == 200
    ca, cb = _comparable(a.json()), _comparable(b.json())
    diff = {k for k in ca["info"] if ca["info"][k] != cb["info"].get(k)}
    assert ca == cb, f"same request, same seed: same JSON and images; info differs in {diff}, " \
                     f"images equal: {ca['images'] == cb['images']}, parameters equal: {ca['parameters'] == cb['parameters']}"
    bad = {"steps": "abc"}
    a, b = post(fn_url("/sdapi/v1/txt2img"), bad), post(ctx.url + "/sdapi/v1/txt2img", bad)
    assert a.status_code == b.status_code == 422 and a.json() == b.json()
