"""Rule-made training pairs where word order and form carry the meaning.

`cache.variants` changes one word. The look-alikes that reach a cache in real
traffic more often keep every word and move two of them: two named things,
numbers or places trade roles, often far apart ("from checking to savings" /
"from savings to checking", "Is Rust faster than Go" / "Is Go faster than
Rust"), or a scope or quantity word changes ("all the tests" / "only the
first test", "9 am" / "9 pm"). A model trained without such pairs scores
them like paraphrases (the PAWS finding). The paraphrases it refuses move
things the other way: a clause moved whole ("If I quantise it, will it fit?"
/ "Will it fit if I quantise it?"), a question made a request ("How do I
reverse a list?" / "Show me how to reverse a list."), a greeting added.

These rules make both kinds from training texts only: swaps, scope and
quantity changes as negatives, moved clauses, request forms and greetings as
positives. A negative is also shown in request form, so a change of form
alone never decides the label.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from itertools import combinations

from cache.alignment import FUNCTION_WORDS
from cache.pairs import Pair
from cache.variants import _PEERS, _case_like

# Pairs of a scope, quantity or time word and one that asks something else.
_SCOPE = [
    ("all of the", "one of the"), ("all the", "some of the"), ("all", "some"),
    ("every", "one"), ("always", "sometimes"), ("both", "either"),
    ("whole", "first half of the"), ("entire", "last part of the"), ("each", "the first"),
    ("everything", "anything"), ("twice", "once"), ("am", "pm"), ("daily", "weekly"),
    ("monthly", "yearly"), ("minutes", "hours"), ("hours", "days"), ("days", "weeks"),
    ("weeks", "months"), ("months", "years"), ("per day", "per week"), ("most", "few"),
    ("a few", "many"), ("several", "two"), ("at least", "at most"), ("under", "over"),
    ("within", "after"), ("until", "since"), ("including", "excluding"),
]
_SCOPE_MAP = {a: b for a, b in _SCOPE} | {b: a for a, b in _SCOPE if " " not in b}
_SCOPE_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _SCOPE_MAP), key=len,
                                                   reverse=True)) + r")\b", re.I)
_ONLY_BEFORE = re.compile(r"(?<=\w )(the|my|our|this|these|your)\b", re.I)

_LEADING = re.compile(r"^(If|When|Whenever|Before|After|While|Once|Given|Using|For|In|"
                      r"On|With|Without|Since|Because|Although|Unless|To) ([^,]{3,}), (.+?)"
                      r"([?.!]?)$")
_TRAILING = re.compile(r"^(.{8,}?) (if|when|before|after|while|once|because|unless) "
                       r"([^,]{6,}?)([?.!]?)$")
_HOW = re.compile(r"^(?:how (?:do|can|should|would) (?:i|we|you|one)) (.+?)\??$", re.I)
_WHAT = re.compile(r"^what (?:is|are) (.+?)\??$", re.I)
_CAN_YOU = re.compile(r"^(?:can|could|would|will) you(?: please)? (.+?)\??$", re.I)
_COMMAND = re.compile(r"^(write|give|list|explain|summarise|summarize|translate|show|"
                      r"suggest|describe|make|create|find|tell|help|draft|compare|convert)"
                      r"\b(.*?)[.!]?$", re.I)
_GREETINGS = ["Hi! ", "Hello! ", "Quick question: ", "Hey, "]
_THANKS = [" Thanks!", " Thank you.", " Thanks in advance."]

_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
_PROPER = re.compile(r"(?<=[a-z,] )[A-Z][a-zA-Z]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z+#]*")
_PHRASE = r"((?:the |my |a |an |our |your )?[A-Za-z][\w+#-]*(?: [a-z][\w-]*)?)"
_ONE = r"((?:the |my |a |an |our |your )?[A-Za-z][\w+#-]*)"
_RELATIONS = [  # the two sides are groups 1 and 3
    re.compile(rf"\bfrom {_PHRASE} (to|into) {_PHRASE}", re.I),
    re.compile(rf"\b{_ONE} (\w+er|better|worse|more \w+|less \w+) than {_ONE}", re.I),
    re.compile(rf"\b{_ONE} (instead of|rather than) {_ONE}", re.I),
]
_NOT_PHRASE = FUNCTION_WORDS | {"it", "them", "something", "anything"}


def _swap_spans(text: str, a: tuple[int, int], b: tuple[int, int]) -> str:
    (s1, e1), (s2, e2) = sorted([a, b])
    first, second = text[s1:e1], text[s2:e2]
    return text[:s1] + second + text[e1:s2] + first + text[e2:]


_SYMMETRIC_CUES = re.compile(r"\b(and|or|vs|versus|with|between|compare|comparison|"
                             r"difference|differences|similar|same|both)\b|[&,/+*x×-]", re.I)
# a request framed so that its two things play one role ("compare X with Y", "X or Y?")
_SYMMETRIC_FRAME = re.compile(r"\b(compare|difference|between|similar|same|or)\b", re.I)


def _swappable(text: str, x: re.Match[str], y: re.Match[str]) -> bool:
    """Whether x and y may trade places to make a different request: distinct, and not
    joined or framed symmetrically ("X and Y", "2+3", "compare X with Y")."""
    if x.group().lower() == y.group().lower():
        return False
    between = text[x.end():y.start()]
    return not (_SYMMETRIC_CUES.search(between) and len(between.split()) <= 3) \
        and not _SYMMETRIC_FRAME.search(text)


def _phrase_ok(phrase: str) -> bool:
    head = [w for w in phrase.lower().split() if w not in {"the", "my", "a", "an", "our",
                                                             "your"}]
    return bool(head) and head[0] not in _NOT_PHRASE


def swap_two(text: str, rng: random.Random) -> str | None:
    """Two things of one kind trade places: peers of a group ("Python ... Java"), numbers,
    proper names, or the two sides of a relation ("from X to Y", "X than Y")."""
    Span = tuple[int, int]
    kinds: list[list[tuple[Span, Span]]] = []
    peers = [m for m in _WORD.finditer(text) if m.group().lower() in _PEERS]
    for spans in (peers, list(_NUMBER.finditer(text)), list(_PROPER.finditer(text))):
        pairs = [(x.span(), y.span()) for x, y in combinations(spans, 2)
                 if _swappable(text, x, y)
                 and (spans is not peers or y.group().lower() in _PEERS[x.group().lower()])]
        if pairs:
            kinds.append(pairs)
    for rel in _RELATIONS:
        m = rel.search(text)
        if m and _phrase_ok(m.group(1)) and _phrase_ok(m.group(3)) \
                and m.group(1).lower() != m.group(3).lower():
            kinds.append([(m.span(1), m.span(3))])
    if not kinds:
        return None
    out = _swap_spans(text, *rng.choice(rng.choice(kinds)))
    return out if out.lower() != text.lower() else None


def change_scope(text: str, rng: random.Random) -> str | None:
    """A scope, quantity or time word replaced ("all" / "some", "am" / "pm", "days" /
    "weeks"), or "only" put before a noun phrase."""
    hits = list(_SCOPE_RE.finditer(text))
    if hits:
        m = rng.choice(hits)
        return text[:m.start()] + _case_like(_SCOPE_MAP[m.group().lower()], m.group()) \
            + text[m.end():]
    spots = list(_ONLY_BEFORE.finditer(text))
    if not spots or not _COMMAND.match(text.strip()):  # "only" reads right in a request
        return None
    m = rng.choice(spots)
    return text[:m.start()] + "only " + text[m.start():]


ORDER_LOOK_ALIKES: dict[str, Callable[[str, random.Random], str | None]] = {
    "swap": swap_two, "scope": change_scope,
}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def move_clause(text: str, rng: random.Random) -> str | None:
    """A leading clause moved to the end or a trailing one to the front, every role kept."""
    t = text.strip()
    m = _LEADING.match(t)
    if m:
        lead, clause, main, stop = m.groups()
        return f"{_sentence(main)} {lead.lower()} {clause}{stop or '.'}"
    m = _TRAILING.match(t)
    if m and "," not in m.group(1):
        main, lead, clause, stop = m.groups()
        return f"{_sentence(lead)} {clause}, {main[:1].lower() + main[1:]}{stop or '.'}"
    return None


def request_form(text: str, rng: random.Random) -> str | None:
    """A question said as a request or a request as a question ("How do I X?" / "Show me
    how to X.", "Can you X?" / "Please X.", "Write X." / "Could you write X?")."""
    t = text.strip()
    if m := _HOW.match(t):
        return rng.choice(["Explain how to", "Show me how to", "Tell me how to"]) \
            + f" {m.group(1)}."
    if m := _WHAT.match(t):
        verb = t.split()[1].lower()
        return f"Tell me what {m.group(1)} {verb}."
    if m := _CAN_YOU.match(t):
        return f"Please {m.group(1)}."
    if m := _COMMAND.match(t):
        lead = rng.choice(["Can you", "Could you", "Please"])
        return f"{lead} {m.group(1).lower()}{m.group(2)}" + ("." if lead == "Please" else "?")
    return None


def add_courtesy(text: str, rng: random.Random) -> str:
    """A greeting before or thanks after: nothing about the request changes."""
    t = text.strip()
    if rng.random() < 0.5:
        greeting = rng.choice(_GREETINGS)
        keep = greeting.endswith("! ") or t[:2] == "I "
        return greeting + (t if keep else t[:1].lower() + t[1:])
    return t + ("" if t[-1:] in "?.!" else ".") + rng.choice(_THANKS)


def order_variants(pairs: list[Pair], seed: int = 0, per_text: float = 0.5) -> list[Pair]:
    """Word-order and scope look-alikes (negatives) and form-changing paraphrases
    (positives) of training pairs, each made against a pair's cached side."""
    rng = random.Random(seed)
    out: list[Pair] = []
    for p in pairs:
        if rng.random() > per_text:
            continue
        sources = [p.a] + ([p.b] if p.label == 1 else [])
        for kind, rule in rng.sample(list(ORDER_LOOK_ALIKES.items()), 2):
            made = rule(rng.choice(sources), rng)
            if made:
                out.append(Pair(p.a, made, 0, kind))
                asked = request_form(made, rng) if rng.random() < 0.5 else None
                if asked:
                    out.append(Pair(p.a, asked, 0, kind))
                break
        for rule_name, make in (("clause", move_clause), ("request", request_form)):
            new = make(rng.choice(sources), rng)
            if new and new.lower() != p.a.lower():
                out.append(Pair(p.a, new, 1, rule_name))
        if rng.random() < 0.25 and (p.a.rstrip().endswith("?") or _COMMAND.match(p.a)):
            out.append(Pair(p.a, add_courtesy(rng.choice(sources), rng), 1, "courtesy"))
    return out
