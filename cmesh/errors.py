"""Errors that domain code raises and service adapters map to gRPC status codes.

Kept free of any transport import so `cache/` and `cascade/` can raise them.
"""

from __future__ import annotations


class FieldError(ValueError):
    """Bad input in one named request field (mapped to INVALID_ARGUMENT)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Overloaded(RuntimeError):
    """No capacity right now; the caller may retry later (RESOURCE_EXHAUSTED)."""


class NotReady(RuntimeError):
    """The component is still warming up or draining (UNAVAILABLE)."""
