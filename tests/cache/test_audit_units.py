"""AuditBook: audited verdicts move one tenant's bound, and only that tenant's."""

from __future__ import annotations

import pytest

from cache.audit import AuditBook, AuditConfig, clopper_pearson

DELTA = 0.05


def threshold_for(delta: float) -> float:
    """A stand-in for the verifier's calibrated bound: a smaller δ needs more."""
    return 1.0 - delta


def test_clopper_pearson_limits() -> None:
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    low, high = clopper_pearson(0, 59)
    assert low == 0.0 and high == pytest.approx(1 - 0.05 ** (1 / 59))
    low, high = clopper_pearson(10, 100)
    assert 0.05 < low < 0.1 < high < 0.17


def test_a_tenant_past_delta_tightens_within_a_few_audits_and_no_other_tenant_moves() -> None:
    """Traffic where one audited hit in three is wrong (share 0.33 against δ 0.05)."""
    book = AuditBook(DELTA, threshold_for, AuditConfig(window=200, min_verdicts=20))
    shipped = book.threshold("acme")
    audits = 0
    while book.estimate("acme").step == 0:
        audits += 1
        assert audits <= 15, "the bound never tightened"
        book.record("acme", hit=True, same=audits % 3 != 0)
        book.record("globex", hit=True, same=True)
    tightened = book.estimate("acme")
    assert tightened.effective_delta == DELTA / 2 and tightened.verdicts == 0  # fresh window
    assert book.threshold("acme") > shipped
    assert book.threshold("globex") == shipped and book.estimate("globex").step == 0
    assert audits == 6  # the stated figure: 2 wrong of 6, a lower limit of 0.063 > δ


def test_the_bound_relaxes_only_on_enough_good_verdicts() -> None:
    book = AuditBook(DELTA, threshold_for, AuditConfig(window=200, min_verdicts=20))
    for _ in range(2):  # two wrong of two: the lower limit (0.22) is past δ
        book.record("acme", hit=True, same=False)
    assert book.estimate("acme").step == 1
    good = 0
    while book.estimate("acme").step == 1:
        good += 1
        assert good <= 100
        book.record("acme", hit=True, same=True)
    assert good == 59  # the first n with a 90 % upper limit of 0/n under 0.05
    assert book.threshold("acme") == threshold_for(DELTA)


def test_near_misses_are_counted_apart_and_move_no_bound() -> None:
    book = AuditBook(DELTA, threshold_for)
    for same in (True, True, False):
        book.record("acme", hit=False, same=same)
    e = book.estimate("acme")
    assert (e.near_misses, e.near_misses_same, e.verdicts, e.step) == (3, 2, 0, 0)


def test_tightening_stops_at_max_steps() -> None:
    book = AuditBook(DELTA, threshold_for, AuditConfig(max_steps=2))
    for _ in range(30):
        book.record("acme", hit=True, same=False)
    assert book.estimate("acme").step == 2
