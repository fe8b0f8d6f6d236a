"""Pair features for the verifier: what a cosine similarity cannot see.

Look-alike prompts ("turn on dark mode" / "turn off dark mode", "what is
2+2" / "what is 2+3") sit at cosine 0.9+ because they share nearly every
token. What tells them apart is small and lexical: a number that differs, a
negation on one side only, a polarity word swapped for its opposite, words
that only one side has. These features, beside the element-wise products
and differences of the two embeddings, are the verifier's input.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")

STOPWORDS = frozenset(re.findall(r"\S+", """
    a an the is are was were be been being am do does did to of in on at for with by from and
    or as it its this that these those i me my we our you your he she his her they them their
    what which who whom how why when where can could should would will shall may might must
    have has had there here into about than then so if any some such
"""))
NEGATIONS = frozenset(re.findall(r"\S+", """
    not no never none nothing nobody cannot can't don't doesn't didn't isn't aren't wasn't
    weren't won't wouldn't shouldn't couldn't without neither nor
"""))
_OPPOSITES = [
    ("on", "off"), ("up", "down"), ("in", "out"), ("increase", "decrease"), ("gain", "lose"),
    ("best", "worst"), ("good", "bad"), ("before", "after"), ("buy", "sell"), ("enable", "disable"),
    ("open", "close"), ("start", "stop"), ("max", "min"), ("maximum", "minimum"), ("more", "less"),
    ("add", "remove"), ("true", "false"), ("yes", "no"), ("positive", "negative"),
    ("male", "female"), ("men", "women"), ("man", "woman"), ("old", "new"), ("high", "low"),
    ("higher", "lower"), ("first", "last"), ("win", "lose"), ("rich", "poor"), ("hot", "cold"),
    ("love", "hate"), ("like", "dislike"), ("pros", "cons"), ("advantages", "disadvantages"),
    ("import", "export"), ("upload", "download"), ("light", "dark"), ("fast", "slow"),
    ("easy", "hard"), ("cheap", "expensive"), ("big", "small"), ("long", "short"),
    ("top", "bottom"), ("left", "right"), ("north", "south"), ("east", "west"),
    ("encrypt", "decrypt"), ("lock", "unlock"), ("mute", "unmute"), ("show", "hide"),
    ("include", "exclude"), ("inside", "outside"), ("above", "below"), ("early", "late"),
    ("legal", "illegal"), ("possible", "impossible"), ("happy", "sad"), ("weight", "height"),
]
OPPOSITE = {a: b for a, b in _OPPOSITES} | {b: a for a, b in _OPPOSITES}

N_LEXICAL = 16
N_RARITY = 6
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def words(text: str) -> list[str]:
    """Lower-case word tokens (numbers kept whole)."""
    return _WORD.findall(text.lower())


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _trigrams(text: str) -> set[str]:
    t = " " + " ".join(words(text)) + " "
    return {t[i : i + 3] for i in range(max(len(t) - 2, 1))}


def lexical(a: str, b: str) -> np.ndarray:
    """`N_LEXICAL` features of one text pair, symmetric in a and b."""
    wa, wb = words(a), words(b)
    sa, sb = set(wa), set(wb)
    ca, cb = sa - STOPWORDS, sb - STOPWORDS
    only = ca ^ cb
    na, nb = set(_NUMBER.findall(a)), set(_NUMBER.findall(b))
    nega, negb = len(sa & NEGATIONS), len(sb & NEGATIONS)
    flips = sum(1 for w in sa - sb if OPPOSITE.get(w) in sb - sa)
    first_same = float(bool(wa) and bool(wb) and wa[0] == wb[0])
    la, lb = max(len(wa), 1), max(len(wb), 1)
    return np.array(
        [
            _jaccard(sa, sb),
            _jaccard(ca, cb),
            _jaccard(_trigrams(a), _trigrams(b)),
            len(only) / max(len(ca | cb), 1),
            min(len(only), 6) / 6.0,
            float(na != nb),
            float(bool(na) and bool(nb) and na != nb),
            len(na ^ nb) / max(len(na | nb), 1),
            float((nega > 0) != (negb > 0)),
            min(flips, 3) / 3.0,
            first_same,
            min(la, lb) / max(la, lb),
            abs(la - lb) / 20.0,
            float(" ".join(wa) == " ".join(wb)),
            float(sa == sb),
            min(la + lb, 80) / 80.0,
        ],
        dtype=np.float32,
    )


def same_text(a: str, b: str) -> bool:
    """The same words in the same order (case, spacing and punctuation aside)."""
    return words(a) == words(b)


def contradicts(a: str, b: str) -> bool:
    """A look-alike that asks something else: a differing number, a negation on one
    side only, or a polarity word swapped for its opposite."""
    sa, sb = set(words(a)), set(words(b))
    if set(_NUMBER.findall(a)) != set(_NUMBER.findall(b)):
        return True
    if bool(sa & NEGATIONS) != bool(sb & NEGATIONS):
        return True
    return any(OPPOSITE.get(w) in sb - sa for w in sa - sb)


def stem(word: str) -> str:
    """A crude suffix strip, so "hostess"/"hostesses" or "grow"/"growing" count as one word."""
    for suffix in _SUFFIXES:
        if len(word) > 4 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def stems(text: str) -> set[str]:
    """The set of stemmed words of `text`."""
    return {stem(w) for w in words(text)}


class Rarity:
    """Inverse document frequency of stemmed words, learnt from training questions.

    A pair that differs in a rare word ("Python" vs "Java") differs in meaning;
    one that differs in a common word ("best" vs "good") often does not.
    """

    def __init__(self, table: dict[str, float], unseen: float) -> None:
        self.table = table
        self.unseen = unseen

    @classmethod
    def fit(cls, texts: list[str]) -> Rarity:
        """Learn the table from distinct texts."""
        df: Counter[str] = Counter()
        for text in set(texts):
            df.update(stems(text))
        n = len(set(texts))
        table = {w: math.log((n + 1) / (c + 1)) for w, c in df.items() if c > 1}
        return cls(table, math.log((n + 1) / 2))

    def features(self, a: str, b: str) -> np.ndarray:
        """`N_RARITY` features: shared vs unshared rare-word mass."""
        sa, sb = stems(a), stems(b)
        ua, ub = sa - sb, sb - sa
        ia = sum(self.table.get(w, self.unseen) for w in ua)
        ib = sum(self.table.get(w, self.unseen) for w in ub)
        shared = sum(self.table.get(w, self.unseen) for w in sa & sb)
        top = max((self.table.get(w, self.unseen) for w in ua | ub), default=0.0)
        total = ia + ib + shared + 1e-6
        return np.array([shared / total, min(ia, ib), max(ia, ib), top, len(ua) + len(ub),
                         shared], dtype=np.float32)


def pair_features(texts_a: list[str], vecs_a: np.ndarray, texts_b: list[str],
                  vecs_b: np.ndarray, rarity: Rarity) -> np.ndarray:
    """Feature rows for pairs: [cos, lexical, rarity, u*v, |u-v|]."""
    u = np.asarray(vecs_a, dtype=np.float32)
    v = np.asarray(vecs_b, dtype=np.float32)
    cos = np.sum(u * v, axis=1, keepdims=True)
    if not texts_a:
        return np.zeros((0, 1 + N_LEXICAL + N_RARITY + 2 * u.shape[1]), dtype=np.float32)
    lex = np.stack([np.concatenate([lexical(a, b), rarity.features(a, b)])
                    for a, b in zip(texts_a, texts_b, strict=True)])
    return np.concatenate([cos, lex, u * v, np.abs(u - v)], axis=1).astype(np.float32)
