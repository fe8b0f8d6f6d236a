"""The OpenAI-compatible HTTP door: routes that translate, nothing more.

    POST /v1/chat/completions   POST /v1/completions   POST /v1/responses
    GET  /v1/models             GET  /v1/models/{id}   GET  /health

Each generation route: admission (the `Authorization: Bearer` key -> caller,
rate limit) -> parse and translate the body (`openai_schema`) -> the
orchestrator -> one JSON body, or server-sent events (`openai_render`). Any
failure becomes OpenAI's error object with the status of the one error table
(`services.common.errors.TABLE`). A stream's first event is awaited before
the 200 goes out, so a request refused by the orchestrator (a bad field, a
dead tier) still gets its proper status, not an error inside a 200 stream.

Per request: `x-cmesh-timeout-s` sets the deadline (else the gateway's
`default_timeout_s`); `x-cmesh-skip-cache: 1` skips the cache lookup (the
body's `cascade.skip_cache` does the same).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from core.errors import FieldError, NotFound, NotReady, kind_of
from services.gateway.admission import Admission, Caller
from services.gateway.collect import collect
from services.gateway.domain import Event, TextDelta
from services.gateway.frontends.openai_render import (
    ChatRenderer,
    CompletionRenderer,
    Renderer,
    ResponsesRenderer,
    error_response,
    meta_headers,
    sse,
)
from services.gateway.frontends.openai_schema import (
    VIRTUAL_MODEL,
    ChatRequest,
    CompletionRequest,
    ResponsesRequest,
    Translated,
    chat_question,
    completion_question,
    parse,
    responses_question,
)
from services.gateway.metrics import GatewayMetrics
from services.gateway.orchestrator import Orchestrator

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "x-cmesh-timeout-s"
SKIP_CACHE_HEADER = "x-cmesh-skip-cache"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

Translate = Callable[[Any, Sequence[str], str, str], Translated]


def deadline_of(headers: Any) -> float | None:
    """Seconds from the `x-cmesh-timeout-s` header, None when absent."""
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise FieldError(TIMEOUT_HEADER, f"must be a positive number of seconds, got {raw!r}")
    return value


def skip_cache_of(headers: Any) -> bool:
    return str(headers.get(SKIP_CACHE_HEADER, "")).lower() in ("1", "true", "yes")


class OpenAIDoor:
    """The routes over one orchestrator and admission; `ready` is False while draining."""

    def __init__(self, orchestrator: Orchestrator, admission: Admission,
                 metrics: GatewayMetrics | None = None,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.orchestrator = orchestrator
        self.admission = admission
        self.metrics = metrics
        self.ready = ready
        self.created = int(time.time())

    @property
    def models(self) -> list[str]:
        return [VIRTUAL_MODEL, *self.orchestrator.policy.tiers]

    def app(self) -> FastAPI:
        app = FastAPI(title="cascade-mesh", docs_url=None, redoc_url=None, openapi_url=None)
        app.add_exception_handler(HTTPException, self._http_error)  # type: ignore[arg-type]

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            return await self.generate(request, ChatRequest, chat_question, ChatRenderer)

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            return await self.generate(request, CompletionRequest, completion_question,
                                       CompletionRenderer)

        @app.post("/v1/responses")
        async def responses(request: Request) -> Response:
            return await self.generate(request, ResponsesRequest, responses_question,
                                       ResponsesRenderer)

        @app.get("/v1/models")
        async def list_models(request: Request) -> Response:
            try:
                await self.admit(request)
            except Exception as exc:
                return self.error(exc)
            return JSONResponse({"object": "list",
                                 "data": [self._model(m) for m in self.models]})

        @app.get("/v1/models/{model}")
        async def get_model(model: str, request: Request) -> Response:
            try:
                await self.admit(request)
                if model not in self.models:
                    raise NotFound(f"model {model!r} does not exist")
            except Exception as exc:
                return self.error(exc)
            return JSONResponse(self._model(model))

        @app.get("/health")
        async def health() -> Response:
            serving = self.ready()
            return JSONResponse({"status": "SERVING" if serving else "NOT_SERVING"},
                                status_code=200 if serving else 503)

        return app

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created,
                "owned_by": "cascade-mesh"}

    async def admit(self, request: Request) -> Caller:
        if not self.ready():
            raise NotReady("the gateway is draining; retry on another replica")
        return await self.admission.admit(request.headers.get("authorization"))

    def error(self, exc: BaseException, translated: Translated | None = None) -> JSONResponse:
        status, body, headers = error_response(exc, translated)
        if self.metrics is not None:
            self.metrics.errors.labels(kind_of(exc).value).inc()
        if status == 500:
            log.error("internal error in the HTTP door", exc_info=exc)
        return JSONResponse(body, status_code=status, headers=headers)

    async def _http_error(self, request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse({"error": {"message": f"{request.url.path}: {exc.detail}",
                                       "type": kind, "param": None, "code": None}},
                            status_code=exc.status_code)

    async def generate(self, request: Request, model: type, translate: Translate,
                       renderer_type: Callable[[Translated, str], Renderer]) -> Response:
        translated: Translated | None = None
        try:
            caller = await self.admit(request)
            try:
                body = await request.json()
            except ValueError as exc:
                raise FieldError("body", "is not valid JSON") from exc
            self._count_messages(body)
            req = parse(model, body)
            translated = translate(req, self.orchestrator.policy.tiers, caller.tenant,
                                   caller.request_id)
            if skip_cache_of(request.headers):
                translated = replace(translated, question=replace(translated.question,
                                                                  skip_cache=True))
            if req.user:
                log.info("request %s: user %r (tenant %s)", caller.request_id, req.user,
                         caller.tenant)
            timeout = deadline_of(request.headers)
            renderer = renderer_type(translated, caller.request_id)
            events = self.orchestrator.ask(translated.question, timeout)
            if translated.stream:
                return await self._stream(events, renderer, translated, caller)
            answer = await collect(events)
        except Exception as exc:
            return self.error(exc, translated)
        return JSONResponse(renderer.unary(answer.text, answer.metadata),
                            headers=meta_headers(answer.metadata))

    def _count_messages(self, body: Any) -> None:
        """Refuse a conversation of too many messages before parsing it (200,000 empty
        messages took 0.9 s to parse and translate, only to be refused after)."""
        limit = self.orchestrator.config.limits.max_turns + 2  # a system prompt, the prompt
        for name in ("messages", "input"):
            items = body.get(name) if isinstance(body, dict) else None
            if isinstance(items, list) and len(items) > limit:
                raise FieldError(name, f"more than {limit} messages")

    async def _stream(self, events: AsyncIterator[Event], renderer: Renderer,
                      translated: Translated, caller: Caller) -> Response:
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise

        async def body() -> AsyncIterator[str]:
            try:
                for event in renderer.start():
                    yield sse(event)
                item: Event | None = first
                while item is not None:
                    if isinstance(item, TextDelta):
                        yield sse(renderer.delta(item.text))
                    else:
                        for event in renderer.end(item):
                            yield sse(event)
                    item = await anext(events, None)
            except Exception as exc:  # the 200 is out: the error is the stream's last event
                _, error, _ = error_response(exc, translated)
                if self.metrics is not None:
                    self.metrics.errors.labels(kind_of(exc).value).inc()
                yield sse(renderer.error(error))
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            if renderer.done_marker:
                yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={**_SSE_HEADERS, "x-cmesh-request-id": caller.request_id})

