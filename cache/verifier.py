"""The verifier: P(a hit on this cached prompt is right), and its δ-derived bound.

The cache's FAISS search proposes the few nearest cached prompts; the
verifier reads each (cached, asked) pair with a fine-tuned MiniLM
cross-encoder (`cache.crossencoder`, ONNX Runtime int8) and scores it. A
candidate is judged against its rivals in the same lookup: when the runner-up
scores almost as high, the query sits between two cached questions and a hit
on either is a guess, so the score is lowered by the shortfall of the margin
(`RIVAL_MARGIN`). The score is mapped to (0, 1) by a logistic; what makes it a
bound is calibration (`cache.calibration`): the shipped outcomes of the
clean calibration parts (or an operator's own, `cmesh cache calibrate`) give
the lowest score whose wrong-hit share among hits is at most δ with 90 %
confidence.

Rules sit above the model: the same text, case and whitespace aside, is
the same question (probability 1; every operator, sign, digit and symbol
counts, so "What is 2+2?" is not an exact repeat of "What is 2-2?"); a
pair whose numbers or operators disagree (`contradicts`) is not
(probability 0): a number is one token among many to the cross-encoder, and
a wrong sum is served with full confidence; nor is a pair with the
look-alike's shape (`cache.alignment.one_slot_swap`: the same wording with
one place where content words differ, and not by a known synonym), nor one
where a term is replaced by another of its group ("kg" / "pounds", "Python" /
"Java", anywhere in a reworded sentence: `contrasting_terms`), nor one where
two things trade roles, far apart or not ("from checking to savings" / "from
savings to checking": `role_swap`): a small
cross-encoder sees "tap water" / "bottled water" as close as "12 times 8" /
"12 multiplied by 8". A refused candidate still takes part as a rival; exact
repeats skip the model.

The artifact is a folder: `model.int8.onnx` + `tokenizer.json` (the
cross-encoder), `calibration.npz` (calibration outcomes), `verifier.json`
(metadata, bounds for common δ, figures), `stage.json` (the logistic stage),
`training_text_hashes.npy`.
"""

from __future__ import annotations

import json
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cache.alignment import (
    contrasting_terms,
    exchanged,
    feature_matrix,
    one_slot_swap,
    role_swap,
    scope_added,
)
from cache.calibration import Bound, Outcomes, shifted_bound
from cache.crossencoder import OnnxCrossEncoder

ARTIFACT_DIR = Path(__file__).parent / "artifacts" / "verifier"
RIVAL_MARGIN = 4.0
CONFIDENCE = 0.9


def same_text(a: str, b: str) -> bool:
    """The verifier's exact-repeat rule: equal after folding case and whitespace only.

    Written here on its own (not shared with `cache.pairs`), so evaluation's
    ground truth never comes from the function it is checking.
    """
    return a.casefold().split() == b.casefold().split()


_NUMBER = re.compile(r"([£$€]\s?)?(\d+(?:[.,]\d+)*)([kK]\b)?")
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+")
_OPERATOR = re.compile(
    r"(?:(?<=[\s\d(])|^)(===|!==|>=|<=|!=|==|[-+*/^%]=|[-+*/^<>=%])(?=[\s\w(.?]|$)")


def numbers(text: str) -> list[str]:
    """The numbers of `text`, written one way: thousands separators dropped ("1,200" and
    "1200"), a currency amount in thousands multiplied out ("£48k" and "£48,000")."""
    out = []
    for m in _NUMBER.finditer(text):
        currency, digits, thousands = m.groups()
        if _GROUPED.fullmatch(digits):
            digits = digits.replace(",", "")
        if currency and thousands and digits.isdigit():
            digits = str(int(digits) * 1000)
        out.append(digits)
    return out


def operators(text: str) -> list[str]:
    """The operators of `text`, less the signs that only look like one after a number: a
    percent sign ("25%"), a hyphen into a word ("550-watt", "3-day") and a trailing plus
    ("80+ Bronze", "18+")."""
    out = []
    for m in _OPERATOR.finditer(text):
        op, before = m.group(1), text[m.start() - 1] if m.start() else ""
        after = text[m.end():m.end() + 1]
        if before.isdigit() and (op == "%" or (op == "-" and after.isalpha())
                                 or (op == "+" and not (after.isdigit() or after == "("))):
            continue
        out.append(op)
    return out


def contradicts(a: str, b: str) -> bool:
    """Two texts that cannot ask the same thing: as many numbers on each side but not the
    same ones ("15 % of 200" / "25 % of 200"), or operators on both sides that differ
    ("2+2" / "2-2", "x > 5" / "x < 5", "-3 times -4" / "-3 times 4"). A number spelt
    out on one side ("3 to the power of 2" / "3 squared"), words for an operator
    ("2 plus 2" / "2+2"), or a number written another way (`numbers`, `operators`)
    trigger neither."""
    na, nb = numbers(a), numbers(b)
    if na and len(na) == len(nb) and sorted(na) != sorted(nb):
        return True
    oa, ob = operators(a), operators(b)
    return bool(oa) and bool(ob) and sorted(oa) != sorted(ob)


SCOPE_REFUSED = 3
"""New content words in one inserted span that make the longer request another one
("What are some examples of simple sentences?" / "... with a simple subject and a
compound predicate?"). Measured by `cmesh cache rules` (2026-12-08), paraphrases /
look-alikes refused at 3 words: written training pairs 3 / 92, QQP's calibration part
19 / 33 (Quora's duplicates include such narrower questions), the hand-written and
written calibration parts 0 / 0; at 2 words QQP's part gave 94 / 74."""


def refused(a: str, b: str) -> bool:
    """The rules that refuse a pair whatever the model says: numbers or operators that
    disagree, the look-alike's shape, a term of a group replaced by another, two things
    that trade roles (`role_swap`, either way round), two parts of an equal wording that
    trade places (`exchanged`), or a restriction of `SCOPE_REFUSED` or more content words
    added to an otherwise equal request. Each is kept because it refuses far more
    look-alikes than paraphrases on the calibration parts and the written pairs
    (`cmesh cache rules`; `exchanged`, 2026-12-08: 161 look-alikes, no paraphrase)."""
    return (contradicts(a, b) or one_slot_swap(a, b) or contrasting_terms(a, b)
            or role_swap(a, b) or role_swap(b, a) or exchanged(a, b)
            or scope_added(a, b, SCOPE_REFUSED))


def stage_inputs(logits: np.ndarray, cached: list[str], asked: list[str],
                 sims: np.ndarray) -> np.ndarray:
    """The stage's inputs: cross-encoder logit, MiniLM cosine, alignment features, the
    logit and cosine times the "same frame, one content word changed" flag, and the
    logit and cosine times the pair's length (on long statements the cosine says more
    and a small cross-encoder less than on short questions)."""
    feats = feature_matrix(cached, asked)
    clipped = np.clip(logits, -12, 12)[:, None]
    cos = np.asarray(sims, np.float64)[:, None]
    words = np.array([min(len(a.split()) + len(b.split()), 80) / 80.0
                      for a, b in zip(cached, asked, strict=True)])[:, None]
    return np.concatenate([clipped, cos, feats, clipped * feats[:, 5:6], cos * feats[:, 5:6],
                           words, clipped * words, cos * words], axis=1)


def stage_logits(weights: np.ndarray, logits: np.ndarray, cached: list[str],
                 asked: list[str], sims: np.ndarray) -> np.ndarray:
    """The logistic stage over `stage_inputs` (weights then bias)."""
    return stage_inputs(logits, cached, asked, sims) @ weights[:-1] + weights[-1]


def rival_scores(logits: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row's logit, less the shortfall of its margin over the best rival of the
    same lookup below `RIVAL_MARGIN`."""
    out = logits.astype(np.float64).copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            continue
        for i in idx:
            rival = logits[idx[idx != i]].max()
            out[i] -= max(0.0, RIVAL_MARGIN - (logits[i] - rival))
    return out


class CrossVerifier:
    """Cross-encoder scores judged against rivals, with calibration outcomes for bounds.

    Thread-safe for one caller at a time per ONNX session; the cache calls it
    from its lookup worker. `threads` caps ONNX Runtime's own pool.
    """

    def __init__(self, folder: str | Path | None = None, calibration: Outcomes | None = None,
                 threads: int = 1) -> None:
        self.folder = Path(folder) if folder else ARTIFACT_DIR
        self.model = OnnxCrossEncoder(self.folder, threads=threads)
        meta_path = self.folder / "verifier.json"
        self.meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() \
            else {}
        stage_path = self.folder / "stage.json"
        self.stage: np.ndarray | None = np.array(json.loads(stage_path.read_text())["weights"]) \
            if stage_path.is_file() else None
        if calibration is None and (self.folder / "calibration.npz").is_file():
            calibration = Outcomes.load(self.folder / "calibration.npz")
        self.calibration = calibration
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: str | Path | None = None, calibration: str | Path | None = None,
             threads: int = 1) -> CrossVerifier:
        """The artifact in `folder` (default: shipped), with an operator's calibration
        table (`cmesh cache calibrate`) in place of the shipped one if given."""
        outcomes = Outcomes.load(Path(calibration)) if calibration else None
        return cls(folder, outcomes, threads)

    def with_calibration(self, calibration: Outcomes) -> CrossVerifier:
        """The same model with other calibration outcomes (shares the ONNX session)."""
        other = object.__new__(CrossVerifier)
        other.__dict__.update(self.__dict__)
        other.calibration = calibration
        return other

    def scores(self, queries: list[str], candidates: list[str], sims: np.ndarray,
               groups: np.ndarray) -> np.ndarray:
        """Rival-aware scores of (query, candidate) rows; +inf for an exact repeat, -inf
        for a pair the rules refuse (`refused`)."""
        if not queries:
            return np.zeros(0)
        groups = np.asarray(groups)
        repeat = np.array([same_text(q, c) for q, c in zip(queries, candidates, strict=True)],
                          dtype=bool)
        fixed = np.full(len(queries), np.nan)  # an exact repeat settles its whole lookup
        fixed[np.isin(groups, groups[repeat])] = -np.inf  # its rivals cannot beat it
        fixed[repeat] = np.inf
        rejected = np.array([np.isnan(f) and refused(q, c)
                             for f, q, c in zip(fixed, queries, candidates, strict=True)],
                            dtype=bool)
        alone = np.bincount(groups)[groups] == 1
        fixed[rejected & alone] = -np.inf  # a refused candidate with no rival needs no model
        todo = np.flatnonzero(np.isnan(fixed))
        logits = np.zeros(len(queries))
        with self._lock:
            # one ONNX call per lookup: int8 dynamic quantisation scales activations over
            # the whole call, so batching lookups together would let one lookup's answer
            # depend on what else was asked at the same moment
            for g in np.unique(groups[todo]):
                idx = todo[groups[todo] == g]
                logits[idx] = self.model.logits([candidates[i] for i in idx],
                                                [queries[i] for i in idx])
        if self.stage is not None and len(todo):
            logits[todo] = stage_logits(self.stage, logits[todo],
                                        [candidates[i] for i in todo],
                                        [queries[i] for i in todo], np.asarray(sims)[todo])
        # a refused candidate still counts as a rival: when the nearest entry differs from
        # the query in one word, a second entry that reads alike is no safer a hit
        logits = np.where(np.isnan(fixed), logits, np.clip(fixed, -1e6, 1e6))
        out = rival_scores(logits, groups)
        out[rejected] = -np.inf
        return np.where(np.isnan(fixed), out, fixed)

    def probabilities(self, queries: list[str], query_vecs: np.ndarray,
                      candidates: list[str], candidate_vecs: np.ndarray,
                      sims: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """P-like score in [0, 1] per row (1 for an exact repeat); the bound is set on it."""
        s = self.scores(queries, candidates, sims, groups)
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-s))

    def bound(self, delta: float) -> Bound:
        """The derived bound for `delta`; without calibration outcomes only exact repeats hit."""
        if self.calibration is None:
            return Bound(delta, 1.0, 0.0, 0.0, 0.0, 0)
        return _bound(self.calibration, round(float(delta), 6))

    def threshold(self, delta: float) -> float:
        """The probability a hit needs for a wrong-hit share of at most `delta`."""
        return self.bound(delta).threshold


FeatureVerifier = CrossVerifier  # the name importers used before the cross-encoder


@lru_cache(maxsize=256)
def _bound(outcomes: Outcomes, delta: float) -> Bound:
    return shifted_bound(outcomes, delta, CONFIDENCE)
