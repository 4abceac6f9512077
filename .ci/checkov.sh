#!/usr/bin/env bash
# Static security checks of infra/*.tf with checkov, in its own tool virtualenv (var/tools-venv),
# NOT the project's .venv: checkov pins many libraries (boto3, pydantic, ...) that would fight the
# functions' pins. Every skipped check is explained where it is skipped, in the .tf, as
#   #checkov:skip=CKV_...: reason
# Usage: bash .ci/checkov.sh [extra checkov args]     (CHECKOV_VENV=... to move the tool venv)
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV_VERSION=3.3.30
export BC_SKIP_MAPPING=TRUE  # offline: do not fetch the Prisma guideline mapping (noisy traceback)
VENV="${CHECKOV_VENV:-var/tools-venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/checkov" ] || ! "$VENV/bin/pip" show checkov 2>/dev/null | grep -qx "Version: $CHECKOV_VERSION"; then
  echo "checkov: installing checkov==$CHECKOV_VERSION into $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "checkov==$CHECKOV_VERSION"
fi
# --download-external-modules false / no API key: fully offline; the terraform framework only.
exec "$VENV/bin/checkov" -d infra --framework terraform --compact --quiet \
  --download-external-modules false "$@"
