"""The verifier's rules and alignment features, on hand-made pairs."""

from __future__ import annotations

import random

import pytest

from cache.alignment import features
from cache.pairs import Pair
from cache.variants import look_alike, reword, training_variants
from cache.verifier import contradicts, rival_scores, same_text


@pytest.mark.parametrize(("a", "b"), [
    ("What is 2+2?", "What is 2-2?"), ("x > 5", "x < 5"), ("What is 15% of 200?",
                                                          "What is 25% of 200?"),
    ("What does += do in Python?", "What does -= do in Python?"),
    ("What is -3 times -4?", "What is -3 times 4?"),
])
def test_contradictions(a: str, b: str) -> None:
    assert contradicts(a, b) and contradicts(b, a) and not same_text(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("What is 2+2?", "What does 2 plus 2 equal?"), ("What is 3 squared?",
                                                    "What is 3 to the power of 2?"),
    ("Is a non-native speaker fluent?", "Is a non native speaker fluent?"),
    ("What is == vs === in JavaScript?", "In JavaScript, how does == differ from ===?"),
])
def test_not_contradictions(a: str, b: str) -> None:
    assert not contradicts(a, b)


def test_alignment_tells_a_swap_from_a_rewording() -> None:
    swap = features("How do I convert a fraction to a decimal?",
                    "How do I convert a decimal to a fraction?")
    one_word = features("How many months of rent should I save?",
                        "How many weeks of rent should I save?")
    reworded = features("How long does the flu last?", "How many days does influenza last?")
    assert one_word[5] == 1.0 and reworded[5] == 0.0  # same frame, a content word changed
    assert swap[6] == 1.0  # the same words, moved
    assert one_word[0] > reworded[0]


def test_rival_margin_marks_down_near_ties() -> None:
    import numpy as np

    scores = rival_scores(np.array([5.0, 4.5, 3.0]), np.array([0, 0, 1]))
    assert scores[0] == pytest.approx(5.0 - 1.5) and scores[2] == 3.0


def test_variants_change_one_thing() -> None:
    rng = random.Random(0)
    made = look_alike("How do I convert 5 km to miles in Python?", rng)
    assert made is not None and made[1] != "How do I convert 5 km to miles in Python?"
    assert reword("How do I sort a list?", rng) is not None
    out = training_variants([Pair("What is 2+2?", "What does 2 plus 2 equal?", 1)], per_text=1)
    assert any(p.label == 0 for p in out)
