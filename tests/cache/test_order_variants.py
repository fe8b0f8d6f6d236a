"""The word-order training variants: swaps change who does what, moves keep it."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cache.alignment import role_swap
from cache.order_variants import (
    add_courtesy,
    change_scope,
    move_clause,
    order_variants,
    request_form,
    swap_two,
)
from cache.pairs import Pair


def _words(text: str) -> Counter[str]:
    return Counter(text.lower().strip("?.!").replace(",", "").split())


@pytest.mark.parametrize(("text", "swapped"), [
    ("Transfer 300 dollars from my checking account to my savings account.",
     "Transfer 300 dollars from my savings account to my checking account."),
    ("Is Rust faster than Go for web servers?", "Is Go faster than Rust for web servers?"),
    ("Did Alice hire Bob last year?", "Did Bob hire Alice last year?"),
    ("Use tabs instead of spaces in the Makefile.",
     "Use spaces instead of tabs in the Makefile."),
])
def test_two_things_trade_places_and_the_rule_sees_it(text: str, swapped: str) -> None:
    out = swap_two(text, random.Random(0))
    assert out == swapped
    assert _words(out) == _words(text)
    assert role_swap(text, out)


@pytest.mark.parametrize("text", [
    "What is the difference between Python and Java?",
    "Compare Rust with Go for web servers.",
    "What is 2+3?",
    "Which empire was larger, the Mongol Empire or the British Empire?",
])
def test_symmetric_frames_are_not_swapped(text: str) -> None:
    assert all(swap_two(text, random.Random(s)) is None for s in range(10))


def test_scope_and_quantity_changes() -> None:
    rng = random.Random(0)
    assert change_scope("Run all the tests before merging.", rng) == \
        "Run some of the tests before merging."
    assert change_scope("I land in Rome at 9 pm, which train should I take?", rng) == \
        "I land in Rome at 9 am, which train should I take?"
    assert change_scope("My daughter is 6 months old, can she eat eggs?", rng) == \
        "My daughter is 6 weeks old, can she eat eggs?"
    assert change_scope("What is the capital of France?", rng) is None  # no "only" in a question


def test_a_moved_clause_keeps_every_word() -> None:
    rng = random.Random(0)
    lead = "If I quantise it to 4 bits, will a 70B model fit on one H100?"
    moved = move_clause(lead, rng)
    assert moved == "Will a 70B model fit on one H100 if I quantise it to 4 bits?"
    assert move_clause(moved, rng) == lead
    assert not role_swap(lead, moved)


def test_request_forms_and_courtesy() -> None:
    rng = random.Random(0)
    assert request_form("What is the capital of France?", rng) == \
        "Tell me what the capital of France is."
    assert request_form("Can you write a haiku about autumn?", rng) == \
        "Please write a haiku about autumn."
    assert request_form("How do I reverse a list in Python?", rng).endswith(
        "how to reverse a list in Python.")
    assert "what is 2+3?" in add_courtesy("What is 2+3?", random.Random(3)).lower()


def test_variants_are_labelled_by_kind() -> None:
    pairs = [Pair("Transfer 300 dollars from my checking account to my savings account.",
                  "Move 300 dollars from checking to savings.", 1),
             Pair("If it rains, should I cancel the picnic?",
                  "Should the picnic be cancelled when it rains?", 1)]
    out = order_variants(pairs, seed=0, per_text=1.0)
    kinds = {p.kind: p.label for p in out}
    assert kinds.get("swap", 0) == 0 and kinds.get("clause") == 1
    assert all(p.a in {q.a for q in pairs} for p in out)
    assert all(p.label == (p.kind in {"clause", "request", "courtesy"}) for p in out)
