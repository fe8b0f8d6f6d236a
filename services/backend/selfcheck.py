"""The backend's start-up self-check: one short greedy answer before SERVING.

It does two jobs. It warms the generation path (the first request after start
otherwise pays for lazy initialisation: 4.5 s against 0.6 s for the next one),
and it refuses to serve an engine that answers with degenerate text, as vLLM
0.32's CPU bf16 path does on CPUs with native bf16 (services/backend/dtype.py).
A degenerate answer is one that never stops on a prompt whose answer is one
sentence, repeats the same tokens, is empty, or lacks the expected word. The
check is judged only where `self_check` is on; a base or random model (the
tiny TP Llama of the tests) turns it off and is still warmed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.errors import StartupCheckFailed
from core.generation import Delta, GenerationRequest, Sampling

log = logging.getLogger(__name__)

REPEAT_NGRAM = 4
"""Token n-gram length whose repetition marks a looping answer."""
REPEAT_LIMIT = 3
"""A one-sentence answer never holds the same 4 tokens three times."""


class Generates(Protocol):
    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]: ...


@dataclass(frozen=True)
class SelfCheck:
    """What to ask at warm-up and what a sane answer holds."""

    prompt: str
    expect: str
    max_tokens: int
    judge: bool = True


def degeneracy(text: str, token_ids: Sequence[int], finish_reason: str | None,
               check: SelfCheck) -> list[str]:
    """What is wrong with a warm-up answer; empty when it looks sane."""
    problems = []
    if not text.strip():
        problems.append("empty answer")
    if finish_reason == "length":
        problems.append(f"no stop within {check.max_tokens} tokens "
                        "(a one-sentence answer was expected)")
    grams = Counter(tuple(token_ids[i:i + REPEAT_NGRAM])
                    for i in range(len(token_ids) - REPEAT_NGRAM + 1))
    if grams and (top := grams.most_common(1)[0][1]) >= REPEAT_LIMIT:
        problems.append(f"the same {REPEAT_NGRAM} tokens repeat {top} times")
    if check.expect and check.expect.lower() not in text.lower():
        problems.append(f"the answer does not mention {check.expect!r}")
    return problems


async def run_self_check(engine: Generates, check: SelfCheck) -> str:
    """Ask the warm-up prompt; return a one-line verdict, or raise `StartupCheckFailed`."""
    request = GenerationRequest(
        prompt=check.prompt, chat=True, logprobs=True, request_id="startup-self-check",
        sampling=Sampling(temperature=0.0, max_tokens=check.max_tokens))
    parts: list[str] = []
    token_ids: list[int] = []
    finish: str | None = None
    async for delta in engine.generate(request):
        parts.append(delta.text)
        token_ids.extend(delta.token_ids)
        finish = delta.finish_reason or finish
    text = "".join(parts)
    shown = text if len(text) <= 160 else text[:157] + "..."
    if not check.judge:
        return f"off (warm-up only): {check.prompt!r} -> {shown!r}"
    if problems := degeneracy(text, token_ids, finish, check):
        raise StartupCheckFailed(
            f"start-up self-check failed, refusing to serve: {'; '.join(problems)}. "
            f"Asked {check.prompt!r}, got {shown!r}. A wrong dtype is the usual cause "
            "(see the backend's dtype reason); CMESH_BACKEND_SELF_CHECK=false turns the "
            "check off for models it does not fit")
    return f"passed: {check.prompt!r} -> {shown!r}"
