"""The dtype rule, on fake /proc/cpuinfo contents of both kinds of CPU this project meets."""

from __future__ import annotations

import pytest

from services.backend.dtype import native_bf16, resolve_dtype

WITH_BF16 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
WITHOUT_BF16 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx512_vnni
"""
# A flag name inside another line (here the model name) is not a CPU flag.
FLAG_IN_NAME_ONLY = "model name\t: avx512_bf16 emulator\nflags\t\t: sse2 avx2\n"


@pytest.mark.parametrize("cpuinfo", [WITH_BF16, WITHOUT_BF16, FLAG_IN_NAME_ONLY, ""])
def test_auto_is_float32_on_every_cpu(cpuinfo: str) -> None:
    choice = resolve_dtype("auto", cuda=False, cpuinfo=cpuinfo)
    assert choice.dtype == "float32"
    assert choice.reason.startswith("auto on CPU -> float32")
    assert not choice.warning


def test_the_reason_names_the_cpu_path() -> None:
    assert "avx512_bf16" in resolve_dtype("auto", cuda=False, cpuinfo=WITH_BF16).reason
    assert "degenerate" in resolve_dtype("auto", cuda=False, cpuinfo=WITH_BF16).reason
    assert "no native bf16" in resolve_dtype("auto", cuda=False, cpuinfo=WITHOUT_BF16).reason


def test_auto_on_cuda_keeps_the_models_dtype() -> None:
    choice = resolve_dtype("auto", cuda=True, cpuinfo=WITH_BF16)
    assert (choice.dtype, choice.warning) == ("auto", "")


@pytest.mark.parametrize(("cpuinfo", "words"), [
    (WITH_BF16, "degenerate text"), (WITHOUT_BF16, "4x slower")])
def test_bf16_by_name_runs_with_a_warning_on_cpu(cpuinfo: str, words: str) -> None:
    choice = resolve_dtype("bfloat16", cuda=False, cpuinfo=cpuinfo)
    assert choice.dtype == "bfloat16"
    assert choice.reason == "bfloat16: set by the operator"
    assert words in choice.warning


def test_named_dtypes_pass_through_without_warning() -> None:
    for name in ("float32", "float16"):
        assert resolve_dtype(name, cuda=False, cpuinfo=WITH_BF16).warning == ""
    assert resolve_dtype("bfloat16", cuda=True, cpuinfo=WITH_BF16).warning == ""


def test_native_bf16_reads_only_the_flags_lines() -> None:
    assert native_bf16(WITH_BF16) == "avx512_bf16"
    assert native_bf16("flags\t: sse2 amx_bf16\n") == "amx_bf16"
    assert native_bf16(WITHOUT_BF16) == ""
    assert native_bf16(FLAG_IN_NAME_ONLY) == ""
