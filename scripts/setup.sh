#!/usr/bin/env bash
# Creates .venv (if missing), installs sparsecraft with everything the demo, tests and benchmarks
# need, and compiles the native CPU kernels (cached in ~/.cache/sparsecraft). Safe to run again.
# torch is pinned to the CPU build 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
quiet() { "$@" 2>&1 | { grep -v -e '^WARNING: Location' -e 'is ignored: it is neither' || true; }; }
[ -x .venv/bin/python ] || python3 -m venv .venv
quiet .venv/bin/python -m pip install -q "torch==2.13.0"
quiet .venv/bin/python -m pip install -q -e ".[dev]"
# The compressed-tensors sparse formats (export extra): see the note in pyproject.toml for --no-deps.
quiet .venv/bin/python -m pip install -q --no-deps "compressed-tensors==0.14.0.1"
# A failed native build is not fatal: sparsecraft falls back to dense torch and says so.
.venv/bin/python -m sparsecraft.kernels.build || echo "sparsecraft: continuing without native kernels"
