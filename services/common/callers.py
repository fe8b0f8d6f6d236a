"""Who may call a service: the caller's certificate name, checked per call.

Mutual TLS (`tls_client_ca`) lets in any certificate the mesh CA signed; this
interceptor narrows that to the names in `tls_allowed_callers`: a call whose
client certificate has none of them as its common name or a DNS name gets
PERMISSION_DENIED before the servicer runs. One CA with names checked here,
rather than one CA per callee, keeps an operator's PKI to one CA and one
certificate per service, and the policy readable in each service's settings
(the local stack: cache and classifier <- gateway; backends <- broker and
gateway). Health, reflection and a backend's model info stay open to every
mesh certificate, so probes and `cmesh status` need no business rights.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc

# Open to every mesh certificate: health, reflection, and a backend's model description
# (`cmesh status` shows it; it costs nothing and tells no tenant's data).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.",
                 "/cascademesh.backend.v1.Backend/GetModelInfo")


def caller_names(context: grpc.aio.ServicerContext) -> set[str]:
    """The common name and DNS names of the caller's verified certificate (empty
    without one)."""
    auth = context.auth_context()
    names = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        names |= {v.decode(errors="replace") for v in auth.get(key, ())}
    return names


class CallerCheck(grpc.aio.ServerInterceptor):
    """PERMISSION_DENIED unless the caller's certificate names one of `allowed`."""

    def __init__(self, allowed: Collection[str], open_prefixes: tuple[str, ...] = OPEN_PREFIXES
                 ) -> None:
        self.allowed = frozenset(allowed)
        self.open_prefixes = open_prefixes

    async def _check(self, context: grpc.aio.ServicerContext, method: str) -> None:
        if not caller_names(context) & self.allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{method}: callers must present a certificate of "
                                f"{sorted(self.allowed)}")

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(self.open_prefixes):
            return handler
        return self._guarded(handler, method)

    def _guarded(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        check = self._check
        codec = {"request_deserializer": handler.request_deserializer,
                 "response_serializer": handler.response_serializer}
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context, method)
                return await inner(request, context)

            make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                    else grpc.stream_unary_rpc_method_handler)
            return make(unary, **codec)
        inner = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[Any]:
            await check(context, method)
            result = inner(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:  # a handler that writes through the context
                await result

        make = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler)
        return make(streaming, **codec)
