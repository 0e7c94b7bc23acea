"""Garbage on every input path; expected statuses and bodies are A1111 v1.10.1's
(docs/a1111-behaviour.md §2.2, §2.3, §2.5, §10): FastAPI's 422 `{"detail":[...]}` for
validation, `{"detail": "..."}` for routing, the four-key `{"error","detail","body","errors"}`
for everything else.
"""
from __future__ import annotations

import requests

from harness import Server, check_error_shape, get, load_request, post

T2I = "/sdapi/v1/txt2img"
I2I = "/sdapi/v1/img2img"


def validation_item(r: requests.Response) -> dict:
    assert r.status_code == 422, f"HTTP {r.status_code}, expected 422: {r.text[:300]}"
    body = r.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], list) and body["detail"], body
    return body["detail"][0]


def test_malformed_json_is_jsondecode_422(ctx):
    r = post(ctx.url + T2I, data=b'{"prompt": }', headers={"Content-Type": "application/json"})
    item = validation_item(r)
    assert item["type"] == "value_error.jsondecode", item
    assert item["loc"] == ["body", 11], item
    assert item["msg"] == "Expecting value: line 1 column 12 (char 11)", item


def test_missing_body_is_field_required(ctx):
    r = post(ctx.url + T2I, data=b"", headers={"Content-Type": "application/json"})
    item = validation_item(r)
    assert item == {"loc": ["body"], "msg": "field required", "type": "value_error.missing"}, item


def test_wrong_type_steps(ctx):
    item = validation_item(post(ctx.url + T2I, {"prompt": "x", "steps": "abc"}))
    assert item == {"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"}, item


def test_null_send_images_not_allowed(ctx):
    item = validation_item(post(ctx.url + T2I, {"prompt": "x", "send_images": None}))
    assert item == {"loc": ["body", "send_images"], "msg": "none is not an allowed value",
                    "type": "type_error.none.not_allowed"}, item


def test_null_img2img_denoising_strength_not_allowed(ctx):
    body = load_request("img2img-64")
    body["denoising_strength"] = None
    item = validation_item(post(ctx.url + I2I, body))
    assert item["loc"] == ["body", "denoising_strength"] and item["type"] == "type_error.none.not_allowed", item


def test_non_json_content_type(ctx):
    r = post(ctx.url + T2I, data=b'{"prompt": "x"}', headers={"Content-Type": "text/plain"})
    item = validation_item(r)
    assert item["loc"] == ["body"] and item["type"] == "type_error.dict", item


def test_unknown_route_404(ctx):
    r = get(ctx.url + "/sdapi/v1/no-such-route", timeout=30)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}, (r.status_code, r.text)


def test_wrong_method_405(ctx):
    r = get(ctx.url + T2I, timeout=30)
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}, (r.status_code, r.text)


def test_img2img_without_init_images(ctx):
    body = load_request("img2img-64")
    del body["init_images"]
    r = post(ctx.url + I2I, body)
    assert r.json() == {"error": "HTTPException", "detail": "Init image not found", "body": "", "errors": ""}
    assert r.status_code == 404


def test_img2img_garbage_base64(ctx):
    body = load_request("img2img-64")
    body["init_images"] = ["this is not an image"]
    r = post(ctx.url + I2I, body)
    check_error_shape(r, 500, "Invalid encoded image")


def test_img2img_garbage_data_url(ctx):
    body = load_request("img2img-64")
    body["init_images"] = ["data:image/png;base64,AAAA"]  # valid base64, not an image
    check_error_shape(post(ctx.url + I2I, body), 500, "Invalid encoded image")


def png_data_url(mode: str, size: tuple[int, int], color) -> str:
    import base64
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_garbage_masks(ctx):
    """Inpainting masks: undecodable ones are A1111's 500; odd sizes, blank and full masks and
    out-of-range fields are answered, never a crash (the service keeps serving)."""
    body = load_request("img2img-64")
    body.update({"steps": 2, "width": 64, "height": 64})
    for mask in ["not base64 at all", "data:image/png;base64,AAAA", "data:image/png"]:
        r = post(ctx.url + I2I, {**body, "mask": mask})
        assert r.status_code == 500, f"{mask!r}: HTTP {r.status_code}"
        check_error_shape(r, 500)
    for mask, full_res in [(png_data_url("L", (200, 30), 255), True), (png_data_url("L", (64, 64), 0), True),
                           (png_data_url("L", (64, 64), 0), False), (png_data_url("RGB", (64, 64), "white"), False),
                           (png_data_url("RGBA", (16, 16), (0, 0, 0, 0)), False)]:
        r = post(ctx.url + I2I, {**body, "mask": mask, "inpaint_full_res": full_res})
        assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:300]}"
    for field, value in [("inpaint_full_res_padding", -4), ("mask_blur", 100000)]:
        check_error_shape(post(ctx.url + I2I, {**body, "mask": png_data_url("L", (64, 64), 255), field: value}), 422)
    assert get(ctx.url + "/sdapi/v1/progress", timeout=10).status_code == 200


def test_oversized_body_is_413_in_error_shape(ctx):
    # A separate instance: the limit is process-wide configuration.
    with Server(ctx.binary, {"SDAPI_MAX_BODY_MB": "1"}) as small:
        big = {"prompt": "x" * (1536 * 1024), "steps": 1, "width": 64, "height": 64}
        r = post(small.url + T2I, big, timeout=60)
        check_error_shape(r, 413)
        # Under the limit the same instance still serves.
        assert get(small.url + "/sdapi/v1/samplers", timeout=30).status_code == 200


def test_oversized_headers_are_431_in_error_shape(ctx):
    # A 1 MB Authorization header used to get hyper's bare 431 (no body).
    r = get(ctx.url + "/sdapi/v1/samplers", headers={"Authorization": "Basic " + "A" * 1_000_000}, timeout=30)
    body = check_error_shape(r, 431)
    assert "SDAPI_MAX_HEADER_KB" in body["detail"], body
    # Past the connection's 2 MiB read buffer hyper answers on its own (still a 431).
    r = get(ctx.url + "/sdapi/v1/samplers", headers={"X-Big": "A" * (3 << 20)}, timeout=30)
    assert r.status_code == 431
    assert get(ctx.url + "/internal/ping", timeout=30).status_code == 200


def test_api_auth(ctx):
    with Server(ctx.binary, {"SDAPI_API_AUTH": "u:p"}) as s:
        url = s.url + "/sdapi/v1/samplers"
        r = get(url, timeout=30)
        assert r.status_code == 401
        assert r.json() == {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""}
        r = get(url, auth=("u", "wrong"), timeout=30)
        assert r.status_code == 401
        assert r.json() == {"error": "HTTPException", "detail": "Incorrect username or password", "body": "",
                            "errors": ""}
        assert get(url, auth=("u", "p"), timeout=30).status_code == 200
        # Generation routes are protected too, before any body parsing.
        assert post(s.url + T2I, {"prompt": "x"}, timeout=30).status_code == 401
        # The health check stays open so load balancers need no credentials; the runner's
        # counters reveal state and are protected.
        assert get(s.url + "/internal/ping", timeout=30).status_code == 200
        assert get(s.url + "/internal/runner", timeout=30).status_code == 401
        assert get(s.url + "/internal/runner", auth=("u", "p"), timeout=30).status_code == 200


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _png_with_ztxt(text: bytes) -> bytes:
    """A 2×2 PNG whose zTXt `parameters` chunk inflates to `text`."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x00" * 6 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(text, 9))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_reliability_findings_through_the_real_binary(ctx):
    """Each input the reliability probe found (docs/reliability.md), against a fresh server:
    an A1111-shaped answer, the server answering `/internal/ping` afterwards, and its resident
    memory back near the baseline (no timing is asserted; the figures are printed)."""
    import base64
    import io
    import json
    import threading
    import time

    from PIL import Image

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    gif = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(gif, format="GIF")
    bomb = _png_with_ztxt(b"\x00" * (256 << 20))  # ~256 kB inflating to 256 MiB
    cases = [
        ("seed resize 1e9", T2I, {"prompt": "x", "seed_resize_from_w": 1000000000, "seed_resize_from_h": 1000000000,
                                  "width": 64, "height": 64}, 422),
        ("5 MB prompt", T2I, {"prompt": "word " * 1_000_000, "width": 64, "height": 64}, 422),
        ("100,000 BREAKs", T2I, {"prompt": "BREAK " * 100_000, "width": 64, "height": 64}, 422),
        ("zTXt bomb", "/sdapi/v1/png-info", {"image": b64(bomb)}, 500),
        ("GIF init image", I2I, {"prompt": "x", "init_images": [b64(gif.getvalue())], "steps": 2, "width": 64,
                                 "height": 64, "denoising_strength": 0.5}, 200),
    ]
    with Server(ctx.binary) as s:
        assert post(s.url + T2I, {"prompt": "x", "steps": 1, "width": 64, "height": 64}, timeout=120).status_code == 200
        baseline = _rss_mb(s.proc.pid)
        figures = {}
        for name, path, body, status in cases:
            t0 = time.monotonic()
            r = post(s.url + path, body, timeout=60)
            ms = round((time.monotonic() - t0) * 1e3, 1)
            assert r.status_code == status, f"{name}: HTTP {r.status_code} {r.text[:300]}"
            if status != 200:
                check_error_shape(r, status)
            assert get(s.url + "/internal/ping", timeout=10).status_code == 200, name
            figures[name] = {"ms": ms, "rss_mb": round(_rss_mb(s.proc.pid), 1)}

        # Two concurrent 200 kB comma-free `parameters` texts while /internal/ping is polled.
        text = ("prompt\n" + "word another word " * 12_000).encode()[: 1 << 20]
        png = b64(_png_with_ztxt(text))
        answers: list[int] = []
        threads = [threading.Thread(target=lambda: answers.append(
            post(s.url + "/sdapi/v1/png-info", {"image": png}, timeout=60).status_code)) for _ in range(2)]
        ping_ms = []
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            t0 = time.monotonic()
            assert get(s.url + "/internal/ping", timeout=10).status_code == 200
            ping_ms.append((time.monotonic() - t0) * 1e3)
            time.sleep(0.02)
        for t in threads:
            t.join()
        assert answers == [200, 200], answers
        figures["2 × 200 kB png-info"] = {"ping_max_ms": round(max(ping_ms, default=0.0), 1),
                                          "rss_mb": round(_rss_mb(s.proc.pid), 1)}
        after = _rss_mb(s.proc.pid)
        print("     " + json.dumps({"baseline_rss_mb": round(baseline, 1), "after_rss_mb": round(after, 1),
                                    "cases": figures}))
        # Near the baseline: none of these may leave hundreds of MB behind (the bomb alone would be 256).
        assert after < baseline + 100, (baseline, after, figures)
