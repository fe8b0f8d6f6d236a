"""Content-word alignment of a pair: what a look-alike changes and a paraphrase does not.

A look-alike keeps the cached question's word order and swaps one content
word ("months" -> "weeks", "fraction to a decimal" -> "decimal to a
fraction"); a paraphrase changes the form ("How long does the flu last?" /
"How many days does influenza usually last?") or only function words ("How
do I" / "How can I"). Aligning the two word sequences (difflib) shows which
kind of change a pair has; the verifier's stage weighs these features
beside the cross-encoder's score (`cache.verifier`).
"""

from __future__ import annotations

import difflib
import re

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
FUNCTION_WORDS = frozenset(re.findall(r"\S+", """
    a an the is are was were be been being am do does did to of in on at for with by from and
    or as it its this that these those i me my we our you your he she his her they them their
    what which who whom how why when where can could should would will shall may might must
    have has had there here into about than then so if any some such what's whats s please
    tell know way one get best good
"""))
N_FEATURES = 8


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "ed", "s"):
        if len(word) > 4 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


_PUNCTUATION = frozenset("?.,!:;'\"()[]")


def _content(words: list[str]) -> list[str]:
    """Content words, stemmed; operators and other symbols count as content."""
    return [_stem(w) for w in words if w not in FUNCTION_WORDS and w not in _PUNCTUATION]


def features(a: str, b: str) -> np.ndarray:
    """`N_FEATURES` alignment features of one pair (symmetric in a and b)."""
    wa, wb = _tokens(a), _tokens(b)
    matcher = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False)
    changed_content = 0
    changed_ops = 0
    swapped_order = 0.0
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        changed_ops += 1
        ca, cb = _content(wa[i1:i2]), _content(wb[j1:j2])
        changed_content += len(ca) + len(cb)
        if set(ca) and set(ca) == set(_content(wb)) & set(ca):
            swapped_order = 1.0  # words that moved rather than changed ("X to Y" / "Y to X")
    sa, sb = set(_content(wa)), set(_content(wb))
    only = len(sa ^ sb)
    union = max(len(sa | sb), 1)
    ratio = matcher.ratio()
    substitution = float(ratio >= 0.65 and only >= 1)  # same frame, a content word changed
    return np.array([
        ratio, len(sa & sb) / union, min(only, 6) / 6.0, min(changed_content, 8) / 8.0,
        min(changed_ops, 4) / 4.0, substitution, swapped_order * float(ratio >= 0.6),
        substitution * ratio,
    ], dtype=np.float64)


def feature_matrix(cached: list[str], asked: list[str]) -> np.ndarray:
    """Rows of `features` for pairs."""
    if not cached:
        return np.zeros((0, N_FEATURES))
    return np.stack([features(a, b) for a, b in zip(cached, asked, strict=True)])
