#!/usr/bin/env python3
"""End-to-end suites against the real `sdapi` binary.

    python tests/e2e/run_all.py --binary target/debug/sdapi [--suite errors --suite discovery ...]

Starts the binary in server mode on a free loopback port (bundled tiny model, outputs in a temp
dir), waits for GET /internal/ping, runs every `test_*` function of the suite modules in
definition order (each gets a `Context`), stops the server by its pid (also on failure or Ctrl-C)
and prints `N passed, M failed` as its last line. Exit status 0 only when nothing failed.

A suite module sets NEEDS_SERVER = False when it does not use the shared server (it may start its
own processes). If the server cannot start, every test that needs it is counted as failed.
Optional module hooks `setup_suite(ctx)` / `teardown_suite(ctx)` run around a suite's tests; when
setup fails, every test of that suite is counted as failed with its error, and teardown always runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

SUITES = [
    "test_infra_lint",
    "test_webuiapi_discovery",
    "test_a1111_api_suite",
    "test_errors",
    "test_runner_observed",
    "test_jobs",
    "test_load",
    "test_upscalers",
    "test_demo_model",
    "test_parity_fixtures",
    "test_gpu_check",
    "test_cargo_lambda",
]


@dataclass
class Context:
    binary: Path
    server: harness.Server | None

    @property
    def url(self) -> str:
        assert self.server is not None, "shared server not running"
        return self.server.url


def collect(names: list[str]):
    out = []
    for name in names:
        mod = importlib.import_module(name)
        tests = [(k, v) for k, v in vars(mod).items() if k.startswith("test_") and callable(v)]
        if not tests:
            raise SystemExit(f"suite {name} defines no tests")
        out.append((name, getattr(mod, "NEEDS_SERVER", True), tests, mod))
    return out


def run_test(suite: str, tname: str, fn, ctx) -> bool:
    t0 = time.monotonic()
    try:
        fn(ctx)
    except Exception:  # noqa: BLE001 - one failing test must not stop the others
        print(f"FAIL {suite}::{tname} ({time.monotonic() - t0:.1f}s)", flush=True)
        print("     " + traceback.format_exc().rstrip().replace("\n", "\n     "), flush=True)
        return False
    print(f"ok   {suite}::{tname} ({time.monotonic() - t0:.1f}s)", flush=True)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, type=Path, help="the built sdapi binary")
    ap.add_argument("--suite", action="append", choices=[s.removeprefix("test_") for s in SUITES],
                    help="run only these suites (repeatable); default: all")
    a = ap.parse_args()
    binary = a.binary.resolve()
    if not binary.is_file():
        print(f"binary not found: {binary}")
        print("0 passed, 1 failed")
        return 1
    names = [f"test_{s}" for s in a.suite] if a.suite else SUITES
    suites = collect(names)

    passed = failed = 0
    server = None
    start_error = None
    if any(needs for _, needs, _, _ in suites):
        try:
            server = harness.Server(binary).start()
            print(f"server pid {server.proc.pid} on {server.url}", flush=True)
        except Exception as e:  # noqa: BLE001 - reported as failures below
            start_error = f"server did not start: {e}"
            print(start_error, flush=True)
    ctx = Context(binary=binary, server=server)
    try:
        for suite, needs_server, tests, mod in suites:
            print(f"== {suite}", flush=True)
            if needs_server and server is None:
                for tname, _ in tests:
                    failed += 1
                    print(f"FAIL {suite}::{tname}: {start_error}", flush=True)
                continue
            setup_error = None
            if hasattr(mod, "setup_suite"):
                try:
                    mod.setup_suite(ctx)
                except Exception:  # noqa: BLE001 - counted against every test of the suite
                    setup_error = "setup_suite failed:\n" + traceback.format_exc()
            try:
                for tname, fn in tests:
                    if setup_error:
                        failed += 1
                        print(f"FAIL {suite}::{tname}: " + setup_error.rstrip().replace("\n", "\n     "), flush=True)
                        setup_error = "setup_suite failed (see above)"
                        continue
                    ok = run_test(suite, tname, fn, ctx)
                    passed += ok
                    failed += not ok
                    if server is not None and server.proc.poll() is not None:
                        print(f"server exited with {server.proc.returncode}{harness.tail(server.log)}", flush=True)
                        server = ctx.server = None
                        start_error = "server crashed during an earlier test"
            finally:
                if hasattr(mod, "teardown_suite"):
                    mod.teardown_suite(ctx)
    finally:
        if server is not None:
            server.stop()
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
