#!/usr/bin/env python3
"""Regenerate samples/requests/*.json and samples/events/*.json (stdlib only).

The request bodies are the single source of truth; every Lambda event embeds one of them, so an
edit here keeps the HTTP samples, the events and the batch files consistent. Run from anywhere:
    python3 samples/generate.py            # rewrite
    python3 samples/generate.py --check    # exit 1 if a committed file differs (used by the e2e suite)
"""
from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQ_DIR = ROOT / "samples" / "requests"
EV_DIR = ROOT / "samples" / "events"
INIT_PNG = ROOT / "tests" / "fixtures" / "a1111-parity" / "init_images" / "init_a_64x64.png"

# The bundled model; every request pins it so the samples do not depend on the server default.
MODEL = {"sd_model_checkpoint": "tiny-sd15"}

# Made-up but well-formed identifiers, used consistently across events.
ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "sdapi-outputs-123456789012"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:sdapi-batch-jobs"


def init_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(INIT_PNG.read_bytes()).decode()


def requests() -> dict[str, dict]:
    minimal = {"prompt": "a red cube on a wooden table", "seed": 1234, "steps": 4, "width": 64,
               "height": 64, "override_settings": MODEL}
    # A1111's own test payload (test/test_txt2img.py, §8), plus the model pin.
    a1111_test = {
        "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0,
        "firstphase_height": 0, "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "",
        "prompt": "example prompt", "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0,
        "s_tmin": 0, "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1,
        "seed_resize_from_w": -1, "steps": 3, "styles": [], "subseed": -1, "subseed_strength": 0,
        "tiling": False, "width": 64, "override_settings": MODEL,
    }
    batch = {"prompt": "a red cube on a wooden table", "seed": 1234, "sampler_name": "Euler a",
             "steps": 4, "width": 64, "height": 64, "batch_size": 2, "n_iter": 2,
             "override_settings": MODEL}
    negative = {"prompt": "a ((red)) cube, (wooden table:1.3), [blurry]",
                "negative_prompt": "(low quality:1.2), text", "seed": 42, "sampler_name": "DPM++ 2M",
                "scheduler": "Karras", "steps": 6, "cfg_scale": 6.5, "width": 64, "height": 64,
                "override_settings": MODEL}
    img2img = {"prompt": "a red cube on a wooden table", "seed": 1234, "sampler_name": "Euler",
               "steps": 8, "width": 64, "height": 64, "denoising_strength": 0.6,
               "init_images": [init_data_url()], "override_settings": MODEL}
    return {
        "txt2img-minimal": minimal,
        "txt2img-a1111-test": a1111_test,
        "txt2img-batch2x2": batch,
        "txt2img-negative-emphasis": negative,
        "img2img-64": img2img,
    }


def batch_files(reqs: dict[str, dict]) -> dict[str, object]:
    """Batch-job request files (format: docs/batch-jobs.md)."""
    return {
        "batch-job-single": {"txt2img": reqs["txt2img-minimal"]},
        "batch-job-list": [
            {"name": "cube", "txt2img": reqs["txt2img-minimal"]},
            {"name": "cube-x4", "txt2img": reqs["txt2img-batch2x2"]},
            {"name": "cube-i2i", "img2img": reqs["img2img-64"]},
        ],
    }


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --- HTTP events -------------------------------------------------------------------------------
# Field sets follow aws_lambda_events 1.2.1 (the types lambda_http 1.3 deserializes into) and its
# fixtures, which are captures of real events.

def function_url(method: str, path: str, body: str | None, query: str = "") -> dict:
    """Lambda function URL, payload format 2.0 (parsed by lambda_http as ApiGatewayV2httpRequest)."""
    headers = {"accept": "*/*", "host": "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
               "user-agent": "python-requests/2.32.3", "x-amzn-trace-id": "Root=1-6744a1b2-0123456789abcdef01234567",
               "x-forwarded-for": "203.0.113.7", "x-forwarded-port": "443", "x-forwarded-proto": "https"}
    if body is not None:
        headers["content-type"] = "application/json"
        headers["content-length"] = str(len(body.encode()))
    ev = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous", "apiId": "abcdefghijklmnopqrstuvwxyz012345",
            "domainName": headers["host"], "domainPrefix": "abcdefghijklmnopqrstuvwxyz012345",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                     "userAgent": headers["user-agent"]},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "routeKey": "$default", "stage": "$default",
            "time": "25/Nov/2026:10:00:00 +0000", "timeEpoch": 1795600800000,
        },
        "isBase64Encoded": False,
    }
    if query:
        ev["queryStringParameters"] = dict(kv.split("=", 1) for kv in query.split("&"))
    if body is not None:
        ev["body"] = body
    return ev


def http_api(method: str, path: str, body: str | None) -> dict:
    """API Gateway HTTP API (v2 payload), `$default` stage, `$default` route."""
    ev = function_url(method, path, body)
    host = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
    ev["headers"]["host"] = host
    ctx = ev["requestContext"]
    ctx.update({"accountId": ACCOUNT, "apiId": "a1b2c3d4e5", "domainName": host, "domainPrefix": "a1b2c3d4e5",
                "requestId": "Hx3aBjzNoAMEVfQ="})
    return ev


def rest_api(method: str, path: str, body: str | None) -> dict:
    """API Gateway REST API (v1 payload), stage `prod`, `/{proxy+}` resource.

    lambda_http prepends the stage to the path unless AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true
    (see docs/deploy.md); the event itself is what API Gateway sends."""
    host = "q1w2e3r4t5.execute-api.us-east-1.amazonaws.com"
    headers = {"Accept": "*/*", "Host": host, "User-Agent": "python-requests/2.32.3",
               "X-Amzn-Trace-Id": "Root=1-6744a1b2-0123456789abcdef01234567", "X-Forwarded-For": "203.0.113.7",
               "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT, "resourceId": "abc123", "stage": "prod", "domainName": host,
            "domainPrefix": "q1w2e3r4t5", "requestId": "deef4878-7910-11e6-8f14-25afc3e9ae33",
            "protocol": "HTTP/1.1", "path": "/prod" + path, "resourcePath": "/{proxy+}", "httpMethod": method,
            "requestTime": "25/Nov/2026:10:00:00 +0000", "requestTimeEpoch": 1795600800000, "apiId": "q1w2e3r4t5",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "python-requests/2.32.3", "accessKey": None,
                         "accountId": None, "caller": None, "user": None, "userArn": None},
        },
        "body": body, "isBase64Encoded": False,
    }


def alb(method: str, path: str, body: str | None) -> dict:
    """Application Load Balancer target-group event (single-value headers)."""
    headers = {"accept": "*/*", "host": "sdapi-alb-1234567890.us-east-1.elb.amazonaws.com",
               "user-agent": "python-requests/2.32.3", "x-amzn-trace-id": "Root=1-6744a1b2-0123456789abcdef01234567",
               "x-forwarded-for": "203.0.113.7", "x-forwarded-port": "80", "x-forwarded-proto": "http"}
    if body is not None:
        headers["content-type"] = "application/json"
    return {
        "requestContext": {"elb": {"targetGroupArn":
                                   f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/sdapi/0123456789abcdef"}},
        "httpMethod": method, "path": path, "queryStringParameters": {}, "headers": headers,
        "body": body or "", "isBase64Encoded": False,
    }


# --- batch events ------------------------------------------------------------------------------

def s3_put(key: str, size: int) -> dict:
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
        "eventTime": "2026-11-25T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLEUSER"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810",
                             "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "sdapi-batch-requests",
               "bucket": {"name": BUCKET, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": f"arn:aws:s3:::{BUCKET}"},
               "object": {"key": key, "size": size, "eTag": "0123456789abcdef0123456789abcdef",
                          "sequencer": "0067445A2B3C4D5E6F"}},
    }]}


def sqs(body: str) -> dict:
    return {"Records": [{
        "messageId": "2e1424d4-f796-459a-8184-9c92662be6da", "receiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq...",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795600800000",
                       "SenderId": "AIDAEXAMPLESENDER", "ApproximateFirstReceiveTimestamp": "1795600800050"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN, "awsRegion": REGION,
    }]}


def all_files() -> dict[Path, str]:
    reqs = requests()
    out: dict[Path, str] = {}
    for name, body in {**reqs, **batch_files(reqs)}.items():
        out[REQ_DIR / f"{name}.json"] = json.dumps(body, indent=1) + "\n"
    t2i = dumps(reqs["txt2img-minimal"])
    path = "/sdapi/v1/txt2img"
    events = {
        "function-url-txt2img": function_url("POST", path, t2i),
        "function-url-samplers": function_url("GET", "/sdapi/v1/samplers", None),
        "function-url-runner": function_url("GET", "/internal/runner", None),
        "http-api-txt2img": http_api("POST", path, t2i),
        "http-api-samplers": http_api("GET", "/sdapi/v1/samplers", None),
        "rest-api-prod-txt2img": rest_api("POST", path, t2i),
        "rest-api-prod-samplers": rest_api("GET", "/sdapi/v1/samplers", None),
        "alb-txt2img": alb("POST", path, t2i),
        "alb-samplers": alb("GET", "/sdapi/v1/samplers", None),
        "s3-put-batch-request": s3_put("requests/batch-job-single.json",
                                       len(out[REQ_DIR / "batch-job-single.json"].encode())),
        "sqs-batch-request": sqs(dumps({"txt2img": reqs["txt2img-minimal"]})),
    }
    for name, ev in events.items():
        out[EV_DIR / f"{name}.json"] = json.dumps(ev, indent=1) + "\n"
    return out


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in all_files().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale samples (run python3 samples/generate.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
