#!/usr/bin/env bash
# Quick start, tests: install what is missing, prepare models, lint, check layers, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
PYTHONPATH=$PWD .venv/bin/lint-imports
exec .venv/bin/pytest -q "$@"
