"""Which dtype a backend runs, and why: `auto` must give right answers on every CPU.

vLLM 0.32's CPU path in bfloat16 answers SmolLM2 prompts with degenerate text on
CPUs with native bf16 (AVX512-BF16 / AMX): "What is the capital of France?" ->
"L'Étoile, la Marseillaise, la femme, ..." to max_tokens, greedy, offline
`LLM(dtype="bfloat16", enforce_eager=True)`, while the same weights in bf16
through transformers, and vLLM in float32, answer "The capital of France is
Paris." (measured 2026-12-04). Without native bf16, vLLM emulates it and decodes
about 4x slower than float32 (24 against 99 tokens/s at concurrency 16). So on a
CPU, `auto` is float32 whatever the flags say; the flags only change the reason
given, and the warning when an operator asks for bf16 by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_NAMES = ("bfloat16", "bf16")


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype handed to vLLM (`auto` = the model's own) and the reason for it."""

    dtype: str
    reason: str
    warning: str = ""


def native_bf16(cpuinfo: str) -> str:
    """The first native-bf16 flag found in `/proc/cpuinfo` text, or ''."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            flags.update(value.split())
    return next((f for f in BF16_FLAGS if f in flags), "")


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def resolve_dtype(requested: str, *, cuda: bool, cpuinfo: str) -> DtypeChoice:
    """Pure rule: the operator's dtype as given, else float32 on CPU, model dtype on CUDA."""
    flag = native_bf16(cpuinfo)
    if requested != "auto":
        warning = ""
        if not cuda and requested in BF16_NAMES:
            warning = (
                f"bfloat16 on a CPU with {flag}: vLLM 0.32's CPU bf16 path is known to "
                "answer with degenerate text (README, Notes)" if flag else
                "bfloat16 on a CPU without native bf16: emulated, about 4x slower than "
                "float32")
        return DtypeChoice(requested, f"{requested}: set by the operator", warning)
    if cuda:
        return DtypeChoice("auto", "auto on CUDA: the model's own dtype")
    if flag:
        why = (f"this CPU has {flag}, but vLLM 0.32's CPU bf16 path answers with "
               "degenerate text")
    else:
        why = "this CPU has no native bf16 (emulated bf16 decodes about 4x slower)"
    return DtypeChoice("float32", f"auto on CPU -> float32: {why}")


def resolve_here(requested: str) -> DtypeChoice:
    """`resolve_dtype` for this machine."""
    import torch

    return resolve_dtype(requested, cuda=torch.cuda.is_available(), cpuinfo=read_cpuinfo())
