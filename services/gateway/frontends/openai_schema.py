"""OpenAI request bodies -> the orchestrator's `Question`, for the HTTP door.

Each route's body is a pydantic model that forbids unknown fields, so a typo or
a parameter the mesh does not know is a 400 naming it, not silently ignored.
Parameters OpenAI defines but the mesh cannot honour (`n` > 1, tools, a JSON
response format, images, logprobs, penalties) are refused the same way:
never a silently different answer.

The mesh's own options ride in the documented extension object `cascade`
(`extra_body={"cascade": {...}}` in the SDK), mirroring gRPC's
`PolicyOverrides`. The `model` names a tier to force it, or the virtual
`cascade-mesh` to let the policy choose.

`Translated.params` maps the orchestrator's field names (`sampling.top_p`,
`prompt`, `policy.force_tier`) back to this wire's (`top_p`, `messages`,
`cascade.force_tier`), so a bad value found by the orchestrator's one check is
reported under the name the caller sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import FieldError, NotFound
from core.generation import Conversation, Sampling, Turn
from services.gateway.domain import Question

VIRTUAL_MODEL = "cascade-mesh"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CascadeOptions(_Strict):
    """The mesh's extension object: policy overrides and cache switches."""

    policy: str = ""
    force_tier: str = ""
    thresholds: dict[str, float] = {}
    skip_cache: bool = False
    no_store: bool = False


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class _Common(_Strict):
    """What every generation route takes."""

    model: str
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    user: str | None = None
    stream: bool = False
    metadata: dict[str, str] | None = None
    cascade: CascadeOptions | None = None
    # Defined by OpenAI, refused unless neutral (see REFUSED).
    n: int | None = None
    logprobs: Any = None
    top_logprobs: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    service_tier: str | None = None
    ignore_eos: bool | None = None  # vLLM's extension, which load tools send


class ChatRequest(_Common):
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    stream_options: StreamOptions | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    store: bool | None = None
    reasoning_effort: str | None = None


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    stream_options: StreamOptions | None = None
    best_of: int | None = None
    echo: bool | None = None
    suffix: str | None = None


class ResponsesRequest(_Common):
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: str | None = None


def _neutral(name: str, value: Any) -> bool:
    """True when a refused-in-general parameter has a value that changes nothing."""
    if value is None:
        return True
    if name in ("n", "best_of"):
        return bool(value == 1)
    if name in ("frequency_penalty", "presence_penalty", "top_logprobs"):
        return bool(value == 0)
    if name in ("logprobs", "echo", "store", "background", "ignore_eos"):
        return value is False or value == 0
    if name == "tool_choice":
        return bool(value == "none")
    if name == "response_format":
        return bool(value.get("type") == "text")
    if name == "text":
        return bool(value.get("format", {"type": "text"}).get("type") == "text")
    if name == "modalities":
        return bool(value == ["text"])
    if name in ("tools", "functions", "logit_bias", "include"):
        return not value
    return False


REFUSED: dict[str, str] = {
    "n": "only n=1 is served",
    "best_of": "only best_of=1 is served",
    "logprobs": "log-probabilities are not returned by this server",
    "top_logprobs": "log-probabilities are not returned by this server",
    "frequency_penalty": "penalties are not supported",
    "presence_penalty": "penalties are not supported",
    "logit_bias": "logit_bias is not supported",
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "response_format": "only the text response format is supported",
    "text": "only the text format is supported",
    "modalities": "only text output is supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "echo": "echo is not supported",
    "suffix": "suffix (insertion) is not supported",
    "store": "responses are not stored; send store=false or leave it out",
    "background": "background responses are not supported",
    "previous_response_id": "responses are not stored, so none can be continued",
    "include": "no extra output can be included",
    "reasoning": "reasoning options are not supported",
    "ignore_eos": "answers end where the model ends them; vLLM's benchmark sets this for "
                  "its random dataset, so use a prompt file (--dataset-name custom)",
}


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate a JSON body; the first problem becomes a `FieldError` naming its param."""
    if not isinstance(body, dict):
        raise FieldError("body", "must be a JSON object")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = wire_param(first["loc"])
        problem = ("unrecognized request argument" if first["type"] == "extra_forbidden"
                   else first["msg"])
        raise FieldError(param or "body", problem) from exc
    for name, why in REFUSED.items():
        value = getattr(request, name, None)
        if not _neutral(name, value):
            raise FieldError(name, why)
    return request


def wire_param(loc: Sequence[Any]) -> str:
    """pydantic's location ("messages", 0, "content") as OpenAI writes it: messages[0].content.
    Union members' type names pydantic adds (`str`, `list[str]`) are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or part in ("str", "int", "float", "bool", "dict", "list"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class Translated:
    """A request as the orchestrator sees it, plus what the door needs to answer it."""

    question: Question
    model: str
    stream: bool = False
    include_usage: bool = False
    params: dict[str, str] = field(default_factory=dict)

    def param(self, core_field: str) -> str:
        """The wire name of an orchestrator field (exact, then by its first part)."""
        if core_field in self.params:
            return self.params[core_field]
        head, _, rest = core_field.partition(".")
        if head == "policy":
            return f"cascade.{rest}" if rest else "cascade"
        if head == "sampling" and rest:
            return rest
        return self.params.get(head, core_field)


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _base(req: _Common, tiers: Sequence[str], tenant: str, request_id: str, prompt: str,
          system: str, turns: tuple[Turn, ...], max_tokens: int | None,
          stop: tuple[str, ...]) -> Question:
    opts = req.cascade or CascadeOptions()
    force = opts.force_tier
    if req.model != VIRTUAL_MODEL:
        if req.model not in tiers:
            known = ", ".join([VIRTUAL_MODEL, *tiers])
            raise NotFound(f"model {req.model!r} does not exist; known: {known}")
        if force and force != req.model:
            raise FieldError("cascade.force_tier", f"conflicts with model {req.model!r}")
        force = req.model
    return Question(
        tenant=tenant, prompt=prompt, conversation=Conversation(system, turns),
        sampling=Sampling(temperature=req.temperature, top_p=req.top_p,
                          max_tokens=max_tokens, seed=req.seed, stop=stop),
        policy=opts.policy, thresholds=tuple(sorted(opts.thresholds.items())),
        force_tier=force, skip_cache=opts.skip_cache, no_store=opts.no_store,
        request_id=request_id)


def _text(content: str | list[dict[str, Any]] | None, param: str,
          text_types: tuple[str, ...] = ("text",)) -> str:
    """A message's text: a string, or a list of text parts (anything else is refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind not in text_types or not isinstance(part.get("text"), str):
            raise FieldError(f"{param}[{j}].type",
                             f"only text parts are supported, got {kind!r}")
        parts.append(part["text"])
    return "".join(parts)


def _conversation(messages: Sequence[tuple[str, str]], param: str
                  ) -> tuple[str, tuple[Turn, ...], str]:
    """(role, text) pairs -> system prompt, earlier turns, and the last user prompt."""
    if not messages:
        raise FieldError(param, "must hold at least one message")
    system: list[str] = []
    turns: list[Turn] = []
    for i, (role, text) in enumerate(messages):
        if role in ("system", "developer"):
            if turns:
                raise FieldError(f"{param}[{i}].role",
                                 "system messages must come before the conversation")
            system.append(text)
        elif role in ("user", "assistant"):
            turns.append(Turn(role, text))
        else:
            raise FieldError(f"{param}[{i}].role", f"role {role!r} is not supported")
    if not turns or turns[-1].role != "user":
        raise FieldError(f"{param}[{len(messages) - 1}].role",
                         "the last message must be from the user")
    return "\n\n".join(system), tuple(turns[:-1]), turns[-1].content


def chat_question(req: ChatRequest, tiers: Sequence[str], tenant: str,
                  request_id: str) -> Translated:
    pairs = []
    for i, m in enumerate(req.messages):
        if m.tool_calls:
            raise FieldError(f"messages[{i}].tool_calls", "tool calling is not supported")
        pairs.append((m.role, _text(m.content, f"messages[{i}].content")))
    system, turns, prompt = _conversation(pairs, "messages")
    max_param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    q = _base(req, tiers, tenant, request_id, prompt, system, turns,
              req.max_completion_tokens or req.max_tokens, _stops(req.stop))
    return Translated(q, req.model, req.stream,
                      bool(req.stream_options and req.stream_options.include_usage),
                      {"prompt": "messages", "conversation": "messages",
                       "sampling.max_tokens": max_param})


def completion_question(req: CompletionRequest, tiers: Sequence[str], tenant: str,
                        request_id: str) -> Translated:
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise FieldError("prompt", "must be one string (token ids and several prompts "
                                       "are not supported)")
        prompt = prompt[0]
    q = _base(req, tiers, tenant, request_id, prompt, "", (), req.max_tokens,
              _stops(req.stop))
    return Translated(q, req.model, req.stream,
                      bool(req.stream_options and req.stream_options.include_usage),
                      {"sampling.max_tokens": "max_tokens"})


def responses_question(req: ResponsesRequest, tiers: Sequence[str], tenant: str,
                       request_id: str) -> Translated:
    if isinstance(req.input, str):
        pairs = [("user", req.input)]
    else:
        pairs = []
        for i, item in enumerate(req.input):
            if item.get("type", "message") != "message" or "role" not in item:
                raise FieldError(f"input[{i}].type", "only message items are supported")
            pairs.append((str(item["role"]), _text(item.get("content"), f"input[{i}].content",
                                                    ("input_text", "output_text", "text"))))
    if req.instructions:
        pairs.insert(0, ("system", req.instructions))
    system, turns, prompt = _conversation(pairs, "input")
    q = _base(req, tiers, tenant, request_id, prompt, system, turns, req.max_output_tokens, ())
    return Translated(q, req.model, req.stream, False,
                      {"prompt": "input", "conversation": "input",
                       "sampling.max_tokens": "max_output_tokens"})
