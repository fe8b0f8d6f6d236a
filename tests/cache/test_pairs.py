"""The split (every question text in one part) and the scoring rule (duplicate clusters)."""

from __future__ import annotations

import json
from pathlib import Path

from cache.pairs import Pair, Scorer, halves, load_pairs, normalise, overlap, parts, text_hash

DATA = Path(__file__).resolve().parents[2] / "data"


def test_no_question_text_in_two_parts_of_qqp() -> None:
    pairs = load_pairs(DATA / "gptcache" / "qqp_pairs_dev.json.gz")
    where: dict[str, set[str]] = {}
    for pair, part in zip(pairs, parts(pairs), strict=True):
        for text in (pair.a, pair.b):
            where.setdefault(normalise(text), set()).add(part)
    crossing = [t for t, found in where.items() if len(found) > 1]
    assert crossing == []
    sizes = {p: sum(1 for q in parts(pairs) if q == p) for p in ("train", "calib", "eval")}
    assert 0.5 < sizes["train"] / len(pairs) < 0.7 and sizes["eval"] > sizes["calib"] > 0


def test_split_ignores_file_order() -> None:
    pairs = load_pairs(DATA / "gptcache" / "mock_data.json")
    forward = dict(zip(pairs, parts(pairs), strict=True))
    backward = dict(zip(pairs[::-1], parts(pairs[::-1]), strict=True))
    assert forward == backward


def test_normalise_keeps_operators_signs_and_symbols() -> None:
    assert normalise("  What IS 2+2? ") == normalise("what is 2+2?")
    for a, b in [("What is 2+2?", "What is 2-2?"), ("x > 5", "x < 5"), ("-5", "5"),
                 ("10 km", "10 kg"), ("a*b", "a/b"), ("$5", "€5"), ("1.5", "15")]:
        assert normalise(a) != normalise(b)


def test_scorer_on_hand_made_clusters(tmp_path: Path) -> None:
    rows = [
        # cluster 1: A ~ B ~ C (through B), D is a different question
        {"text_a": "How do I boil an egg?", "text_b": "How to boil an egg?", "label": 1},
        {"text_a": "How to boil an egg?", "text_b": "What's the way to boil eggs?", "label": 1},
        {"text_a": "How do I boil an egg?", "text_b": "How do I fry an egg?", "label": 0},
        # cluster 2 alone
        {"text_a": "What is 2+2?", "text_b": "What does 2 plus 2 equal?", "label": 1},
        {"text_a": "What is 2+2?", "text_b": "What is 2-2?", "label": 0},
    ]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows))
    scorer = Scorer(load_pairs(path))
    assert scorer.right("What's the way to boil eggs?", "How do I boil an egg?")  # transitively
    assert scorer.right("how do i  BOIL an egg?", "How do I boil an egg?")  # own text
    assert not scorer.right("How do I fry an egg?", "How do I boil an egg?")  # label 0 only
    assert not scorer.right("What is 2-2?", "What is 2+2?")
    assert not scorer.right("What does 2 plus 2 equal?", "How to boil an egg?")
    assert scorer.right("What does 2 plus 2 equal?", "What is 2+2?")
    assert scorer.right("What is 2-2?", "what is 2-2?")  # an exact repeat is right


def test_halves_and_overlap() -> None:
    pairs = load_pairs(DATA / "cache" / "handwritten_pairs.json")
    calib, ev = halves(pairs, "calib"), halves(pairs, "eval")
    assert len(calib) + len(ev) == len(pairs) and min(len(calib), len(ev)) > len(pairs) // 3
    texts = {normalise(t) for p in calib for t in (p.a, p.b)}
    assert not texts & {normalise(t) for p in ev for t in (p.a, p.b)}
    seen = overlap(ev, {text_hash(calib[0].a), text_hash(ev[0].a)})
    assert seen["texts_in_training"] == 1 and seen["pairs_touching_training"] >= 1


def test_handwritten_data_is_balanced() -> None:
    pairs = load_pairs(DATA / "cache" / "handwritten_pairs.json")
    assert sum(p.label for p in pairs) >= 150 and sum(1 - p.label for p in pairs) >= 150
    assert {p.domain for p in pairs} >= {"coding", "health", "travel", "finance", "maths",
                                          "history", "everyday"}
    assert all(isinstance(p, Pair) and p.kind for p in pairs)


def test_written_training_pairs_share_no_text_with_calibration_or_evaluation_files() -> None:
    from cache.training import WRITTEN_DIR, written_pairs

    written = [p for f in sorted(WRITTEN_DIR.glob("*.json")) for p in load_pairs(f)]
    assert sum(p.label for p in written) >= 300 and sum(1 - p.label for p in written) >= 300
    mine = {normalise(t) for p in written for t in (p.a, p.b)}
    for path in (DATA / "cache" / "handwritten_pairs.json",
                 DATA / "gptcache" / "mock_data.json"):
        held = {normalise(t) for p in load_pairs(path) for t in (p.a, p.b)}
        assert not mine & held, path.name
    encoder, stage = written_pairs("encoder"), written_pairs("stage")
    assert len(encoder) + len(stage) == len(written) and len(stage) > len(written) // 10
    assert not {normalise(p.a) for p in encoder} & {normalise(p.a) for p in stage}
