"""Backend gRPC servicer: translate protobuf <-> engine types, record metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2
from services.backend.engine import Engine, GenerationRequest
from services.backend.metrics import BackendMetrics
from services.common.errors import grpc_errors, grpc_stream_errors

_ROLES = {common_pb2.ROLE_USER: "user", common_pb2.ROLE_ASSISTANT: "assistant"}
_FINISH = {
    "stop": common_pb2.FINISH_REASON_STOP,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "abort": common_pb2.FINISH_REASON_ABORT,
}


def to_generation_request(msg: backend_pb2.GenerateRequest) -> GenerationRequest:
    """The engine's view of a GenerateRequest (field checks happen in the engine)."""
    sampling = msg.sampling
    return GenerationRequest(
        prompt=msg.prompt,
        system_prompt=msg.conversation.system_prompt,
        turns=tuple((_ROLES.get(t.role, "unspecified"), t.content)
                    for t in msg.conversation.turns),
        chat=msg.chat,
        temperature=sampling.temperature if sampling.HasField("temperature") else None,
        top_p=sampling.top_p if sampling.HasField("top_p") else None,
        top_k=sampling.top_k if sampling.HasField("top_k") else None,
        max_tokens=sampling.max_tokens if sampling.HasField("max_tokens") else None,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop=tuple(sampling.stop),
        logprobs=msg.return_logprobs,
        extra=json_format.MessageToDict(msg.sampling_overrides),
        request_id=msg.request_id,
        continue_token_ids=tuple(msg.continue_token_ids),
    )


class BackendServicer(backend_pb2_grpc.BackendServicer):
    def __init__(self, engine: Engine, metrics: BackendMetrics) -> None:
        self._engine = engine
        self._metrics = metrics

    @grpc_stream_errors
    async def Generate(
        self, request: backend_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[backend_pb2.GenerateChunk]:
        m = self._metrics
        start = last = time.perf_counter()
        outcome = "cancelled"
        try:
            async for delta in self._engine.generate(to_generation_request(request)):
                now = time.perf_counter()
                if delta.token_ids:
                    if last == start:
                        m.ttft.observe(now - start)
                    else:
                        m.inter_token.observe((now - last) / len(delta.token_ids))
                    last = now
                chunk = backend_pb2.GenerateChunk(
                    text_delta=delta.text,
                    token_ids=delta.token_ids,
                    logprobs=[common_pb2.TokenLogprob(token_id=i, token=t, logprob=lp)
                              for i, t, lp in delta.logprobs],
                )
                if delta.finish_reason is not None:
                    outcome = delta.finish_reason
                    chunk.finish_reason = _FINISH.get(delta.finish_reason,
                                                      common_pb2.FINISH_REASON_ERROR)
                    chunk.usage.prompt_tokens = delta.prompt_tokens
                    chunk.usage.completion_tokens = delta.completion_tokens
                    m.prompt_tokens.inc(delta.prompt_tokens)
                    m.generation_tokens.inc(delta.completion_tokens)
                    m.e2e.observe(now - start)
                yield chunk
        except Exception:
            outcome = "error"
            raise
        finally:
            m.requests.labels(m.tier, outcome).inc()

    @grpc_errors
    async def Complete(
        self, request: backend_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.Completion:
        completion = backend_pb2.Completion()
        texts = []
        async for chunk in self.Generate(request, context):
            texts.append(chunk.text_delta)
            completion.token_ids.extend(chunk.token_ids)
            completion.logprobs.extend(chunk.logprobs)
            if chunk.finish_reason:
                completion.finish_reason = chunk.finish_reason
                completion.usage.CopyFrom(chunk.usage)
        completion.text = "".join(texts)
        return completion

    @grpc_errors
    async def GetModelInfo(
        self, request: backend_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.ModelInfo:
        info = self._engine.info()
        return backend_pb2.ModelInfo(**vars(info))

    @grpc_errors
    async def GetLoad(
        self, request: backend_pb2.GetLoadRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.Load:
        return backend_pb2.Load(**vars(self._engine.load()))
