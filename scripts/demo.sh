#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job: `sparsecraft demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/sparsecraft demo "$@"
