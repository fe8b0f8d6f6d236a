"""Turn the domain's error kinds into gRPC status codes, in one place.

Every exception gets a status: a `DomainError` its kind's code, a timeout
DEADLINE_EXCEEDED, anything else INTERNAL (logged with its traceback, since it
is a bug). None reaches a client as UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from core.errors import ErrorKind, kind_of

T = TypeVar("T")
log = logging.getLogger(__name__)


def status_code(kind: ErrorKind) -> grpc.StatusCode:
    """The gRPC status code of an error kind (they share names)."""
    return grpc.StatusCode[kind.value]


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
