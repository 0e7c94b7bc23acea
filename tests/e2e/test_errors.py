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
