#!/usr/bin/env bash
# Quick start, main job: install what is missing, prepare models, bring the local
# stack up (nats-server, backends, cache, classifier, broker, gateway), run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/cmesh up --demo "$@"
