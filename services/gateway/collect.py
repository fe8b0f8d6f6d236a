"""Fold the orchestrator's events into one answer: every door's unary path uses this.

    answer = await collect(orchestrator.ask(question, timeout_s))
    answer.text, answer.metadata
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass

from services.gateway.domain import Event, Metadata, TextDelta


@dataclass(frozen=True)
class Answer:
    """The kept answer's whole text and how it was made."""

    text: str
    metadata: Metadata


async def collect(events: AsyncIterable[Event]) -> Answer:
    """Concatenate the text deltas and keep the Metadata that ends the stream. The
    stream is read to its end (not left suspended at the metadata), so whatever the
    producer does after its last event runs now, in this task. A stream without
    metadata is a bug of the orchestrator, not of the caller: RuntimeError."""
    parts: list[str] = []
    meta: Metadata | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            meta = event
    if meta is None:
        raise RuntimeError("the orchestrator ended without metadata")
    return Answer("".join(parts), meta)
