"""Rule-made training pairs: look-alikes that change one content word, and rewordings.

QQP teaches what a paraphrase looks like, but holds few look-alikes: pairs
that share every word but one and ask something else ("convert km to
miles" / "convert miles to km", "2+2" / "2-2", "in Python" / "in Java").
These rules make them from training texts only, as hard negatives, and make
rewordings ("How do I" / "How can I") as positives. They are training data,
never calibration or evaluation data: a rule's output is only as varied as
the rule.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from cache.alignment import REWORD_SYNONYMS
from cache.pairs import Pair

_GROUPS = [
    "python java javascript rust ruby php swift kotlin golang typescript perl scala haskell",
    "india china usa canada australia germany france japan pakistan brazil russia italy spain "
    "mexico england ireland egypt nigeria kenya korea vietnam turkey",
    "london paris tokyo delhi mumbai berlin sydney toronto chicago boston dubai singapore rome "
    "madrid moscow beijing bangalore seattle",
    "dollar euro rupee pound yen bitcoin dollars euros rupees pounds",
    "km miles kg lbs celsius fahrenheit meters feet inches cm liters gallons grams ounces",
    "january february march april may june july august september october november december",
    "monday tuesday wednesday thursday friday saturday sunday",
    "google amazon microsoft apple facebook netflix tesla uber twitter",
    "windows mac linux android ios ubuntu",
    "iphone ipad samsung pixel",
    "cat dog horse cow rabbit snake",
    "morning evening night afternoon",
    "wife husband mother father son daughter brother sister boyfriend girlfriend",
    "mysql postgresql mongodb redis sqlite oracle",
    "chrome firefox safari edge",
    "hindi english french german spanish chinese japanese arabic",
    "republicans democrats",
    "trump obama clinton modi",
]
_PEERS = {w: g.split() for g in _GROUPS for w in g.split()}
_ANTONYMS = [
    ("on", "off"), ("increase", "decrease"), ("gain", "lose"), ("best", "worst"),
    ("good", "bad"), ("before", "after"), ("buy", "sell"), ("enable", "disable"),
    ("open", "close"), ("start", "stop"), ("maximum", "minimum"), ("more", "less"),
    ("add", "remove"), ("true", "false"), ("positive", "negative"), ("male", "female"),
    ("men", "women"), ("old", "new"), ("high", "low"), ("higher", "lower"), ("first", "last"),
    ("win", "lose"), ("rich", "poor"), ("hot", "cold"), ("love", "hate"), ("pros", "cons"),
    ("advantages", "disadvantages"), ("import", "export"), ("upload", "download"),
    ("fast", "slow"), ("easy", "hard"), ("cheap", "expensive"), ("big", "small"),
    ("long", "short"), ("encrypt", "decrypt"), ("lock", "unlock"), ("show", "hide"),
    ("include", "exclude"), ("above", "below"), ("early", "late"), ("legal", "illegal"),
    ("better", "worse"), ("bigger", "smaller"), ("faster", "slower"), ("safe", "dangerous"),
    ("healthy", "unhealthy"), ("install", "uninstall"), ("increase", "reduce"),
    ("largest", "smallest"), ("most", "least"), ("always", "never"), ("with", "without"),
    ("private", "public"), ("import", "export"), ("north", "south"), ("east", "west"),
]
_OPPOSITE = {a: b for a, b in _ANTONYMS} | {b: a for a, b in _ANTONYMS}
_OPERATORS = {"+": "-", "-": "+", "*": "/", "/": "*", ">": "<", "<": ">", ">=": "<=",
              "<=": ">="}
_AUX = re.compile(r"\b(is|are|can|should|does|do|was|will|could|would)\b", re.I)
_NOT = re.compile(r"\s+not\b|n't\b", re.I)
_WORD = re.compile(r"[A-Za-z][A-Za-z+#]*")
_NUMBER = re.compile(r"(?<![\w.])(\d+)(?![\w.])")
_OP = re.compile(r"(?<=[\d\sxyn])(>=|<=|[+*/<>-])(?=\s*[\dxyn]\b)")
_TO = re.compile(r"\b([A-Za-z]+) to ([A-Za-z]+)\b")

_REWORDS = [
    (r"^how do i\b", "how can i"), (r"^how can i\b", "how do i"), (r"^what is\b", "what's"),
    (r"^what's\b", "what is"), (r"^what are some\b", "what are"),
    (r"^why do\b", "for what reason do"),
    (r"^how do you\b", "how does one"), (r"^is it possible to\b", "can i"),
    (r"^can i\b", "is it possible to"), (r"^what is the best way to\b", "how should i"),
    (r"^how should i\b", "what is the best way to"), (r"^which is\b", "what is"),
]
_SYNONYM = {a: b for a, b in REWORD_SYNONYMS} | {b: a for a, b in REWORD_SYNONYMS}


def _case_like(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def _swap_peer(text: str, rng: random.Random) -> str | None:
    hits = [m for m in _WORD.finditer(text) if m.group().lower() in _PEERS]
    if not hits:
        return None
    m = rng.choice(hits)
    other = rng.choice([w for w in _PEERS[m.group().lower()] if w != m.group().lower()])
    return text[: m.start()] + _case_like(other, m.group()) + text[m.end():]


def _swap_word(text: str, rng: random.Random, table: dict[str, str]) -> str | None:
    """`text` with one of its words found in `table` replaced by its entry, or None."""
    hits = [m for m in re.finditer(r"[A-Za-z]+", text) if m.group().lower() in table]
    if not hits:
        return None
    m = rng.choice(hits)
    return text[: m.start()] + _case_like(table[m.group().lower()], m.group()) + text[m.end():]


def _swap_antonym(text: str, rng: random.Random) -> str | None:
    return _swap_word(text, rng, _OPPOSITE)


def _swap_number(text: str, rng: random.Random) -> str | None:
    hits = list(_NUMBER.finditer(text))
    if not hits:
        return None
    m = rng.choice(hits)
    n = int(m.group())
    if 1900 <= n <= 2100:
        new = n + rng.choice([-4, -2, -1, 1, 2, 5])
    else:
        new = rng.choice([n + 1, n * 2, max(n - 1, 0), n * 10, n + 5])
    if new == n:
        new = n + 1
    return text[: m.start()] + str(new) + text[m.end():]


def _swap_operator(text: str, rng: random.Random) -> str | None:
    hits = list(_OP.finditer(text))
    if not hits:
        return None
    m = rng.choice(hits)
    return text[: m.start()] + _OPERATORS[m.group()] + text[m.end():]


def _swap_direction(text: str, rng: random.Random) -> str | None:
    m = _TO.search(text)
    if not m or m.group(1).lower() in {"how", "want", "need", "going", "have", "used", "way"}:
        return None
    return text[: m.start()] + f"{m.group(2)} to {m.group(1)}" + text[m.end():]


def _flip_negation(text: str, rng: random.Random) -> str | None:
    if _NOT.search(text):
        return _NOT.sub("", text, count=1)
    m = _AUX.search(text)
    if not m:
        return None
    return text[: m.end()] + " not" + text[m.end():]


LOOK_ALIKE_RULES: dict[str, Callable[[str, random.Random], str | None]] = {
    "entity": _swap_peer, "antonym": _swap_antonym, "number": _swap_number,
    "operator": _swap_operator, "direction": _swap_direction, "negation": _flip_negation,
}


def look_alike(text: str, rng: random.Random) -> tuple[str, str] | None:
    """`text` with one content word changed (kind, new text), or None if no rule applies."""
    kinds = [k for k in LOOK_ALIKE_RULES if k != "negation"]
    rng.shuffle(kinds)
    if rng.random() < 0.25:  # a negation fits almost every question: keep it a minority
        kinds.insert(0, "negation")
    for kind in kinds:
        out = LOOK_ALIKE_RULES[kind](text, rng)
        if out and out.strip().lower() != text.strip().lower():
            return kind, out
    return None


def reword(text: str, rng: random.Random) -> str | None:
    """A rewording that keeps the meaning (question frame, synonyms, case, punctuation), or
    None."""
    base = text.strip()
    low = (_swap_word(base, rng, _SYNONYM) or base) if rng.random() < 0.6 else base
    for pattern, repl in rng.sample(_REWORDS, len(_REWORDS)):
        if re.search(pattern, low, re.I):
            out = re.sub(pattern, repl, low, count=1, flags=re.I)
            return out[:1].upper() + out[1:]
    if low != base or rng.random() < 0.5:
        return low.rstrip("?. ").lower() if rng.random() < 0.5 else low
    return None


def training_variants(pairs: Sequence[Pair], seed: int = 0,
                      per_text: float = 0.5) -> list[Pair]:
    """Hard negatives (one content word changed) and rewordings, from training pairs only.

    Look-alikes are made of both texts of a pair and, for duplicates, of the
    asked side against the cached side, so the model sees a paraphrase turned
    into a different question by one word.
    """
    rng = random.Random(seed)
    out: list[Pair] = []
    for p in pairs:
        if rng.random() > per_text:
            continue
        made = look_alike(p.a, rng)
        if made:
            out.append(Pair(p.a, made[1], 0, made[0]))
            reworded = reword(made[1], rng) if rng.random() < 0.4 else None
            if reworded:  # a changed question in other words is still a changed question
                out.append(Pair(p.a, reworded, 0, made[0]))
        if p.label == 1:
            made = look_alike(p.b, rng)
            if made:
                out.append(Pair(p.a, made[1], 0, made[0]))
        new = reword(p.a, rng)
        if new:
            out.append(Pair(p.a, new, 1, "reword"))
    return out
