"""Errors the project's own code raises, each with the kind of failure it is.

The kind names a gRPC status code (the names are the same), but nothing here
imports grpc: `services.common.errors` turns a kind into a status code, and a
NATS adapter (the broker) can read the same kind to decide between retry and
give-up. An exception that is not a `DomainError` counts as INTERNAL, so no
failure of this project's code reaches a client as UNKNOWN.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorKind(enum.Enum):
    """What went wrong, in the words of gRPC's status codes."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (overload, a peer down)."""
        return self in (ErrorKind.RESOURCE_EXHAUSTED, ErrorKind.UNAVAILABLE)


class DomainError(Exception):
    """Base of every error this project raises on purpose; subclasses set `kind`."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL


class FieldError(DomainError, ValueError):
    """Bad input in one named request field (INVALID_ARGUMENT)."""

    kind = ErrorKind.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Unauthenticated(DomainError, PermissionError):
    """No credentials, or credentials that name no caller (UNAUTHENTICATED)."""

    kind = ErrorKind.UNAUTHENTICATED


class FailedPrecondition(DomainError):
    """The request is well formed but the system is not in a state to do it."""

    kind = ErrorKind.FAILED_PRECONDITION


class NotFound(DomainError, LookupError):
    """The named thing does not exist (NOT_FOUND)."""

    kind = ErrorKind.NOT_FOUND


class Overloaded(DomainError, RuntimeError):
    """No capacity right now; the caller may retry later (RESOURCE_EXHAUSTED).

    `retry_after_s`, when known, is carried as data so each door can say it its own
    way (gRPC trailer `retry-after-ms`, HTTP `Retry-After`) without parsing the text.
    """

    kind = ErrorKind.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError, RuntimeError):
    """A component this call needs is down, e.g. a dead engine (UNAVAILABLE)."""

    kind = ErrorKind.UNAVAILABLE


class NotReady(Unavailable):
    """The component is still warming up or draining (UNAVAILABLE)."""


class StartupCheckFailed(Unavailable):
    """A service's start-up check found it unfit to serve; it exits instead of SERVING."""


class DeadlineExceeded(DomainError, TimeoutError):
    """The work could not finish within the time it was given (DEADLINE_EXCEEDED)."""

    kind = ErrorKind.DEADLINE_EXCEEDED


def kind_of(exc: BaseException) -> ErrorKind:
    """The kind of any exception: a domain error's own, a timeout's, else INTERNAL."""
    if isinstance(exc, DomainError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return ErrorKind.DEADLINE_EXCEEDED
    return ErrorKind.INTERNAL
