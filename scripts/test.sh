#!/usr/bin/env bash
# Quick start, tests: install what is missing, prepare models, lint, type-check, check layers,
# run the suite. `scripts/test.sh --unit` runs the same checks and only the tests that start
# no vLLM engine, no nats-server and no slow training or evaluation run (the developer's
# inner loop, under a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/mypy
PYTHONPATH=$PWD .venv/bin/lint-imports
if [ "${1:-}" = "--unit" ]; then
  shift
  exec .venv/bin/pytest -q -m "not vllm and not nats and not slow" "$@"
fi
exec .venv/bin/pytest -q "$@"
