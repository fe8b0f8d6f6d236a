"""The backend's engine: vLLM `AsyncLLM` in this process, behind a narrow interface.

The servicer depends on the `Engine` protocol only (generate, prefill, info, health),
so a fake for a unit test is a few lines. `VllmEngine` validates each request
against the model's real limits and raises `FieldError` naming the field; a
dead engine core raises `Unavailable`, from `generate` and from `health`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from core.errors import FieldError, NotReady, Overloaded, Unavailable
from core.generation import MAX_TEMPERATURE, Delta, GenerationRequest, TokenLogprob
from core.prefill import DEFAULT_TOP, MAX_TOP, PrefillStats, content_span, summarise
from services.backend.dtype import DtypeChoice, resolve_here
from services.backend.selfcheck import SelfCheck, run_self_check
from services.backend.settings import BackendSettings

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

log = logging.getLogger(__name__)

# Extra vLLM sampling fields a request may set; anything else is refused.
EXTRA_SAMPLING_FIELDS: dict[str, type] = {
    "repetition_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "min_p": float,
    "min_tokens": int,
    "ignore_eos": bool,
}


@dataclass(frozen=True)
class EngineLoad:
    """How busy the engine is, for a dispatcher choosing among replicas."""

    in_flight: int
    max_num_seqs: int
    max_in_flight: int


@dataclass(frozen=True)
class EngineInfo:
    model: str
    served_name: str
    dtype: str
    quantization: str
    kv_cache_dtype: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    max_model_len: int
    max_tokens_limit: int
    enable_prefix_caching: bool
    max_num_seqs: int
    engine_version: str
    dtype_reason: str
    self_check: str


class Engine(Protocol):
    """What the gRPC servicer needs from an engine."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]: ...

    async def prefill(self, request: GenerationRequest, top: int = DEFAULT_TOP
                      ) -> PrefillStats: ...

    def info(self) -> EngineInfo: ...

    def load(self) -> EngineLoad: ...

    async def health(self) -> None: ...


def default_model() -> str:
    """The prepared SmolLM2 folder (prepared now if missing)."""
    from core.models import prepare_smollm2

    return str(prepare_smollm2())


class VllmEngine:
    """vLLM AsyncLLM with request validation, admission control and abort on cancel."""

    def __init__(self, settings: BackendSettings, stat_loggers: list[Any] | None = None) -> None:
        self.settings = settings
        self._stat_loggers = stat_loggers
        self._llm: AsyncLLM | None = None
        self._tokenizer: Any = None
        self._in_flight = 0
        self.started_at: float | None = None
        self._dtype: DtypeChoice | None = None
        self._self_check = "not run"

    @property
    def in_flight(self) -> int:
        """Requests admitted by this wrapper and not yet finished."""
        return self._in_flight

    @property
    def llm(self) -> AsyncLLM:
        if self._llm is None:
            raise NotReady("engine is not started")
        return self._llm

    def load(self) -> EngineLoad:
        """Admitted requests against the batch size and the admission limit; NotReady
        while the model is loading (a broker polling it must not count it healthy)."""
        self._require_loaded()
        s = self.settings
        return EngineLoad(self._in_flight, s.max_num_seqs, s.max_in_flight)

    def unfinished(self) -> int:
        """Requests the engine itself still tracks (0 once aborts are processed)."""
        return self._llm.get_num_unfinished_requests() if self._llm is not None else 0

    async def start(self) -> None:
        """Load the model (in a thread, so health checks keep answering), then run the
        warm-up self-check; raises `StartupCheckFailed` when its answer is degenerate."""
        s = self.settings
        self._dtype = dtype = await asyncio.to_thread(resolve_here, s.dtype)
        log.info("dtype %s (%s)", dtype.dtype, dtype.reason)
        if dtype.warning:
            log.warning("dtype: %s", dtype.warning)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{max(1, round(s.kv_cache_gib))}")
        if s.cpu_threads_bind:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = s.cpu_threads_bind
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=s.model or await asyncio.to_thread(default_model),
            served_model_name=[s.served_name],
            tensor_parallel_size=s.tensor_parallel_size,
            pipeline_parallel_size=s.pipeline_parallel_size,
            # Names pass through as the operator wrote them; vLLM validates its own lists,
            # which grow between versions (its Literal types would pin this to one).
            dtype=cast(Any, dtype.dtype),
            quantization=s.quantization,
            kv_cache_dtype=cast(Any, s.kv_cache_dtype),
            enable_prefix_caching=s.enable_prefix_caching,
            max_num_seqs=s.max_num_seqs,
            max_model_len=s.max_model_len,
            enforce_eager=s.enforce_eager,
            kv_cache_memory_bytes=int(s.kv_cache_gib * 2**30),
            disable_log_stats=not self._stat_loggers,
        )
        self._llm = await asyncio.to_thread(
            AsyncLLM.from_engine_args, args, stat_loggers=self._stat_loggers
        )
        self._tokenizer = self._llm.get_tokenizer()
        self._self_check = await run_self_check(self, SelfCheck(
            s.self_check_prompt, s.self_check_expect, s.self_check_max_tokens, s.self_check))
        log.info("self-check %s", self._self_check)
        self.started_at = time.time()
        log.info("engine ready: %s", self.info())

    def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    def info(self) -> EngineInfo:
        import vllm

        config = self.llm.vllm_config
        return EngineInfo(
            model=config.model_config.model,
            served_name=self.settings.served_name,
            dtype=str(config.model_config.dtype).removeprefix("torch."),
            quantization=config.model_config.quantization or "",
            kv_cache_dtype=str(config.cache_config.cache_dtype),
            tensor_parallel_size=config.parallel_config.tensor_parallel_size,
            pipeline_parallel_size=config.parallel_config.pipeline_parallel_size,
            max_model_len=config.model_config.max_model_len,
            max_tokens_limit=self.settings.max_tokens_limit,
            enable_prefix_caching=bool(config.cache_config.enable_prefix_caching),
            max_num_seqs=config.scheduler_config.max_num_seqs,
            engine_version=vllm.__version__,
            dtype_reason=self._dtype.reason if self._dtype else "",
            self_check=self._self_check,
        )

    @property
    def errored(self) -> bool:
        """True once the engine core has died (vLLM's monitor thread notices within ms)."""
        return self._llm is not None and bool(self._llm.errored)

    async def health(self) -> None:
        """Return when the engine can take work; raise NotReady/Unavailable otherwise."""
        if self.errored:
            raise Unavailable("the vLLM engine core has died")
        await self.llm.check_health()

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        """Tokenise the prompt (through the chat template when it has context)."""
        if not request.prompt.strip():
            raise FieldError("prompt", "must not be empty")
        return self._encode(request, request.prompt)

    def _encode(self, request: GenerationRequest, prompt: str) -> list[int]:
        """Token ids of `prompt` in `request`'s context (template, conversation)."""
        tok = self._tokenizer
        if not request.uses_chat_template:
            return list(tok(prompt)["input_ids"])
        messages = []
        conversation = request.conversation
        if conversation.system_prompt:
            messages.append({"role": "system", "content": conversation.system_prompt})
        for i, turn in enumerate(conversation.turns):
            if turn.role not in ("user", "assistant"):
                raise FieldError(f"conversation.turns[{i}].role", "must be user or assistant")
            messages.append({"role": turn.role, "content": turn.content})
        messages.append({"role": "user", "content": prompt})
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def sampling_params(self, request: GenerationRequest, prompt_len: int,
                        done: int = 0) -> Any:
        """vLLM SamplingParams, after checking every field against this engine's limits."""
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        s = self.settings
        sampling = request.sampling
        max_len = self.llm.vllm_config.model_config.max_model_len
        max_tokens = sampling.max_tokens
        if max_tokens is None:
            max_tokens = min(s.default_max_tokens, s.max_tokens_limit)
        if max_tokens <= 0 or max_tokens > s.max_tokens_limit:
            raise FieldError("sampling.max_tokens", f"must be in 1..{s.max_tokens_limit}")
        if prompt_len >= max_len:
            raise FieldError("prompt", f"{prompt_len} tokens; the context limit is {max_len}")
        max_tokens = min(max_tokens, max_len - prompt_len)
        if done >= max_tokens:
            raise FieldError("continue_token_ids", f"{done} tokens; max_tokens is {max_tokens}")
        max_tokens -= done  # a continuation counts what the earlier attempt made
        if sampling.temperature is not None and not 0 <= sampling.temperature <= MAX_TEMPERATURE:
            raise FieldError("sampling.temperature", f"must be in [0, {MAX_TEMPERATURE:g}]")
        if sampling.top_p is not None and not 0 < sampling.top_p <= 1:
            raise FieldError("sampling.top_p", "must be in (0, 1]")
        if sampling.top_k is not None and sampling.top_k < -1:
            raise FieldError("sampling.top_k", "must be -1, 0 or positive")
        if any(not stop for stop in sampling.stop):
            raise FieldError("sampling.stop", "must not contain an empty string")
        extra = _checked_extra(request.extra)
        from vllm.exceptions import VLLMValidationError

        try:
            return SamplingParams(
                temperature=0.0 if sampling.temperature is None else sampling.temperature,
                top_p=1.0 if sampling.top_p is None else sampling.top_p,
                top_k=sampling.top_k or 0,
                max_tokens=max_tokens,
                seed=sampling.seed,
                stop=list(sampling.stop) or None,
                logprobs=0 if request.logprobs else None,
                output_kind=RequestOutputKind.DELTA,
                **extra,
            )
        except (ValueError, VLLMValidationError) as exc:  # vLLM's own checks: final, not retried
            raise FieldError(_refused_field(exc), str(exc)) from exc

    def _require_loaded(self) -> None:
        if self._tokenizer is None:
            raise NotReady("the engine is still loading its model")

    def _admit(self) -> None:
        self._require_loaded()
        if self.errored:
            raise Unavailable("the vLLM engine core has died")
        if self._in_flight >= self.settings.max_in_flight:
            raise Overloaded(f"{self._in_flight} requests in flight (max_in_flight)")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas; leaving the loop early (cancel, deadline) aborts in the engine."""
        self._admit()
        ids = self.prompt_token_ids(request)
        done = list(request.continue_token_ids)
        params = self.sampling_params(request, len(ids), len(done))
        completion = len(done)
        async with aclosing(self._run(ids + done, params, request.request_id)) as outputs:
            async for out in outputs:
                seq = out.outputs[0]
                completion += len(seq.token_ids)
                yield Delta(
                    text=seq.text,
                    token_ids=list(seq.token_ids),
                    logprobs=_logprobs(seq.token_ids, seq.logprobs),
                    finish_reason=seq.finish_reason if out.finished else None,
                    prompt_tokens=len(ids),
                    completion_tokens=completion,
                )

    async def prefill(self, request: GenerationRequest, top: int = DEFAULT_TOP
                      ) -> PrefillStats:
        """Prompt statistics from one prefill and one greedy token (`core.prefill`).

        The prompt is tokenised as `generate` would (same template), so with prefix
        caching on its KV blocks are cached for a generation of it that follows.
        vLLM does not read the prefix cache for a request that asks for prompt
        logprobs (every position needs its logits), but it still writes it.
        """
        if not 1 <= top <= MAX_TOP:
            raise FieldError("top_logprobs", f"must be in 1..{MAX_TOP}")
        self._admit()
        ids = self.prompt_token_ids(request)
        max_len = self.llm.vllm_config.model_config.max_model_len
        if len(ids) >= max_len:
            raise FieldError("prompt", f"{len(ids)} tokens; the context limit is {max_len}")
        empty = self._encode(request, "") if request.uses_chat_template else []
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0,
                                logprobs=top, output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async with aclosing(self._run(ids, params, request.request_id)) as outputs:
            async for out in outputs:
                final = out
        if final is None or final.prompt_logprobs is None or not final.outputs[0].logprobs:
            raise Unavailable("the engine returned no logprobs for the prefill")
        prompt = [None if options is None else float(options[token].logprob)
                  for token, options in zip(ids, final.prompt_logprobs, strict=True)]
        options = final.outputs[0].logprobs[0]
        next_top = [(lp.decoded_token or "", float(lp.logprob)) for lp in options.values()]
        return summarise(prompt, content_span(ids, empty), next_top, top)

    async def _run(self, ids: list[int], params: Any, request_id: str
                   ) -> AsyncGenerator[Any, None]:
        """vLLM's outputs for one admitted request; closing this early aborts it in the
        engine (callers hold it in `aclosing`, so a cancel aborts at once, not at GC)."""
        llm = self.llm
        request_id = request_id or uuid.uuid4().hex
        self._in_flight += 1
        finished = False
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            async for out in llm.generate({"prompt_token_ids": ids}, params, request_id):
                finished = out.finished
                yield out
        except EngineDeadError as exc:
            raise Unavailable("the vLLM engine core died during this request") from exc
        except VLLMValidationError as exc:  # refused while queued: final, never retried
            raise FieldError(_refused_field(exc), str(exc)) from exc
        finally:
            self._in_flight -= 1
            if not finished and not self.errored:
                await llm.abort(request_id)


def _refused_field(exc: Exception) -> str:
    """The request field a vLLM validation error is about: vLLM names the parameter
    (`exc.parameter`) or starts its message with it ("presence_penalty must be ...")."""
    name = getattr(exc, "parameter", None) or (str(exc).split(" ", 1) or [""])[0]
    if name in ("temperature", "top_p", "top_k", "max_tokens", "seed", "stop"):
        return f"sampling.{name}"
    if name in EXTRA_SAMPLING_FIELDS:
        return f"sampling_overrides.{name}"
    return "sampling_overrides"


def _checked_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in extra.items():
        kind = EXTRA_SAMPLING_FIELDS.get(key)
        if kind is None:
            allowed = ", ".join(sorted(EXTRA_SAMPLING_FIELDS))
            raise FieldError(f"sampling_overrides.{key}", f"unknown field (allowed: {allowed})")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = number and float(value).is_integer()
        else:
            ok = number and math.isfinite(value)
        if not ok:
            raise FieldError(f"sampling_overrides.{key}", f"must be a finite {kind.__name__}"
                             if kind is float else f"must be {kind.__name__}")
        value = kind(value)
        checked[key] = value
    return checked


def _logprobs(token_ids: Any, logprobs: Any) -> list[TokenLogprob]:
    if not logprobs:
        return []
    out = []
    for token_id, options in zip(token_ids, logprobs, strict=False):
        chosen = options[token_id]
        out.append(TokenLogprob(int(token_id), chosen.decoded_token or "", float(chosen.logprob)))
    return out
