"""What `cmesh up --demo` shows once the stack is SERVING.

With the gateway in the stack, the demo is a scripted session through it
(`cmesh.demo_gateway`): repeats and paraphrases that hit, another tenant that
misses, easy and hard prompts that route apart, an escalation, a follow-up in
a conversation, then a summary table. Without it (`cmesh up --only ...`), the
demo drives the services one by one: a backend answers (streamed); the cache
answers a repeat without a model, and a paraphrase only where the verifier's
bound for the configured δ allows it while a different question misses; the
classifier scores an easy and a hard prompt. It calls them with the stack's own
certificate, which a stack without a gateway lets stand in for one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import grpc

from cmesh.output import console
from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2

QUESTION = "What is the capital of France?"
Credentials = grpc.ChannelCredentials | None


def _channel(address: str, credentials: Credentials) -> grpc.aio.Channel:
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials)
    return grpc.aio.insecure_channel(address)
PARAPHRASE = "Can you tell me what the capital of France is?"


async def ask_backend(address: str, prompt: str, max_tokens: int = 64,
                      credentials: Credentials = None) -> str:
    """Stream one greedy answer from a backend to the console; return it."""
    async with _channel(address, credentials) as channel:
        stub = backend_pb2_grpc.BackendStub(channel)
        request = backend_pb2.GenerateRequest(
            prompt=prompt, chat=True,
            sampling=common_pb2.SamplingParams(temperature=0, max_tokens=max_tokens))
        start = time.perf_counter()
        parts: list[str] = []
        usage = None
        async for chunk in stub.Generate(request, timeout=300):
            console.print(chunk.text_delta, end="", soft_wrap=True, highlight=False)
            parts.append(chunk.text_delta)
            if chunk.finish_reason:
                usage = chunk.usage
        elapsed = time.perf_counter() - start
        console.print()
        if usage is not None:
            console.print(f"[dim]{usage.prompt_tokens} prompt + {usage.completion_tokens} "
                          f"generated tokens in {elapsed:.2f}s[/dim]")
        return "".join(parts)


async def run(addresses: Mapping[str, str], state_dir: Path | None = None) -> None:
    """The gateway session when the stack has a gateway, else each service in turn."""
    if "gateway" in addresses and state_dir is not None:
        from cmesh.demo_gateway import run_session

        await run_session(addresses["gateway"], state_dir)
        return
    from cmesh.pki import stack_pki

    pki = stack_pki(state_dir) if state_dir is not None else None
    credentials = pki.channel_credentials() if pki is not None else None
    for name in ("backend-small", "backend-large"):
        if name in addresses:
            async with _channel(addresses[name], credentials) as channel:
                info = await backend_pb2_grpc.BackendStub(channel).GetModelInfo(
                    backend_pb2.GetModelInfoRequest(), timeout=10)
            console.rule(f"{name}: {info.model} (TP={info.tensor_parallel_size}, "
                         f"{info.dtype})")
            console.print(f"[bold]> {QUESTION}[/bold]")
            answer = await ask_backend(addresses[name], QUESTION, credentials=credentials)
            if "cache" in addresses and name == "backend-small":
                await _cache_demo(addresses["cache"], answer, credentials)
    if "classifier" in addresses:
        await _classifier_demo(addresses["classifier"], credentials)


async def _cache_demo(address: str, answer: str, credentials: Credentials) -> None:
    from protos.cache.v1 import cache_pb2, cache_pb2_grpc

    console.rule("cache: store the answer, then ask again, a paraphrase, another question")
    scope = cache_pb2.Scope(tenant="demo",
                            sampling=common_pb2.SamplingParams(temperature=0))
    async with _channel(address, credentials) as channel:
        stub = cache_pb2_grpc.CacheStub(channel)
        await stub.Store(cache_pb2.StoreRequest(scope=scope, prompt=QUESTION, answer=answer,
                                                tier="small"), timeout=30)
        for prompt in (QUESTION, PARAPHRASE, "What is the capital of Germany?"):
            start = time.perf_counter()
            reply = await stub.Lookup(cache_pb2.LookupRequest(scope=scope, prompt=prompt),
                                      timeout=30)
            ms = (time.perf_counter() - start) * 1000
            verdict = f"HIT -> {reply.entry.answer!r}" if reply.hit else "miss"
            console.print(f"> {prompt}\n  {verdict} (similarity {reply.similarity:.3f}, "
                          f"verifier {reply.verifier_probability:.3f}, {ms:.1f} ms)")


async def _classifier_demo(address: str, credentials: Credentials) -> None:
    from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc

    console.rule("classifier: P(small model is not enough)")
    prompts = [
        "What is the capital of France?",
        "Janet has 3 boxes with 17 apples each; she gives away 40% and buys 12 more. "
        "How many apples does she have? Show each step.",
    ]
    async with _channel(address, credentials) as channel:
        reply = await classifier_pb2_grpc.ClassifierStub(channel).Score(
            classifier_pb2.ScoreRequest(prompts=prompts), timeout=30)
    for prompt, score in zip(prompts, reply.scores, strict=True):
        console.print(f"{score:.3f}  {prompt}")
