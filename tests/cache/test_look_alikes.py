"""Issue 10's exact-repeat rule: a look-alike that changes an operator, a sign, a comparison
or a unit is a miss at δ = 0.05 (real MiniLM, FAISS and the shipped verifier)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cache.core import SemanticCache
from cache.keys import Sampling, Scope
from cache.verifier import same_text

MakeCache = Callable[..., SemanticCache]
SCOPE = Scope(tenant="acme", sampling=Sampling(temperature=0.0))

LOOK_ALIKES = [
    ("What is 2+2?", "What is 2-2?"),
    ("What is 7*3?", "What is 7/3?"),
    ("What is 10 - 4?", "What is 10 + 4?"),
    ("Solve x + 3 = 5", "Solve x - 3 = 5"),
    ("What is -5 squared?", "What is 5 squared?"),
    ("Is -3 greater than 2?", "Is 3 greater than 2?"),
    ("What is the absolute value of -12 + 4?", "What is the absolute value of 12 + 4?"),
    ("Is x > 5 when x is 7?", "Is x < 5 when x is 7?"),
    ("Is 0.5 > 0.25?", "Is 0.5 < 0.25?"),
    ("Filter rows where age >= 18", "Filter rows where age <= 18"),
    ("Is a greater than b if a=3 and b=2?", "Is a less than b if a=3 and b=2?"),
    ("Which is larger, 3/4 or 2/3?", "Which is smaller, 3/4 or 2/3?"),
    ("Convert 10 km to miles", "Convert 10 kg to pounds"),
    ("How many grams are in 2 cups of flour?", "How many ounces are in 2 cups of flour?"),
    ("What is 100 Fahrenheit in Celsius?", "What is 100 Celsius in Fahrenheit?"),
    ("How many metres is 5 feet?", "How many centimetres is 5 feet?"),
    ("How long does it take to walk 5 km?", "How long does it take to walk 5 miles?"),
    ("Convert 3 litres to gallons", "Convert 3 gallons to litres"),
    ("How many seconds are in 3 hours?", "How many minutes are in 3 hours?"),
    ("What is 20% of 50?", "What is 20% of 500?"),
    ("What is 2^10?", "What is 2^11?"),
    ("Round 3.14159 to 2 decimal places", "Round 3.14159 to 3 decimal places"),
]


def test_rule_keeps_every_symbol() -> None:
    for stored, asked in LOOK_ALIKES:
        assert not same_text(stored, asked)
    assert same_text("What is 2+2?", "  what is  2+2? ")


@pytest.mark.parametrize(("stored", "asked"), LOOK_ALIKES)
async def test_look_alike_misses_at_strict_delta(make_cache: MakeCache, stored: str,
                                                 asked: str) -> None:
    cache = make_cache(delta=0.05)
    await cache.store(SCOPE, stored, "answer to " + stored)
    result = await cache.lookup(SCOPE, asked)
    assert not result.hit, (stored, asked, result.probability, cache.threshold)
    assert (await cache.lookup(SCOPE, stored)).hit  # the exact repeat still hits
