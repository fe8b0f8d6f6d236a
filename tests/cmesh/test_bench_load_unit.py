"""The scoring of `cmesh bench system`'s open-loop parts, on hand-made client results
(the runs themselves are in tests/cmesh/test_bench_system.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmesh.bench.load import (
    Answered,
    Probe,
    Rung,
    errors_by_reason,
    ladder,
    overload_figures,
    sustainable,
    wrong_hits,
)
from cmesh.bench.system import _repeat_ladder_figures
from cmesh.bench.system_report import write_report
from cmesh.bench.workloads import Pools, Request


def result(ttfts: list[float], errors: list[str] | None = None,
           latencies: list[float] | None = None, tokens: int = 11) -> dict:
    """A client result; by default each answer's 10 tokens after the first took 1 s."""
    errors = errors if errors is not None else [""] * len(ttfts)
    return {"ttfts": ttfts, "errors": errors, "failed": sum(bool(e) for e in errors),
            "latencies": latencies or [t + 1 for t in ttfts], "request_throughput": 1.0,
            "output_throughput": 10.0, "output_lens": [tokens] * len(ttfts)}


def test_the_sustainable_rate_is_the_last_rung_under_the_slo_before_one_that_is_not() -> None:
    rungs = [Rung(0.5, result([0.3] * 5)), Rung(1.0, result([0.4] * 9 + [1.9])),
             Rung(2.0, result([0.5] * 8 + [3.0, 4.0])), Rung(3.0, result([0.3] * 5))]
    assert [r.sustained for r in rungs] == [True, True, False, True]
    assert sustainable(rungs) == 1.0  # 3.0 passing again does not count
    assert sustainable([Rung(1.0, result([0.3], ["Internal Server Error"]))]) is None


def test_answers_that_came_in_one_piece_do_not_count_in_the_decode_time() -> None:
    """Cache hits (role chunk, all the text, the closing chunk: two gaps) beside generated
    answers of 100 ms a token: the rung's TPOT is the generated ones', so its p95 is not
    'slower' than its median."""
    hits_and_decodes = result([0.2] * 6, latencies=[0.21] * 3 + [1.2] * 3)
    hits_and_decodes["itls"] = [[0.005, 0.005]] * 3 + [[0.1] * 10] * 3
    rung = Rung(0.5, hits_and_decodes)
    assert rung.tpot(0.5) == pytest.approx(0.1) and rung.tpot(0.95) == pytest.approx(0.1)
    assert rung.sustained
    del hits_and_decodes["itls"]  # without the client's gaps, every answer counts
    assert Rung(0.5, hits_and_decodes).tpot(0.5) == pytest.approx(0.0505, abs=0.05)


def test_a_rung_whose_decode_slows_past_the_growth_bound_is_not_sustained() -> None:
    lowest = Rung(0.5, result([0.3] * 5))  # 100 ms a token
    assert lowest.sustained and lowest.tpot(0.5) == pytest.approx(0.1)
    slow = Rung(2.0, result([0.3] * 5, latencies=[3.3] * 5), tpot_ref=0.1)  # 300 ms
    assert not slow.sustained  # first tokens as quick as ever; the batch crawls
    assert Rung(2.0, result([0.3] * 5, latencies=[2.3] * 5), tpot_ref=0.1).sustained


async def test_the_ladder_stops_a_side_at_its_first_miss() -> None:
    calls: list[tuple[str, float]] = []

    def side(name: str, slow_from: float):
        async def run(rate: float, rung: int) -> dict:
            calls.append((name, rate))
            return result([0.3] * 5, latencies=[3.3 if rate >= slow_from else 1.3] * 5)
        return run

    got = await ladder({"A": side("A", 2.0), "B": side("B", 9.0)}, [1.0, 2.0, 3.0],
                       lambda _: None)
    assert calls == [("A", 1.0), ("B", 1.0), ("B", 2.0), ("A", 2.0), ("B", 3.0)]
    assert sustainable(got["A"]) == 1.0 and sustainable(got["B"]) == 3.0
    assert got["A"][1].tpot_ref == pytest.approx(0.1)


def test_errors_are_grouped_by_reason_and_tracebacks_by_their_last_line() -> None:
    got = errors_by_reason({"errors": ["", "Too Many Requests", "Too Many Requests",
                                       "Traceback (most recent call last):\n  x\n"
                                       "aiohttp.ClientError: boom"]})
    assert got == {"Too Many Requests": 2, "aiohttp.ClientError: boom": 1}


def test_overload_counts_refusals_from_the_load_and_the_probe() -> None:
    load = result([0.5, 0.6, 0.0, 0.0], ["", "", "Too Many Requests", "Too Many Requests"],
                  [4.0, 12.0, 0.0, 0.0])
    probed = Probe(refused_ms=[3.0, 4.0, 40.0], retry_after_ms=[200, 900, 900],
                   accepted_ms=[5000.0])
    f = overload_figures(load, probed, deadline_s=10, deadline_exceeded=0, left_running=0)
    o = f["overload"]
    assert (o["sent"], o["refused"], o["accepted"]) == (8, 5, 3)
    assert o["accepted_late_or_failed"] == 1  # the 12 s answer ran past its 10 s
    assert f["accepted_within_deadline"] == pytest.approx(2 / 3)
    assert f["reject_p99_ms"] == 40.0 and o["retry_after_ms_distinct"] == 2
    # the gateway saw more deadlines than the client could tell: the larger count wins
    f = overload_figures(load, probed, 10, deadline_exceeded=2, left_running=1)
    assert f["accepted_within_deadline"] == pytest.approx(1 / 3)
    assert f["overload"]["left_running_after"] == 1


def test_a_hit_is_right_only_when_it_serves_its_own_question_s_answer() -> None:
    pools = Pools([], [], ["How tall is it?"], {"How tall is it?": ["What is its height?"]})
    stream = [Request("How tall is it?", 8, "t", "chat"),
              Request("Name a fruit.", 8, "t", "chat"),
              Request("What is its height?", 8, "t", "chat", "paraphrase", 0),
              Request("Name a colour.", 8, "t", "chat"),           # unique, yet hits: wrong
              Request("How tall is it?", 8, "t", "chat"),          # unlabelled repeat: right
              Request("What is its height?", 8, "t", "chat")]      # unlabelled paraphrase
    answers = [Answered("miss", "Ten metres."), Answered("miss", "Apple."),
               Answered("hit", "Ten metres."), Answered("hit", "Apple."),
               Answered("hit", "Ten metres."), Answered("hit", "Apple.")]
    got = wrong_hits(stream, answers, pools)
    assert got["labelled"]["hits"] == 4 and got["labelled"]["wrong_hits"] == 2
    assert got["m1_wrong_hit_share"] == 0.5


def test_the_report_writes_tables_and_two_plots(tmp_path: Path) -> None:
    rung = {"offered_rps": 0.5, "achieved_rps": 0.5, "ttft_p50_ms": 300.0,
            "ttft_p95_ms": 400.0, "e2e_p95_ms": 4000.0, "failed": 0, "sustained": True}
    figures = {"ttft_p50_ms": {"V/unique": 290.0, "M1/repeat60": 150.0},
               "output_tokens_per_s": {"V/unique": 60.0, "M1/repeat60": 90.0},
               "requests_per_s": {"V/unique": 0.7, "M1/repeat60": 1.4},
               "failed": {"V/unique": 0, "M1/repeat60": 0},
               "ladder": {"V": [rung], "M0": [rung | {"offered_rps": 1.0}]},
               "ladder_repeat60": {"V": [rung], "M1": [rung | {"offered_rps": 1.5}]},
               "overload": {"offered_rps": 2.0, "deadline_s": 10, "sent": 40, "refused": 12,
                            "refused_share": 0.3, "left_running_after": 0},
               "reject_p50_ms": 4.0, "reject_p99_ms": 9.0, "accepted_within_deadline": 1.0,
               "m1_wrong_hit_share": 0.0}
    made = write_report(figures, tmp_path / "out")
    assert {p.name for p in made} == {"figures.json", "report.md", "latency-vs-load.png",
                                      "throughput-vs-repeat.png"}
    assert all(p.stat().st_size > 0 for p in made)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| vLLM server (V), `unique` | 290.0 ms" in text and "12 refused (30%)" in text
    assert "Open loop on `repeat60`" in text and "| mesh, cache on (M1) | 1.50 |" in text
    assert (tmp_path / "out" / "latency-vs-load.png").read_bytes()[:4] == b"\x89PNG"


def test_the_mesh_mix_is_read_between_two_metric_readings() -> None:
    from cmesh.bench.system import _mix_between, _percentiles

    before = {"small/miss": 2.0, "gateway_cost_total": 1.0,
              "gateway_cost_if_top_tier_total": 4.0}
    after = {"small/miss": 8.0, "small/hit": 4.0, "large/miss": 2.0,
             "gateway_cost_total": 4.0, "gateway_cost_if_top_tier_total": 16.0}
    mix = _mix_between(before, after)
    assert mix["tier_share"] == {"small": 10 / 12, "large": 2 / 12}
    assert mix["saving_vs_all_large"] == pytest.approx(0.75)  # 3 spent where 12 would be
    assert mix["answers_by_tier_outcome"] == {"small/miss": 6.0, "small/hit": 4.0,
                                              "large/miss": 2.0}
    got = _percentiles([{"ttfts": [0.1, 0.3], "itls": [[0.01, 0.02]], "latencies": [1.0]}])
    assert got["ttft_p50"] == pytest.approx(100) and got["itl_p99"] == pytest.approx(20)
    assert got["e2e_p95"] == pytest.approx(1000)


def test_the_repeat_ladder_compares_sustained_rates_and_ttft_at_v_s_highest() -> None:
    fast, slow = result([0.1] * 5), result([0.2] * 5)
    rungs = {"V": [Rung(0.5, slow), Rung(1.0, slow), Rung(2.0, result([3.0] * 5))],
             "M1": [Rung(0.5, fast), Rung(1.0, fast), Rung(2.0, fast)]}
    figures = _repeat_ladder_figures(rungs)
    assert figures["sustainable_rps_repeat60"] == {"V": 1.0, "M1": 2.0}
    assert figures["m1_vs_vllm_sustainable_repeat60"] == 2.0
    assert figures["m1_vs_vllm_ttft_sustained_repeat60"] == pytest.approx(0.5)
    none = _repeat_ladder_figures({"V": [Rung(0.5, result([3.0] * 5))], "M1": rungs["M1"]})
    assert none["m1_vs_vllm_sustainable_repeat60"] is None
    assert none["m1_vs_vllm_ttft_sustained_repeat60"] is None
