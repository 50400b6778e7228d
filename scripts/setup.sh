#!/usr/bin/env bash
# Creates .venv (if missing) and installs sparsecraft with everything the demo, tests and benchmarks
# need. Safe to run again. torch is pinned to the CPU build 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv 2>/dev/null || true
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
