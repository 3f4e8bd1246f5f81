#!/usr/bin/env bash
# Builds the Python package the way a user installs it (`pip install .` in
# a fresh virtualenv, which compiles the hub in release into the
# workspace's target/, so a prior `cargo build --release` is reused), then
# runs the package's tests and the FastAPI example's against real hubs.
#
#   python/run-tests.sh [VENV_DIR] [PYTEST ARGS…]     (default VENV_DIR: target/python-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-target/python-venv}"
shift || true
python="${PYTHON:-python3}"

rm -rf "$venv"
"$python" -m venv "$venv"
timeout 600 "$venv/bin/python" -m pip install --quiet --upgrade pip
start=$(date +%s)
timeout 2400 "$venv/bin/python" -m pip install --quiet .
echo "pip install . took $(( $(date +%s) - start )) s"
# pytest for the tests; fastapi, uvicorn, python-multipart and httpx for the example's.
timeout 600 "$venv/bin/python" -m pip install --quiet pytest fastapi uvicorn python-multipart httpx
"$venv/bin/python" -c 'import wshub, subprocess; print(wshub.__version__, wshub.bin_path()); subprocess.run([wshub.bin_path(), "--version"], check=True)'
# From the repository root, so that `import wshub` is the installed package
# (the tests' conftest is found by pytest, not imported from python/).
exec timeout 900 "$venv/bin/python" -m pytest -q python/tests examples/fastapi "$@"
