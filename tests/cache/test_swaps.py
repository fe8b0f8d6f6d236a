"""Issue 20's must-show: written two-entity swaps of several shapes (adjacent, far apart,
subject and object, sizes, branches, places, amounts) never hit at δ 0.05, while their
clause-reordered paraphrases do (real MiniLM, FAISS and the shipped verifier).

The rules refuse every swap here and none of the reorderings; whether a reordering
*hits* is the model's call. The verifier of 2026-12-08 (written realistic look-alikes,
QQP's narrowed duplicates read as scope look-alikes, 3000 steps) scores all eight over its
δ 0.05 bound (0.368): 0.39-0.97. The lowest sits 0.02 over it, within what int8 kernels
of another CPU may move, so it is listed apart (`NEAR_THE_BOUND`, with its score) and
only its swap is asserted. The 2000-step run scored it 0.34 under 0.414, the verifier of
2026-12-07 all eight over 0.481."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cache.alignment import role_swap
from cache.core import SemanticCache
from cache.keys import Sampling, Scope
from cache.verifier import refused

MakeCache = Callable[..., SemanticCache]
SCOPE = Scope(tenant="acme", sampling=Sampling(temperature=0.0))

# (cached, two-entity swap, clause-reordered paraphrase)
SWAPS = [
    ("Transfer 300 dollars from my checking account to my savings account.",
     "Transfer 300 dollars from my savings account to my checking account.",
     "To my savings account, transfer 300 dollars from my checking account."),
    ("How long is the train from Vienna to Prague?",
     "How long is the train from Prague to Vienna?",
     "From Vienna to Prague, how long is the train?"),
    ("Did Marie Curie teach Paul Langevin?",
     "Did Paul Langevin teach Marie Curie?",
     "Was Paul Langevin taught by Marie Curie?"),
    ("Rebase the feature branch onto main before opening the pull request.",
     "Rebase main onto the feature branch before opening the pull request.",
     "Before opening the pull request, rebase the feature branch onto main."),
    ("Will a 70B model fit on one H100 if I quantise it to 4 bits?",
     "Will one H100 fit on a 70B model if I quantise it to 4 bits?",
     "If I quantise it to 4 bits, will a 70B model fit on one H100?"),
    ("Is Norway colder in January than Sweden is in February?",
     "Is Sweden colder in January than Norway is in February?",
     "In January, is Norway colder than Sweden is in February?"),
    ("Should the client retry the request when the server returns a timeout?",
     "Should the server retry the request when the client returns a timeout?",
     "When the server returns a timeout, should the client retry the request?"),
    ("Does the landlord owe the tenant the deposit after the lease ends?",
     "Does the tenant owe the landlord the deposit after the lease ends?",
     "After the lease ends, does the landlord owe the tenant the deposit?"),
]


@pytest.mark.parametrize(("stored", "swap", "paraphrase"), SWAPS)
def test_rules_refuse_the_swap_and_not_the_reordering(stored: str, swap: str,
                                                      paraphrase: str) -> None:
    assert refused(stored, swap) and refused(swap, stored), swap
    assert not refused(stored, paraphrase) and not refused(paraphrase, stored), paraphrase


def test_role_swap_spares_symmetric_and_moved_clauses() -> None:
    assert not role_swap("Compare Python and Java", "Compare Java and Python")
    assert not role_swap("If it rains, should I cancel the picnic?",
                         "Should I cancel the picnic if it rains?")
    assert role_swap("Does sound travel faster in water than in air?",
                     "Does sound travel faster in air than in water?")


# Reorderings the shipped verifier scores within 0.02 of the δ 0.05 bound (score / bound):
# another CPU's int8 kernels may put them on either side, so only their swaps are asserted.
NEAR_THE_BOUND = {
    "To my savings account, transfer 300 dollars from my checking account.": "0.39 / 0.368",
}


@pytest.mark.slow
@pytest.mark.parametrize(("stored", "swap", "paraphrase"), SWAPS)
async def test_swap_misses_and_reordering_hits_at_strict_delta(
        make_cache: MakeCache, stored: str, swap: str, paraphrase: str) -> None:
    cache = make_cache(delta=0.05)
    await cache.store(SCOPE, stored, "answer to " + stored)
    missed = await cache.lookup(SCOPE, swap)
    assert not missed.hit, (swap, missed.probability, cache.threshold)
    if paraphrase in NEAR_THE_BOUND:
        return
    hit = await cache.lookup(SCOPE, paraphrase)
    assert hit.hit, (paraphrase, hit.probability, cache.threshold)
