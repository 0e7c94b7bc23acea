"""Deployment artefacts and samples, checked without AWS, Docker or the server:
infra/lint.sh (cfn-lint + hadolint), committed samples up to date, event and batch-file structure.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, SAMPLES, load_request

NEEDS_SERVER = False
BIN = Path(sys.executable).parent  # the venv holding cfn-lint and hadolint


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def test_lint_script_passes(ctx):
    p = run(["bash", "infra/lint.sh"], env={"SDAPI_TOOLS_BIN": str(BIN), "PATH": f"{BIN}:/usr/bin:/bin"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]


def test_cfn_lint_catches_a_broken_template(ctx):
    # Proves the lint step is not vacuous: the SAM template with an invalid PackageType must fail.
    broken = (ROOT / "infra/sam/template.yaml").read_text().replace("PackageType: Image", "PackageType: Imagee")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(broken)
        f.flush()
        p = run([str(BIN / "cfn-lint"), f.name])
    assert p.returncode != 0 and "E3030" in p.stdout, p.stdout[-2000:]


def test_samples_match_generator(ctx):
    p = run([sys.executable, "samples/generate.py", "--check"])
    assert p.returncode == 0, p.stdout + p.stderr


def events() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((SAMPLES / "events").glob("*.json"))}


def test_http_events_have_what_lambda_http_needs(ctx):
    minimal = load_request("txt2img-minimal")
    for name, ev in events().items():
        if name.startswith(("s3-", "sqs-")):
            continue
        if name.startswith(("function-url", "http-api")):  # payload v2 -> ApiGatewayV2httpRequest
            assert ev["version"] == "2.0" and ev["routeKey"] == "$default", name
            assert ev["requestContext"]["stage"] == "$default", name
            method, path = ev["requestContext"]["http"]["method"], ev["rawPath"]
            assert ev["requestContext"]["http"]["path"] == path, name
        elif name.startswith("rest-api"):  # payload v1 -> ApiGatewayProxyRequest
            assert ev["requestContext"]["stage"] == "prod" and ev["requestContext"]["httpMethod"] == ev["httpMethod"]
            method, path = ev["httpMethod"], ev["path"]
        elif name.startswith("alb"):  # -> AlbTargetGroupRequest
            assert ev["requestContext"]["elb"]["targetGroupArn"].startswith("arn:aws:elasticloadbalancing:"), name
            method, path = ev["httpMethod"], ev["path"]
        else:
            raise AssertionError(f"unclassified event {name}")
        assert ev["isBase64Encoded"] is False, name
        if method == "POST":
            assert path == "/sdapi/v1/txt2img" and json.loads(ev["body"]) == minimal, name
        else:
            assert method == "GET" and path in ("/sdapi/v1/samplers", "/internal/runner"), name


def check_batch_file(obj):
    jobs = obj if isinstance(obj, list) else [obj]
    assert jobs, "empty job list"
    for job in jobs:
        modes = [k for k in ("txt2img", "img2img") if k in job]
        assert len(modes) == 1, f"a job names exactly one of txt2img/img2img: {sorted(job)}"
        assert set(job) <= {"name", modes[0]}, sorted(job)
        assert isinstance(job[modes[0]], dict)


def test_batch_files_and_events(ctx):
    for name in ("batch-job-single", "batch-job-list"):
        check_batch_file(load_request(name))
    s3 = events()["s3-put-batch-request"]["Records"][0]
    assert s3["eventSource"] == "aws:s3" and s3["eventName"] == "ObjectCreated:Put"
    assert s3["s3"]["object"]["key"] == "requests/batch-job-single.json"
    sqs = events()["sqs-batch-request"]["Records"][0]
    assert sqs["eventSource"] == "aws:sqs"
    check_batch_file(json.loads(sqs["body"]))
