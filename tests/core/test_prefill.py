"""Prompt statistics from one prefill: the arithmetic, on hand-made logprobs."""

from __future__ import annotations

import math

import pytest

from core.prefill import FEATURE_NAMES, content_span, summarise


def test_content_span_leaves_out_the_template_on_both_sides() -> None:
    empty = [1, 2, 3, 9, 8]            # <start> system user | <end> assistant
    ids = [1, 2, 3, 40, 41, 42, 9, 8]  # the same around three prompt tokens
    assert content_span(ids, empty) == (3, 6)
    assert content_span([5, 6, 7], []) == (0, 3)


def test_content_span_never_overlaps_when_the_prompt_repeats_the_template() -> None:
    empty = [1, 9]
    ids = [1, 9, 9]  # the prompt is one token equal to the closing token
    start, end = content_span(ids, empty)
    assert end - start == 1


def test_mean_and_min_cover_only_the_prompts_own_tokens() -> None:
    logprobs = [None, -9.0, -1.0, -3.0, -8.0]  # template at 0-1 and 4
    stats = summarise(logprobs, (2, 4), [("x", 0.0)])
    assert stats.scored_tokens == 2
    assert stats.mean_logprob == pytest.approx(-2.0)
    assert stats.min_logprob == pytest.approx(-3.0)
    assert stats.prompt_tokens == 5


def test_first_token_has_no_logprob_in_a_raw_prompt() -> None:
    stats = summarise([None, -2.0, -4.0], (0, 3), [("x", 0.0)])
    assert stats.mean_logprob == pytest.approx(-3.0)


def test_entropy_of_a_uniform_top_is_log_of_its_size() -> None:
    four = [(t, math.log(0.25)) for t in ("a", "b", "c", "d")]
    stats = summarise([None, -1.0], (0, 2), four)
    assert stats.next_entropy == pytest.approx(math.log(4))
    assert stats.top_mass == pytest.approx(1.0)
    certain = summarise([None, -1.0], (0, 2), [("a", 0.0), ("b", -30.0)])
    assert certain.next_entropy < 1e-9


def test_option_mass_joins_letters_with_and_without_a_space() -> None:
    top = [(" A", math.log(0.5)), ("A", math.log(0.1)), (" B", math.log(0.2)),
           ("The", math.log(0.1)), ("Apple", math.log(0.05))]
    stats = summarise([None, -1.0], (0, 2), top)
    assert stats.option_mass["A"] == pytest.approx(0.6)
    assert stats.option_mass["B"] == pytest.approx(0.2)
    assert stats.option_mass["C"] == 0.0
    assert stats.option_total == pytest.approx(0.8)
    features = dict(zip(FEATURE_NAMES, stats.features(), strict=True))
    assert features["prefill_option_top_share"] == pytest.approx(0.75)
    assert features["prefill_top_mass"] == pytest.approx(0.95)


def test_only_the_top_candidates_count() -> None:
    top = [("x", math.log(0.5)), (" A", math.log(0.01)), ("y", math.log(0.4))]
    stats = summarise([None, -1.0], (0, 2), top, top=2)
    assert stats.top == 2
    assert stats.option_total == 0.0
    assert stats.top_mass == pytest.approx(0.9)
    with pytest.raises(ValueError, match="top"):
        summarise([None], (0, 1), top, top=0)
