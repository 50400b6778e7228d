#!/usr/bin/env bash
# Sets up (scripts/setup.sh), checks style and imports (ruff), and runs the whole test suite.
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest "$@"
