"""Typed settings of the backend service (env prefix CMESH_BACKEND_, or flags)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class BackendSettings(ServiceSettings):
    """One vLLM engine and the gRPC server in front of it."""

    model_config = SettingsConfigDict(env_prefix="CMESH_BACKEND_", extra="ignore")

    model: str = Field(
        "", description="Model folder vLLM loads; empty means the prepared SmolLM2."
    )
    served_name: str = Field("small", min_length=1, description="Tier name (small, large...).")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="vLLM tensor parallelism.")
    pipeline_parallel_size: int = Field(1, ge=1, le=64, description="vLLM pipeline stages.")
    dtype: str = Field(
        "auto", description="Weights/activations dtype; auto is float32 on every CPU "
        "(vLLM 0.32's CPU bf16 path answers with degenerate text where the CPU has native "
        "bf16, and is emulated and 4x slower where not), the model's own dtype on CUDA.",
    )
    quantization: str | None = Field(None, description="vLLM quantization method, e.g. awq, fp8.")
    kv_cache_dtype: str = Field("auto", description="KV-cache dtype (auto, fp8...).")
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of shared prefixes.")
    max_num_seqs: int = Field(32, ge=1, le=4096, description="Sequences batched per step.")
    max_model_len: int = Field(2048, ge=64, le=1_048_576, description="Context length limit.")
    max_tokens_limit: int = Field(
        1024, ge=1, description="Largest max_tokens a request may ask for."
    )
    default_max_tokens: int = Field(
        256, ge=1, description="max_tokens when a request sets none (capped at the limit)."
    )
    max_in_flight: int = Field(
        256, ge=1, description="Requests admitted at once; more get RESOURCE_EXHAUSTED."
    )
    kv_cache_gib: float = Field(
        1.0, gt=0, le=4096,
        description="KV-cache size in GiB (CPU engines otherwise claim 90 % of RAM).",
    )
    enforce_eager: bool = Field(
        True, description="Skip torch.compile (faster start; on this CPU build the compiled "
        "graph also changed greedy output).",
    )
    cpu_threads_bind: str | None = Field(
        None, description="VLLM_CPU_OMP_THREADS_BIND, e.g. '0|1' for TP=2 on two cores."
    )
    self_check: bool = Field(
        True, description="Judge the warm-up answer and refuse to serve (exit) when it is "
        "degenerate; turn off for base or random models it does not fit.",
    )
    self_check_prompt: str = Field(
        "What is the capital of France? Answer in one sentence.", min_length=1,
        description="Greedy chat prompt asked at warm-up (always, to warm the engine).",
    )
    self_check_expect: str = Field(
        "Paris", description="A word the warm-up answer must contain; empty checks none.",
    )
    self_check_max_tokens: int = Field(
        48, ge=8, le=512, description="Token budget of the warm-up answer; hitting it fails "
        "the check (a one-sentence answer stops well before).",
    )
    drain_seconds: float = Field(
        1.0, ge=0, le=60,
        description="On SIGTERM, report NOT_SERVING this long before refusing new calls.",
    )

    @model_validator(mode="after")
    def _limits_fit(self) -> BackendSettings:
        if self.max_tokens_limit >= self.max_model_len:
            raise ValueError("max_tokens_limit must be below max_model_len")
        return self
