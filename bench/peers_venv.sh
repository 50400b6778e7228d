#!/usr/bin/env bash
# Make the venv for `python -m bench.runtime --peers`: DeepSparse 1.8.0 (needs numpy<2), ONNX and ONNX Runtime,
# plus this project without dependencies; torch and transformers come from the project's .venv through a .pth file
# placed after the venv's own packages, so the venv's numpy<2 wins.
# Usage: bash bench/peers_venv.sh [VENV_DIR]   (default bench/.peers-venv, ignored by git)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/bench/.peers-venv}"
main="${SPARSECRAFT_VENV:-$root/.venv}"
"$main/bin/python" -m venv "$venv"
"$venv/bin/pip" install -q deepsparse==1.8.0 "numpy<2" onnx onnxruntime
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$main/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/zz_project_venv.pth"
"$venv/bin/pip" install -q --no-deps -e "$root"
echo "peers venv ready: $venv/bin/python -m bench.runtime --peers"
