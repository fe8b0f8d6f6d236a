"""Requests that do not decode are INVALID_ARGUMENT naming the field, not UNKNOWN.

grpc decodes a request before any servicer runs, and a `DecodeError` there (a
string field that is not UTF-8, a Struct nested past protobuf's depth limit,
truncated bytes) reaches the caller as UNKNOWN with no word of which field.
`StrictDecoding` takes the decoding into the call: the handler receives the
raw bytes, decodes them itself and, when that fails, walks the wire format
against the message's descriptor to name the first field at fault
(`conversation.turns[2].content: is not valid UTF-8`). The walk runs only for
a request that already failed, so a good one costs nothing more.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from core.errors import FieldError
from services.common.errors import statuses

MAX_DEPTH = 100
"""protobuf's (upb's) limit on nested messages: deeper is a DecodeError."""
_STRUCT_TYPES = ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue")


def decode(message_type: type[Message], data: bytes) -> Message:
    """`message_type` from `data`; undecodable bytes are a FieldError naming the field."""
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        field, problem = undecodable_field(message_type.DESCRIPTOR, data) or (
            "request", f"is not a valid {message_type.DESCRIPTOR.name}: {exc}")
        raise FieldError(field, problem) from exc


def undecodable_field(descriptor: Descriptor, data: bytes) -> tuple[str, str] | None:
    """(field path, problem) of the first thing in `data` protobuf cannot decode."""
    try:
        return _walk(descriptor, memoryview(data), "", 1)
    except (IndexError, ValueError):
        return None


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _walk(descriptor: Descriptor, data: memoryview, path: str,
          depth: int) -> tuple[str, str] | None:
    if depth > MAX_DEPTH:
        return path or "request", f"is nested more than {MAX_DEPTH} levels deep"
    pos = 0
    seen: dict[int, int] = {}
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        field = descriptor.fields_by_number.get(number)
        name = _name(path, descriptor, field, seen.get(number, 0))
        seen[number] = seen.get(number, 0) + 1
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                return name or "request", "is truncated"
            body, pos = data[pos:pos + size], pos + size
            if field is None:
                continue
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    str(body, "utf-8")
                except UnicodeDecodeError:
                    return name, "is not valid UTF-8"
            elif field.type == FieldDescriptor.TYPE_MESSAGE and (
                    found := _walk(field.message_type, body, name, depth + 1)):
                return found
        else:
            return name or "request", f"has an unsupported wire type {wire}"
    if pos > len(data):
        return path or "request", "is truncated"
    return None


def _name(path: str, descriptor: Descriptor, field: FieldDescriptor | None,
          index: int) -> str:
    """A field's path as a request names it; inside a Struct, the Struct's own field."""
    if descriptor.full_name in _STRUCT_TYPES or descriptor.GetOptions().map_entry:
        return path
    if field is None:
        return path
    name = f"{path}.{field.name}" if path else field.name
    if field.is_repeated:
        return f"{name}[{index}]"
    return name


class StrictDecoding(grpc.aio.ServerInterceptor):
    """Decodes each unary request inside the call, so a bad one is INVALID_ARGUMENT."""

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        message_type = _message_type(handler)
        if message_type is None:
            return handler
        return _decoding(handler, message_type)


def _message_type(handler: grpc.RpcMethodHandler | None) -> type[Message] | None:
    """The request class of a unary-request handler that decodes with `FromString`."""
    if handler is None or handler.request_streaming:
        return None
    owner = getattr(handler.request_deserializer, "__self__", None)
    return owner if isinstance(owner, type) and issubclass(owner, Message) else None


def _decoding(handler: grpc.RpcMethodHandler,
              message_type: type[Message]) -> grpc.RpcMethodHandler:
    serializer = handler.response_serializer
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary(data: bytes, context: grpc.aio.ServicerContext) -> Any:
            async with statuses(context):
                request = decode(message_type, data)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serializer)
    streaming_inner = handler.unary_stream

    async def streaming(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with statuses(context):
            request = decode(message_type, data)
        result = streaming_inner(request, context)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        else:  # a handler that writes through the context
            await result

    return grpc.unary_stream_rpc_method_handler(streaming, response_serializer=serializer)
