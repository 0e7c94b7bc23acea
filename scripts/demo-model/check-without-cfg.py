"""Shows that the demo model's end-to-end checks can fail: runs tests/e2e/test_demo_model.py with
classifier-free guidance disabled (every request's cfg_scale forced to 1) and prints each result.

    .venv/bin/python scripts/demo-model/check-without-cfg.py target/debug/sdapi

Expected: the colour, guidance and negative-prompt checks FAIL; the zeroed-conditioning check
(which asserts a failure itself), img2img and the live preview still pass.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import test_demo_model as suite  # noqa: E402

real_post = suite.post


def post_without_guidance(url, body=None, **kw):
    if isinstance(body, dict) and "cfg_scale" in body:
        body = {**body, "cfg_scale": 1}
    return real_post(url, body, **kw)


class Context:
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target" / "debug" / "sdapi").resolve()


suite.post = post_without_guidance
suite.setup_suite(Context)
try:
    for name in sorted(n for n in dir(suite) if n.startswith("test_")):
        try:
            getattr(suite, name)(Context)
            print("pass", name)
        except AssertionError as e:
            print("FAIL", name, "-", str(e).splitlines()[0][:160])
finally:
    suite.teardown_suite(Context)
