"""The one error table: every kind has one spelling per wire, and a peer's status comes
back as the same kind with its data (field, retry-after) from trailers, not from text."""

from __future__ import annotations

import grpc
import pytest

from core.errors import (
    DeadlineExceeded,
    ErrorKind,
    FieldError,
    NotFound,
    Overloaded,
    Unauthenticated,
    Unavailable,
    kind_of,
)
from services.common.errors import (
    TABLE,
    error_from,
    error_from_rpc,
    kind_for_status,
    status_code,
    trailers_for,
)


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str,
                 trailers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details)


def test_every_kind_has_one_row_and_statuses_are_distinct() -> None:
    assert set(TABLE) == set(ErrorKind)
    assert len({row.grpc for row in TABLE.values()}) == len(ErrorKind)
    assert len({row.http for row in TABLE.values()}) == len(ErrorKind)
    for kind, row in TABLE.items():
        assert kind_for_status(status_code(kind)) is kind
        assert row.error_type.kind is kind or kind is ErrorKind.INTERNAL


@pytest.mark.parametrize(("kind", "http", "openai_type"), [
    (ErrorKind.INVALID_ARGUMENT, 400, "invalid_request_error"),
    (ErrorKind.UNAUTHENTICATED, 401, "authentication_error"),
    (ErrorKind.NOT_FOUND, 404, "not_found_error"),
    (ErrorKind.RESOURCE_EXHAUSTED, 429, "rate_limit_error"),
    (ErrorKind.UNAVAILABLE, 503, "service_unavailable_error"),
    (ErrorKind.DEADLINE_EXCEEDED, 504, "timeout_error"),
    (ErrorKind.INTERNAL, 500, "server_error"),
])
def test_http_status_and_openai_type(kind: ErrorKind, http: int, openai_type: str) -> None:
    assert (TABLE[kind].http, TABLE[kind].openai_type) == (http, openai_type)


def test_statuses_no_kind_owns_mean_the_peer_could_not_serve() -> None:
    for code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED):
        assert kind_for_status(code) is ErrorKind.UNAVAILABLE


def test_field_and_retry_after_travel_as_trailers_and_come_back_as_data() -> None:
    field = FieldError("sampling.stop", "more than 8 stop strings: a: b")
    err = error_from_rpc(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, str(field),
                                      trailers_for(field)))
    assert isinstance(err, FieldError)
    assert (err.field, err.problem) == ("sampling.stop", "more than 8 stop strings: a: b")
    busy = Overloaded("full", retry_after_s=0.25)
    err = error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full",
                                      trailers_for(busy)))
    assert isinstance(err, Overloaded) and err.retry_after_s == 0.25


def test_a_field_error_without_its_trailer_is_not_guessed_from_text() -> None:
    err = error_from_rpc(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "prompt: empty"))
    assert isinstance(err, FieldError) and err.field == "request"


@pytest.mark.parametrize(("kind", "cls"), [
    (ErrorKind.UNAUTHENTICATED, Unauthenticated), (ErrorKind.NOT_FOUND, NotFound),
    (ErrorKind.UNAVAILABLE, Unavailable), (ErrorKind.DEADLINE_EXCEEDED, DeadlineExceeded),
    (ErrorKind.INTERNAL, Unavailable),  # a peer's bug: this call could not be served
])
def test_error_from_makes_the_kinds_class(kind: ErrorKind, cls: type) -> None:
    err = error_from(kind, "why")
    assert isinstance(err, cls) and str(err) == "why"
    assert kind_of(err) is (ErrorKind.UNAVAILABLE if kind is ErrorKind.INTERNAL else kind)


def test_a_broker_job_error_keeps_its_field_and_wait_as_data() -> None:
    from services.broker.client import JobError
    from services.gateway.broker_tier import job_error

    err = job_error("small", JobError("INVALID_ARGUMENT", "must be <= 2",
                                      field="sampling.temperature"))
    assert isinstance(err, FieldError)
    assert (err.field, err.problem) == ("sampling.temperature", "must be <= 2")
    busy = job_error("small", JobError("RESOURCE_EXHAUSTED", "queue full", 750))
    assert isinstance(busy, Overloaded) and busy.retry_after_s == 0.75
    assert "'small'" in str(busy)
