"""The orchestrator's answers and errors in OpenAI's response shapes, for the HTTP door.

One renderer per route (chat completions, completions, responses), each able
to answer in one body or as server-sent events. The mesh's metadata goes,
whole, into the extension field `cascade` (`dataclasses.asdict`, so a field
added to `Metadata` appears without a change here) and, flattened, into
`x-cmesh-*` response headers; a stream sends its headers before the answer
exists, so there they carry the request id only and the metadata rides on the
last event.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

from core.errors import FieldError, kind_of
from services.common.errors import TABLE
from services.gateway.domain import Metadata, TierUnavailable
from services.gateway.frontends.openai_schema import Translated

SseEvent = tuple[str | None, dict[str, Any]]  # (event name, data)


def sse(event: SseEvent) -> str:
    """One server-sent event; `data:` holds JSON on a single line."""
    name, data = event
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def cascade_field(meta: Metadata) -> dict[str, Any]:
    """The metadata as the `cascade` extension object (every field of `Metadata`)."""
    return dataclasses.asdict(meta)


def meta_headers(meta: Metadata) -> dict[str, str]:
    """`x-cmesh-<field>` per metadata field (lists comma-joined, latencies one each)."""
    headers: dict[str, str] = {}
    for name, value in cascade_field(meta).items():
        key = "x-cmesh-" + name.replace("_", "-")
        if isinstance(value, dict):
            for sub, v in value.items():
                headers[f"x-cmesh-latency-{sub.replace('_', '-')}"] = f"{v:.3f}"
        elif isinstance(value, list):
            headers[key] = ",".join(map(str, value))
        elif isinstance(value, float):
            headers[key] = f"{value:.6g}"
        elif value is not None:
            headers[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return headers


def _finish(meta: Metadata) -> str:
    return "length" if meta.finish_reason == "length" else "stop"


def _usage(meta: Metadata) -> dict[str, int]:
    return {"prompt_tokens": meta.prompt_tokens, "completion_tokens": meta.completion_tokens,
            "total_tokens": meta.prompt_tokens + meta.completion_tokens}


def error_response(exc: BaseException, translated: Translated | None = None
                   ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, OpenAI error body, headers) of any exception, from the one table."""
    kind = kind_of(exc)
    row = TABLE[kind]
    message = str(exc) if kind.value != "INTERNAL" else f"internal error: {type(exc).__name__}"
    error: dict[str, Any] = {"message": message, "type": row.openai_type, "param": None,
                             "code": kind.value.lower()}
    headers: dict[str, str] = {}
    if isinstance(exc, FieldError):
        param = translated.param(exc.field) if translated else exc.field
        error.update(param=param, message=f"{param}: {exc.problem}")
    if kind.value == "NOT_FOUND" and "model" in message:
        error.update(param="model", code="model_not_found")
    if isinstance(exc, TierUnavailable):
        error["tier"] = exc.tier
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry)))
        headers["retry-after-ms"] = str(max(1, math.ceil(retry * 1000)))
    return row.http, {"error": error}, headers


class ChatRenderer:
    """chat.completion / chat.completion.chunk."""

    done_marker = True

    def __init__(self, t: Translated, request_id: str) -> None:
        self.t = t
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.t.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def unary(self, text: str, meta: Metadata) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.t.model,
                "choices": [{"index": 0, "finish_reason": _finish(meta), "logprobs": None,
                             "message": {"role": "assistant", "content": text,
                                         "refusal": None}}],
                "usage": _usage(meta), "cascade": cascade_field(meta)}

    def start(self) -> list[SseEvent]:
        return [(None, self._chunk({"role": "assistant", "content": ""}, None))]

    def delta(self, text: str) -> SseEvent:
        return None, self._chunk({"content": text}, None)

    def end(self, meta: Metadata) -> list[SseEvent]:
        last = {**self._chunk({}, _finish(meta)), "cascade": cascade_field(meta)}
        events: list[SseEvent] = [(None, last)]
        if self.t.include_usage:
            events.append((None, {**self._chunk({}, None), "choices": [],
                                  "usage": _usage(meta)}))
        return events

    def error(self, body: dict[str, Any]) -> SseEvent:
        return None, body


class CompletionRenderer(ChatRenderer):
    """text_completion, streamed as chunks of the same object."""

    def __init__(self, t: Translated, request_id: str) -> None:
        super().__init__(t, request_id)
        self.id = f"cmpl-{request_id}"

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.t.model,
                "choices": [{"index": 0, "text": delta.get("content", ""), "logprobs": None,
                             "finish_reason": finish}]}

    def unary(self, text: str, meta: Metadata) -> dict[str, Any]:
        body = self._chunk({"content": text}, _finish(meta))
        return {**body, "usage": _usage(meta), "cascade": cascade_field(meta)}

    def start(self) -> list[SseEvent]:
        return []


class ResponsesRenderer:
    """A `response` object, streamed as the Responses API's typed events."""

    done_marker = False

    def __init__(self, t: Translated, request_id: str) -> None:
        self.t = t
        self.id = f"resp_{request_id}"
        self.item_id = f"msg_{request_id}"
        self.created = int(time.time())
        self.seq = 0
        self.text: list[str] = []

    def _response(self, status: str, text: str | None = None,
                  meta: Metadata | None = None) -> dict[str, Any]:
        q = self.t.question
        body: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created,
            "status": status, "model": self.t.model, "error": None,
            "incomplete_details": None, "instructions": q.conversation.system_prompt or None,
            "metadata": {}, "parallel_tool_calls": False, "tool_choice": "none",
            "tools": [], "temperature": q.sampling.temperature, "top_p": q.sampling.top_p,
            "max_output_tokens": q.sampling.max_tokens, "text": {"format": {"type": "text"}},
            "output": [] if text is None else [self._item(text, "completed")]}
        if meta is not None:
            if meta.finish_reason == "length":
                body.update(status="incomplete",
                            incomplete_details={"reason": "max_output_tokens"})
            body["usage"] = {"input_tokens": meta.prompt_tokens,
                             "output_tokens": meta.completion_tokens,
                             "total_tokens": meta.prompt_tokens + meta.completion_tokens,
                             "input_tokens_details": {"cached_tokens": 0},
                             "output_tokens_details": {"reasoning_tokens": 0}}
            body["cascade"] = cascade_field(meta)
        return body

    def _item(self, text: str, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}] if text or \
            status == "completed" else []
        return {"type": "message", "id": self.item_id, "status": status, "role": "assistant",
                "content": content}

    def _event(self, kind: str, **data: Any) -> SseEvent:
        self.seq += 1
        return kind, {"type": kind, "sequence_number": self.seq, **data}

    def unary(self, text: str, meta: Metadata) -> dict[str, Any]:
        return self._response("completed", text, meta)

    def start(self) -> list[SseEvent]:
        part = {"type": "output_text", "text": "", "annotations": []}
        return [
            self._event("response.created", response=self._response("in_progress")),
            self._event("response.in_progress", response=self._response("in_progress")),
            self._event("response.output_item.added", output_index=0,
                        item=self._item("", "in_progress")),
            self._event("response.content_part.added", item_id=self.item_id,
                        output_index=0, content_index=0, part=part)]

    def delta(self, text: str) -> SseEvent:
        self.text.append(text)
        return self._event("response.output_text.delta", item_id=self.item_id,
                           output_index=0, content_index=0, delta=text, logprobs=[])

    def end(self, meta: Metadata) -> list[SseEvent]:
        text = "".join(self.text)
        part = {"type": "output_text", "text": text, "annotations": []}
        return [
            self._event("response.output_text.done", item_id=self.item_id, output_index=0,
                        content_index=0, text=text, logprobs=[]),
            self._event("response.content_part.done", item_id=self.item_id,
                        output_index=0, content_index=0, part=part),
            self._event("response.output_item.done", output_index=0,
                        item=self._item(text, "completed")),
            self._event("response.completed", response=self._response("completed", text, meta))]

    def error(self, body: dict[str, Any]) -> SseEvent:
        err = body["error"]
        return self._event("error", code=err["code"], message=err["message"],
                           param=err["param"])


Renderer = ChatRenderer | ResponsesRenderer
