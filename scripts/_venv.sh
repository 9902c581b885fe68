# Sourced by scripts/run and scripts/test: make .venv (Python >= 3.11) and install the project.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "voice-gateway needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1))." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
install_project() {  # $1: the pip target, e.g. "." or ".[dev]"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --editable "$1"
}
