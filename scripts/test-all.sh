#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first.
#   1. Python test tools (webuiapi client, numpy/Pillow for the fixture comparer) into .venv
#   2. cargo fmt --check and clippy (warnings are errors), then cargo test for the whole workspace
#      (unit, contract, parity, HTTP tests)
#   3. end-to-end tests against the real binary: webuiapi discovery calls and the A1111 parity
#      fixtures through the running service (tests/e2e/*.py)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

# moto_server (local S3 for the storage tests), cargo-lambda, cfn-lint come from the venv.
export PATH="$PWD/.venv/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo build --locked --workspace --bins
cargo test --locked --workspace

.venv/bin/python tests/e2e/run_all.py --binary target/debug/sdapi
