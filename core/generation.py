"""The generation vocabulary every layer shares, free of any transport type.

A conversation, sampling parameters, a generation request and the deltas a
generation streams back. The backend's engine, the cache's namespaces, the
cascade policies, the broker and the gateway all speak these;
`services.common.convert` is the one place they meet protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Role = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("user", "assistant")

FinishReason = Literal["stop", "length", "abort", "error"]
FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "abort", "error")

MAX_TEMPERATURE = 2.0
"""vLLM refuses a temperature above 2 (as OpenAI's API does), so every door checks it."""


@dataclass(frozen=True)
class Turn:
    """One earlier turn of a conversation."""

    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    """Everything before the current prompt that changes what the right answer is."""

    system_prompt: str = ""
    turns: tuple[Turn, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.system_prompt or self.turns)


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters; None means the serving side's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Usage:
    """Tokens a generation read and wrote."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class TokenLogprob(NamedTuple):
    """One generated token and its log-probability (a tuple, so it unpacks)."""

    token_id: int
    token: str
    logprob: float


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: the prompt, its context, how to sample, what to return."""

    prompt: str
    conversation: Conversation = field(default_factory=Conversation)
    sampling: Sampling = field(default_factory=Sampling)
    chat: bool = False
    logprobs: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""
    # Tokens an earlier attempt already generated: generation continues after them.
    continue_token_ids: tuple[int, ...] = ()
    continue_text: str = ""  # their text (a broker job's stream offsets count from it)

    @property
    def uses_chat_template(self) -> bool:
        """A conversation (or an explicit `chat`) needs the model's chat template."""
        return self.chat or bool(self.conversation)


@dataclass
class Delta:
    """New output since the previous delta; the last one has `finish_reason` and usage."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Set by a tier served across regions, on the first delta from each region it ran
    # in: that region, and why it was not the caller's own ("" when it was).
    region: str = ""
    failover: str = ""

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)
