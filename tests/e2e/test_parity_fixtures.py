"""A1111 parity fixtures through the running server, with the fixtures' own comparer.

Runs `compare.py server tests/fixtures/a1111-parity --url ...`, which POSTs every case's
request.json and compares the pixels (PASS: max |diff| <= 2 levels). Every case must PASS; the
bit-exact count is printed for the record, not required.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

from harness import FIXTURES


def check_fixture_set(ctx, fixtures):
    proc = subprocess.run([sys.executable, str(fixtures / "compare.py"), "server", str(fixtures), "--url", ctx.url],
                          capture_output=True, text=True, timeout=1800)
    out = proc.stdout
    print("     " + out.rstrip().replace("\n", "\n     "))
    cases = [c["name"] for c in json.loads((fixtures / "manifest.json").read_text())["cases"]]
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.split() and ln.split()[0] in cases}
    missing = [c for c in cases if c not in lines]
    failing = [c for c in cases if c in lines and lines[c].split()[1] not in ("PASS", "PASS/exact")]
    assert not missing, f"no result line for {missing}\n{proc.stderr[-2000:]}"
    assert not failing, "cases not PASS: " + ", ".join(failing)
    m = re.search(r"cases: (\d+)/(\d+) PASS \(max\|diff\| <= tol\), (\d+)/(\d+) bit-exact; images: (\d+)/(\d+) bit-exact", out)
    assert m, f"no summary line in compare.py output:\n{out[-1000:]}"
    assert m.group(1) == m.group(2) == str(len(cases)), m.group(0)
    print(f"     exact matches: {m.group(3)}/{m.group(4)} cases, {m.group(5)}/{m.group(6)} images")
    assert proc.returncode == 0, f"compare.py exited {proc.returncode}"


def test_every_sd15_parity_case_passes(ctx):
    check_fixture_set(ctx, FIXTURES)


def test_every_sdxl_parity_case_passes(ctx):
    check_fixture_set(ctx, FIXTURES.parent / "a1111-parity-sdxl")


def test_every_sd2_parity_case_passes(ctx):
    check_fixture_set(ctx, FIXTURES.parent / "a1111-parity-sd2")


def test_every_feature_case_passes(ctx):
    # LoRA, textual inversion, hires fix and inpainting (the server's Lora/ and embeddings/ link
    # the fixture's files).
    src = FIXTURES.parent / "a1111-parity-features"
    manifest = json.loads((src / "manifest.json").read_text())
    assert len(manifest["cases"]) == 12, [c["name"] for c in manifest["cases"]]
    check_fixture_set(ctx, src)
