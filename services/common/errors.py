"""The one table between the domain's error kinds and every wire: gRPC status codes,
HTTP statuses and OpenAI error types, in both directions.

Every exception gets a status: a `DomainError` its kind's code, a timeout
DEADLINE_EXCEEDED, anything else INTERNAL (logged with its traceback, since it
is a bug). None reaches a client as UNKNOWN.

What a caller needs beyond the code travels as data, not inside the message:
a `FieldError`'s field in the trailer `cmesh-field`, an overload's wait in
`retry-after-ms`. `error_from_rpc` reads both back on the calling side, so no
client re-parses "field: problem" text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from core.errors import (
    DeadlineExceeded,
    DomainError,
    ErrorKind,
    FailedPrecondition,
    FieldError,
    NotFound,
    Overloaded,
    Unauthenticated,
    Unavailable,
    kind_of,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


FIELD_TRAILER = "cmesh-field"
RETRY_TRAILER = "retry-after-ms"


@dataclass(frozen=True)
class WireError:
    """How one error kind is spelled on each wire."""

    kind: ErrorKind
    grpc: grpc.StatusCode
    http: int
    openai_type: str
    error_type: type[DomainError]


TABLE: dict[ErrorKind, WireError] = {row.kind: row for row in (
    WireError(ErrorKind.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT, 400,
              "invalid_request_error", FieldError),
    WireError(ErrorKind.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED, 401,
              "authentication_error", Unauthenticated),
    WireError(ErrorKind.NOT_FOUND, grpc.StatusCode.NOT_FOUND, 404,
              "not_found_error", NotFound),
    WireError(ErrorKind.FAILED_PRECONDITION, grpc.StatusCode.FAILED_PRECONDITION, 409,
              "conflict_error", FailedPrecondition),
    WireError(ErrorKind.RESOURCE_EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED, 429,
              "rate_limit_error", Overloaded),
    WireError(ErrorKind.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, 503,
              "service_unavailable_error", Unavailable),
    WireError(ErrorKind.DEADLINE_EXCEEDED, grpc.StatusCode.DEADLINE_EXCEEDED, 504,
              "timeout_error", DeadlineExceeded),
    WireError(ErrorKind.INTERNAL, grpc.StatusCode.INTERNAL, 500, "server_error", DomainError),
)}
_BY_STATUS = {row.grpc: row.kind for row in TABLE.values()}
_BY_NUMBER = {int(code.value[0]): code for code in grpc.StatusCode}


def status_code(kind: ErrorKind) -> grpc.StatusCode:
    """The gRPC status code of an error kind."""
    return TABLE[kind].grpc


def wire_code(kind: ErrorKind) -> int:
    """The numeric gRPC status of a kind (what broker.proto's JobError.code holds)."""
    return int(TABLE[kind].grpc.value[0])


def status_of_code(code: int) -> grpc.StatusCode:
    """The gRPC status of a numeric code; an unknown number is UNKNOWN."""
    return _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)


def kind_for_status(code: grpc.StatusCode) -> ErrorKind:
    """The kind of a status a peer answered; codes no kind owns (CANCELLED, UNKNOWN,
    ABORTED, ...) mean the peer could not do it: UNAVAILABLE."""
    return _BY_STATUS.get(code, ErrorKind.UNAVAILABLE)


def error_from(kind: ErrorKind, message: str, *, field: str | None = None,
               retry_after_s: float | None = None) -> DomainError:
    """The domain error of a kind a peer reported, with its data where it came with it."""
    if kind is ErrorKind.INVALID_ARGUMENT:
        return FieldError(field or "request", message)
    if kind is ErrorKind.RESOURCE_EXHAUSTED:
        return Overloaded(message, retry_after_s)
    if kind is ErrorKind.INTERNAL:
        return Unavailable(message)  # a peer's bug: this call could not be served
    return TABLE[kind].error_type(message)


def error_from_rpc(err: grpc.aio.AioRpcError) -> DomainError:
    """The domain error of a failed call to one of the mesh's own services."""
    trailers = dict(err.trailing_metadata() or ())
    retry_ms = trailers.get(RETRY_TRAILER)
    field = trailers.get(FIELD_TRAILER)
    kind = kind_for_status(err.code())
    message = err.details() or err.code().name
    if kind is ErrorKind.INVALID_ARGUMENT and isinstance(field, str):
        message = message.removeprefix(f"{field}: ")
    return error_from(kind, message, field=field if isinstance(field, str) else None,
                      retry_after_s=int(retry_ms) / 1000 if isinstance(retry_ms, str)
                      and retry_ms.isdigit() else None)


def trailers_for(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """The data of `exc` a gRPC caller gets in trailing metadata."""
    if isinstance(exc, FieldError):
        return ((FIELD_TRAILER, exc.field),)
    retry = getattr(exc, "retry_after_s", None)
    if isinstance(exc, Overloaded) and retry is not None:
        return ((RETRY_TRAILER, str(max(1, math.ceil(retry * 1000)))),)
    return ()


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code a client sees for `exc`."""
    return status_code(kind_of(exc))


async def abort_with(exc: Exception, context: grpc.aio.ServicerContext) -> None:
    """Abort the call with `exc`'s status (raises grpc's AbortError, as `abort` does)."""
    kind = kind_of(exc)
    if kind is ErrorKind.INTERNAL:
        log.error("internal error in %s", type(exc).__name__, exc_info=exc)
        message = f"internal error: {type(exc).__name__}: {exc}"
    else:
        message = str(exc)
    if trailers := trailers_for(exc):
        context.set_trailing_metadata(trailers)
    await context.abort(status_code(kind), message)


@contextlib.asynccontextmanager
async def statuses(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Inside this block every exception aborts the call with its status (for code that
    cannot use the decorators, e.g. an interceptor)."""
    try:
        yield
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception as exc:
        await abort_with(exc, context)
        raise


def grpc_errors(
    method: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Decorate a unary servicer method: every exception becomes a status code."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        async with statuses(context):
            return await method(self, request, context)
        raise AssertionError("unreachable")  # statuses() re-raises

    return wrapper


def grpc_stream_errors(
    method: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """Decorate a server-streaming servicer method: every exception becomes a status code."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[T]:
        async with statuses(context):
            async for item in method(self, request, context):
                yield item

    return wrapper
