"""The verifier's rules and alignment features, on hand-made pairs."""

from __future__ import annotations

import random

import pytest

from cache.alignment import added_span, exchanged, features
from cache.pairs import Pair
from cache.variants import look_alike, reword, training_variants
from cache.verifier import CrossVerifier, contradicts, rival_scores, same_text


@pytest.mark.parametrize(("a", "b"), [
    ("What is 2+2?", "What is 2-2?"), ("x > 5", "x < 5"), ("What is 15% of 200?",
                                                          "What is 25% of 200?"),
    ("What does += do in Python?", "What does -= do in Python?"),
    ("What is -3 times -4?", "What is -3 times 4?"),
    ("A $1,200 PC parts list", "A $1,500 PC parts list"), ("£48k or more", "£52,000 or more"),
    ("What is 7 % 3 in Python?", "What is 7 * 3 in Python?"),
])
def test_contradictions(a: str, b: str) -> None:
    assert contradicts(a, b) and contradicts(b, a) and not same_text(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("What is 2+2?", "What does 2 plus 2 equal?"), ("What is 3 squared?",
                                                    "What is 3 to the power of 2?"),
    ("Is a non-native speaker fluent?", "Is a non native speaker fluent?"),
    ("What is == vs === in JavaScript?", "In JavaScript, how does == differ from ===?"),
    # the same numbers written another way
    ("A $1200 PC parts list, please", "Which parts for a $1,200 PC?"),
    ("Deloitte offered £48k and PwC £52k", "PwC offered £52,000 and Deloitte £48,000"),
    ("Is a 550 W 80+ Bronze PSU enough?", "Is a 550-watt 80 Plus Bronze PSU enough?"),
    ("A £60 jacket reduced by 25% in a sale", "A £60 jacket, cut by 25% in a sale"),
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

    from cache.verifier import RIVAL_MARGIN

    scores = rival_scores(np.array([5.0, 4.5, 3.0]), np.array([0, 0, 1]))
    assert scores[0] == pytest.approx(5.0 - (RIVAL_MARGIN - 0.5)) and scores[2] == 3.0
    assert scores[1] == pytest.approx(4.5 - (RIVAL_MARGIN + 0.5))


def test_variants_change_one_thing() -> None:
    rng = random.Random(0)
    made = look_alike("How do I convert 5 km to miles in Python?", rng)
    assert made is not None and made[1] != "How do I convert 5 km to miles in Python?"
    assert reword("How do I sort a list?", rng) is not None
    out = training_variants([Pair("What is 2+2?", "What does 2 plus 2 equal?", 1)], per_text=1)
    assert any(p.label == 0 for p in out)


def test_rules_settle_rows_without_the_model(verifier: CrossVerifier) -> None:
    import numpy as np

    class Counting:
        def __init__(self, model: object) -> None:
            self.model, self.rows = model, 0

        def logits(self, cached: list[str], asked: list[str]) -> np.ndarray:
            self.rows += len(cached)
            return self.model.logits(cached, asked)  # type: ignore[attr-defined]

    counting = Counting(verifier.model)
    v = verifier.with_calibration(verifier.calibration)  # type: ignore[arg-type]
    v.model = counting  # type: ignore[assignment]
    asked = ["what is 2+2", "what is 2+2", "how do i sort a list", "how do i sort a list"]
    cached = ["What is 2+2", "what is 2-2", "how can i sort a list", "how do i sort a dict"]
    scores = v.scores(asked, cached, np.array([1.0, 0.9, 0.9, 0.8]), np.array([0, 0, 1, 1]))
    assert scores[0] == np.inf and scores[1] == -np.inf  # a repeat settles its whole lookup
    assert np.isfinite(scores[2]) and scores[3] == -np.inf  # "list" / "dict": one slot
    assert counting.rows == 2  # the refused row still went through the model, as a rival


@pytest.mark.parametrize(("a", "b", "swap"), [
    ("Is tap water safe to drink in Mexico?", "Is bottled water safe to drink in Mexico?", True),
    ("Convert 3 litres to gallons", "Convert 3 gallons to litres", True),
    ("How do I get from Paris to Brussels by train?",
     "How do I get from Brussels to Paris by train?", True),
    ("How do I sort a list in Python?", "How can I sort a list in Python?", False),
    ("What is the difference between jam and marmalade?",
     "What is the difference between marmalade and jam?", False),  # "and" is symmetric
    ("How do I delete a branch in git?", "How do I remove a branch in git?", False),  # synonyms
    ("After a meal, how long should I wait to swim?",
     "How long should I wait to swim after a meal?", False),  # a clause moved, not a swap
    ("How do I reverse a string in Python?",
     "What's the way to reverse a string using Python?", False),  # reworded in two places
])
def test_one_slot_swap(a: str, b: str, swap: bool) -> None:
    # Issue 20: a two-word swap around a pivot is refused by `role_swap` now (the pivot
    # shape also refused paraphrases that move a word); the verifier's verdict is checked.
    from cache.verifier import refused

    assert refused(a, b) is swap and refused(b, a) is swap


@pytest.mark.parametrize(("a", "b", "clash"), [
    ("How much can a checked bag weigh in kg?", "What is the weight limit in pounds?", True),
    ("How do I read a CSV file in Python?", "What's the way to load a CSV with Java?", True),
    ("How many kilometres is it from Berlin to Munich?",
     "What is the distance in km between Berlin and Munich?", False),  # one term, two spellings
    ("Convert 20 Celsius to Fahrenheit", "What is 20 Celsius in Fahrenheit?", False),
    ("How do I convert a glucose reading from mmol/L to mg/dL?",
     "What's the conversion from mg/dL to mmol/L for blood sugar?", True),  # order reversed
    ("Is Python or Java faster?", "Which is faster, Java or Python?", False),  # symmetric
    ("May I bring a power bank on the plane?", "Can I fly with a power bank?", False),
])
def test_contrasting_terms(a: str, b: str, clash: bool) -> None:
    # Issue 20: terms in the opposite order are refused by `role_swap` now (the term-order
    # rule also refused "5 kilometres to miles" / "how many miles are in 5 km").
    from cache.verifier import refused

    assert refused(a, b) is clash and refused(b, a) is clash


@pytest.mark.parametrize(("a", "b", "span"), [
    ("Is swimming better than cycling for bad knees?",
     "For bad knees and a bad lower back, is swimming better than cycling?", 2),
    ("How do I reverse a list in Python?",
     "How do I reverse a list in Python without changing the original list?", 3),
    ("How do I learn Python?", "How can I learn Python quickly?", 1),
    ("How do I learn Python?", "What is the best way to pick up Python?", 0),  # reworded
    ("How do I sort a list?", "How do I sort a list?", 0),
])
def test_added_span_counts_the_new_words_of_an_inserted_restriction(a: str, b: str,
                                                                     span: int) -> None:
    assert added_span(a, b) == span
    if span:
        assert added_span(b, a) == 0  # the longer text's words are not all in the shorter


def test_cache_labels_turn_narrowed_duplicates_into_scope_look_alikes() -> None:
    from cache.training import cache_labels

    pairs = [Pair("What subjects are studied in schools in England?",
                  "What subjects (core and electives) are studied in schools in England?", 1),
             Pair("How do I learn Python?", "How can I learn Python quickly?", 1),
             Pair("How do I learn Python?", "How do I learn Python for data science jobs?", 0)]
    out = cache_labels(pairs)
    assert [p.label for p in out] == [0, 1, 0]
    assert out[0].kind == "scope" and out[1] == pairs[1] and out[2] == pairs[2]


@pytest.mark.parametrize(("a", "b", "narrowed"), [
    ("How do I reverse a list in Python?",
     "How do I reverse a list in Python without changing the original list?", True),
    ("What are some examples of simple sentences?",
     "What are some examples of simple sentences with a simple subject and a compound "
     "predicate?", True),
    ("Is swimming better than cycling for bad knees?",  # two new words: left to the model
     "For bad knees and a bad lower back, is swimming better than cycling?", False),
    ("How do I learn Python?", "How can I learn Python quickly?", False),
    ("How do I learn Python?", "What is the best way to pick up Python?", False),
])
def test_a_restriction_of_three_words_added_to_an_equal_request_is_refused(
        a: str, b: str, narrowed: bool) -> None:
    from cache.verifier import refused

    assert refused(a, b) is narrowed and refused(b, a) is narrowed


@pytest.mark.parametrize(("a", "b"), [
    # a traded word that recurs elsewhere in the text (what role_swap cannot judge)
    ("The bag says 1 part cement, 2 parts sand. If I use 2 buckets of cement, how many "
     "buckets of sand do I need?", "The bag says 1 part cement, 2 parts sand. If I use 2 "
     "buckets of sand, how many buckets of cement do I need?"),
    ("A bag has 3 red marbles and 5 blue ones; what is the chance I pick a red one",
     "A bag has 3 blue marbles and 5 red ones; what is the chance I pick a red one"),
    # parts of several words, numbers
    ("I do 30 minutes of cardio first and then lift weights. Is that the right order?",
     "I lift weights first and then do 30 minutes of cardio. Is that the right order?"),
    ("Let a role in account 111111111111 assume a role in account 222222222222",
     "Let a role in account 222222222222 assume a role in account 111111111111"),
])
def test_exchanged_parts_are_refused(a: str, b: str) -> None:
    from cache.verifier import refused

    assert exchanged(a, b) and exchanged(b, a) and refused(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("Should I drink tea or coffee?", "Should I drink coffee or tea?"),
    ("Compare the iPhone 15 and the Pixel 8", "Compare the Pixel 8 and the iPhone 15"),
    ("I like apples. I hate pears.", "I hate pears. I like apples."),
    ("If it rains, cancel the picnic", "Cancel the picnic, if it rains"),
    ("Convert 5 km to miles", "Convert 5 km into miles"),
])
def test_symmetric_or_moved_parts_are_not_exchanges(a: str, b: str) -> None:
    assert not exchanged(a, b) and not exchanged(b, a)
