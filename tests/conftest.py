"""Fixtures shared by every suite: real services as child processes, real models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServiceProcess, start_service

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from core.models import prepare_smollm2

    return prepare_smollm2()


@pytest.fixture(scope="session")
def tiny_llama_path() -> Path:
    from core.models import prepare_tiny_llama

    return prepare_tiny_llama()


@pytest.fixture(scope="session")
def smollm2_backend(smollm2_path: Path) -> Iterator[ServiceProcess]:
    """One real vLLM SmolLM2 backend (TP=1) for the whole session, as `python -m`."""
    service = start_service(
        "services.backend", "--model", str(smollm2_path), "--served_name", "small",
        "--max_tokens_limit", "512", "--drain_seconds", "0",
    )
    try:
        service.wait_serving(timeout=600)
        yield service
    finally:
        service.stop()
