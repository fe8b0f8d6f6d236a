"""Admission, the one step every door runs before the orchestrator: API key -> caller,
then the caller's tenant against its rate limit.

    caller = await admission.admit(authorization_header)   # raises, or a Caller
    question = Question(tenant=caller.tenant, request_id=caller.request_id, ...)

The door passes the returned `Caller` on by hand (the gRPC servicer and the
HTTP routes both), so nothing reads the tenant back from ambient state. The
tenant is taken from the key only; nothing in a request body can choose it.

The limiter is aiolimiter's leaky bucket per tenant: `burst` requests at once,
refilled at `rate_per_s`. A request beyond it is refused at once (never
queued) with `RateLimited`, whose `retry_after_s` is the time until the bucket
has room for one more; each door spells it its own way (gRPC trailer
`retry-after-ms`, HTTP `Retry-After`).
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from core.errors import Overloaded, Unauthenticated
from services.gateway.auth import hash_key

# Only for log lines (RequestIdFilter); no decision reads it.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

MISSING_KEY = ("authorization: missing or unknown API key "
               "(send 'authorization: Bearer <key>')")


@dataclass(frozen=True)
class Caller:
    """Who is asking: the tenant its key names, and this request's id."""

    tenant: str
    request_id: str


class RateLimited(Overloaded):
    """A tenant over its rate (RESOURCE_EXHAUSTED, with how long to wait)."""

    def __init__(self, tenant: str, rate_per_s: float, retry_after_s: float) -> None:
        super().__init__(f"tenant {tenant!r} is over its rate limit of {rate_per_s:g}/s; "
                         f"retry after {round(retry_after_s * 1000)} ms", retry_after_s)
        self.tenant = tenant


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `authorization: Bearer <key>` value, None for anything else."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


class Admission:
    """Key hash -> tenant, and one leaky bucket per tenant; shared by every door."""

    def __init__(self, keys: Mapping[str, str], rate_per_s: float, burst: int) -> None:
        self.keys = dict(keys)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._limiters: dict[str, AsyncLimiter] = {}

    def tenant_of(self, authorization: str | None) -> str | None:
        """The tenant an authorization value names, None if missing or unknown."""
        key = bearer_key(authorization)
        return None if key is None else self.keys.get(hash_key(key))

    def _limiter(self, tenant: str) -> AsyncLimiter:
        limiter = self._limiters.get(tenant)
        if limiter is None:
            limiter = AsyncLimiter(self.burst, self.burst / self.rate_per_s)
            self._limiters[tenant] = limiter
        return limiter

    async def admit(self, authorization: str | None) -> Caller:
        """The caller of a request, or `Unauthenticated` / `RateLimited`."""
        tenant = self.tenant_of(authorization)
        if tenant is None:
            raise Unauthenticated(MISSING_KEY)
        limiter = self._limiter(tenant)
        if not limiter.has_capacity():
            raise RateLimited(tenant, self.rate_per_s, 1 / self.rate_per_s)
        await limiter.acquire()  # has capacity: returns at once
        caller = Caller(tenant=tenant, request_id=uuid.uuid4().hex)
        REQUEST_ID.set(caller.request_id)
        return caller


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record (from the request being served, else "-")."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
