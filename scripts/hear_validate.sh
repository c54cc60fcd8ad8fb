#!/usr/bin/env bash
# Checks `hubert_probe.hear` with HEAR's own validator (the `hearvalidator` package from PyPI,
# the checker HEAR 2021 ran on every submission): builds the wheel, installs it with torch and
# tensorflow-cpu into a venv, and runs `hear-validator hubert_probe.hear` on a model (default:
# the tiny fixture model, so no download of weights is needed).
#
# Usage: scripts/hear_validate.sh [MODEL_DIR_OR_HUB_ID]
#   HEAR_VENV=DIR   where the venv lives (default target/hear-venv; reused when it exists)
#   PYTHON=python3  the interpreter to make the venv from
#
# torch from PyPI brings about 3 GB of CUDA wheels (there is no CPU-only torch on PyPI); the
# venv is kept, so that happens once. hearvalidator declares `tensorflow` (the full package) as a
# dependency; tensorflow-cpu provides the same module, so hearvalidator is installed without its
# declared dependencies after torch and tensorflow-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-crates/hubert-core/tests/fixtures/tiny-base}
venv=${HEAR_VENV:-target/hear-venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade pip
"${pip[@]}" maturin numpy torch tensorflow-cpu
"${pip[@]}" --no-deps hearvalidator

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/maturin" build --release --quiet -m python/Cargo.toml -i "$venv/bin/python" --out "$wheels"
"${pip[@]}" --force-reinstall --no-deps "$wheels"/hubert_probe-*.whl

TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -c 'import hubert_probe, torch, tensorflow as tf; from importlib.metadata import version; print("hubert_probe", hubert_probe.__version__, "| hearvalidator", version("hearvalidator"), "| torch", torch.__version__, "| tensorflow-cpu", tf.__version__)'
echo "$ hear-validator hubert_probe.hear -m $model -d cpu"
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/hear-validator" hubert_probe.hear -m "$model" -d cpu
