"""Map the domain's exceptions to gRPC status codes, in one place."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cmesh.errors import FieldError, NotReady, Overloaded

T = TypeVar("T")

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (FieldError, grpc.StatusCode.INVALID_ARGUMENT),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def status_for(exc: BaseException) -> grpc.StatusCode | None:
    """The status code for a known domain error, None for anything else."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return None


async def _abort_if_known(exc: Exception, context: grpc.aio.ServicerContext) -> None:
    """Abort the call with the mapped status for a domain error; return for anything else."""
    code = status_for(exc)
    if code is not None:
        await context.abort(code, str(exc))


def grpc_errors(
    method: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Decorate a unary servicer method: domain errors become status codes."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _abort_if_known(exc, context)
            raise

    return wrapper


def grpc_stream_errors(
    method: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """Decorate a server-streaming servicer method: domain errors become status codes."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[T]:
        try:
            async for item in method(self, request, context):
                yield item
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _abort_if_known(exc, context)
            raise

    return wrapper
