"""API keys -> tenant, per-tenant rate limit and request ids, as one server interceptor.

The keys file holds `<sha256 hex of key> <tenant>` lines (`#` comments), so a
leaked file reveals no key. The tenant is taken from the key only; nothing in
a request body can choose it. Health and reflection stay open, so probes and
`grpcurl list` work without a key.

The limiter is aiolimiter's leaky bucket per tenant: `rate_limit_burst`
requests at once, refilled at `rate_limit_per_s`. A request beyond it is
refused at once (never queued) with RESOURCE_EXHAUSTED and trailing metadata
`retry-after-ms`: the time until the bucket has room for one more.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from aiolimiter import AsyncLimiter

TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_OPEN = ("/grpc.health.v1.", "/grpc.reflection.")


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as stored in the keys file."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "cm_" + secrets.token_urlsafe(24)


def add_key(path: Path, tenant: str, key: str | None = None) -> str:
    """Append a key for `tenant` to the keys file (made if missing); return the key."""
    if not tenant or any(c.isspace() for c in tenant):
        raise ValueError("tenant: must be a non-empty name without spaces")
    key = key or new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{hash_key(key)} {tenant}\n")
    return key


def load_keys(path: Path) -> dict[str, str]:
    """Key hash -> tenant from a keys file; a malformed line stops start-up."""
    keys: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{path}:{number}: expected '<sha256 hex> <tenant>'")
        keys[parts[0].lower()] = parts[1]
    return keys


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record (from the call being served, else "-")."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, rate-limits and tags each call with its tenant and request id."""

    def __init__(self, keys: dict[str, str], rate_per_s: float, burst: int,
                 on_reject: Callable[[str], None] | None = None) -> None:
        self.keys = keys
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._limiters: dict[str, AsyncLimiter] = {}
        self._on_reject = on_reject or (lambda code: None)

    def _limiter(self, tenant: str) -> AsyncLimiter:
        limiter = self._limiters.get(tenant)
        if limiter is None:
            limiter = AsyncLimiter(self.burst, self.burst / self.rate_per_s)
            self._limiters[tenant] = limiter
        return limiter

    def tenant_of(self, metadata: Any) -> str | None:
        """The tenant of a call's `authorization: Bearer <key>`, None if missing or unknown."""
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            return None
        scheme, _, key = values[0].partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        return self.keys.get(hash_key(key.strip()))

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN):
            return handler
        tenant = self.tenant_of(details.invocation_metadata)
        if tenant is None:
            self._on_reject("UNAUTHENTICATED")
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                            "authorization: missing or unknown API key "
                            "(send 'authorization: Bearer <key>')")
        limiter = self._limiter(tenant)
        if not limiter.has_capacity():
            retry_ms = max(1, round(1000 / self.rate_per_s))
            self._on_reject("RESOURCE_EXHAUSTED")
            return _refusal(handler, grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"tenant {tenant!r} is over its rate limit of "
                            f"{self.rate_per_s:g}/s; retry after {retry_ms} ms",
                            (("retry-after-ms", str(retry_ms)),))
        await limiter.acquire()
        return _tagged(handler, tenant)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str,
             trailers: tuple[tuple[str, str], ...] = ()) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only refuses the call."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if trailers:
            context.set_trailing_metadata(trailers)
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse(request, context)
        yield  # pragma: no cover (abort raises)

    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kw)
    return grpc.unary_unary_rpc_method_handler(refuse, **kw)


def _tagged(handler: grpc.RpcMethodHandler, tenant: str) -> grpc.RpcMethodHandler:
    """`handler` run with TENANT and a fresh REQUEST_ID set for its whole call."""
    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.unary_stream:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            TENANT.set(tenant)
            REQUEST_ID.set(uuid.uuid4().hex)
            async for item in inner_stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(stream, **kw)
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            TENANT.set(tenant)
            REQUEST_ID.set(uuid.uuid4().hex)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, **kw)
    return handler
