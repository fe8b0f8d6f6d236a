"""Typed settings of the classifier service (environment prefix `CMESH_CLASSIFIER_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from cascade.classifiers import SHIPPED
from services.common.settings import ServiceSettings


class ClassifierSettings(ServiceSettings):
    """Everything the classifier service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="CMESH_CLASSIFIER_", extra="ignore",
                                      validate_default=True)

    classifier: str = Field(
        SHIPPED, description="Registry name of the classifier (cascade.CLASSIFIERS); the "
        "default `length-backbone` is prompt length plus a correction shrunk out of domain.")
    artifact: Path | None = Field(
        None, description="Trained classifier artifact; unset uses the packaged one.")
    model_path: Path | None = Field(
        None, description="Local sentence-transformers folder; unset uses the packaged MiniLM.")
    max_prompts: int = Field(256, ge=1, le=10_000, description="Most prompts in one Score call.")
    max_prompt_chars: int = Field(8_000, ge=1, description="Longer prompts are rejected.")
    context_turns: int = Field(
        1, ge=0, le=16,
        description="Earlier user turns of the conversation prepended to each prompt.")
    max_batch: int = Field(
        256, ge=1, le=1024,
        description="Most prompts per scoring batch; the encoder sorts a batch by length, "
                    "so big batches waste little on padding.")
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000,
        description="How long a prompt may wait for batch mates; 0 batches only what is "
                    "already queued (calls that arrive while a batch runs form the next).")
