"""Surface features of a prompt that carry over between subjects.

They describe the shape of a question, not its topic: length, how much of it
is numbers and arithmetic, whether it is multiple choice and what its options
look like, and phrasing that marks trick questions (NOT, EXCEPT, paired
statements). Computing them takes microseconds, next to milliseconds for the
embedding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_MATH = re.compile(r"[=+\-*/^<>%$\\×÷√∫∑π]")
_OPTION = re.compile(r"^\s*\(?([A-J])[.)]\s*(.*)$", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_NEGATION = re.compile(r"\b(NOT|EXCEPT|LEAST|FALSE|INCORRECT|never)\b")
_STATEMENTS = re.compile(r"Statement\s*\d\s*\|", re.IGNORECASE)
_WHICH = re.compile(r"\bwhich of the following\b", re.IGNORECASE)
_CODE = re.compile(r"[{};]|\bdef |\breturn\b|\bint\b|\bprint\(")
_MONEY_UNITS = re.compile(r"[$€£]|\b(percent|dollars?|cents?|hours?|minutes?|miles?|km)\b", re.I)
_OPERATION = re.compile(r"\d\s*[-+*/×÷^=]\s*[\d(]")
_MULTI_STEP = re.compile(
    r"\b(then|after|afterwards|first|second|third|next|finally|each|every|total|altogether|"
    r"remaining|left|twice|half|per|times|more than|less than|in all)\b", re.I)
_COMPUTE = re.compile(r"\b(calculate|compute|find|determine|solve|evaluate|estimate|simplify|"
                      r"how many|how much|what is the value)\b", re.I)
_CONDITION = re.compile(r"\b(if|suppose|assume|assuming|given that|let|when|unless)\b", re.I)
_SUPERLATIVE = re.compile(r"\b(most|least|best|greatest|primarily|main|primary|likely)\b", re.I)
_COMBO_OPTION = re.compile(r"\b(only|both|all of the above|none of the above|and|neither)\b|"
                           r"^\s*[IV]+(\s*,\s*[IV]+)*(\s*(and|,)\s*[IV]+)", re.I)
_ROMAN_ITEM = re.compile(r"^\s*\(?(I|II|III|IV|V)[.)]\s", re.MULTILINE)
_BLANK = re.compile(r"_{2,}")

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "digit_share",
    "log_numbers",
    "math_share",
    "log_max_number",
    "decimal_numbers",
    "money_units",
    "n_options",
    "log_stem_chars",
    "log_option_chars",
    "option_len_spread",
    "numeric_options",
    "option_overlap",
    "stem_sentences",
    "question_marks",
    "negation",
    "statement_pair",
    "which_following",
    "upper_share",
    "mean_word_len",
    "code_marks",
    "passage",
    "log_operations",
    "multi_step",
    "compute_verbs",
    "conditions",
    "superlatives",
    "combo_options",
    "roman_items",
    "blank",
    "long_word_share",
    "type_token",
    "log_stem_numbers",
)
"""Names of `prompt_features`' columns (the artifact checks them at load)."""

LENGTH_FEATURES: tuple[str, ...] = ("log_chars", "log_words", "log_stem_chars")
"""Length alone, for the calibrated-length designs."""


def _log(x: float) -> float:
    return math.log1p(max(x, 0.0))


def _options(prompt: str) -> list[str]:
    found = _OPTION.findall(prompt)
    # The answer options: the last run of lines lettered A, B, C, ... in order
    # (earlier lettered lines, such as roman numerals "I.", are part of the stem).
    starts = [i for i, (letter, _) in enumerate(found) if letter == "A"]
    if not starts:
        return []
    run: list[str] = []
    for (letter, text), expected in zip(found[starts[-1]:], "ABCDEFGHIJ", strict=False):
        if letter != expected:
            break
        run.append(text.strip())
    return run if len(run) >= 2 else []


def _numbers(text: str) -> list[float]:
    values = []
    for token in _NUMBER.findall(text):
        try:
            values.append(float(token.replace(",", "")))
        except ValueError:
            continue
    return values


def prompt_features(prompt: str) -> list[float]:
    """The features of one prompt, in the order of `FEATURE_NAMES`."""
    chars = max(len(prompt), 1)
    words = prompt.split()
    options = _options(prompt)
    stem = prompt
    if options:
        cuts = list(re.finditer(r"^\s*\(?A[.)]", prompt, re.MULTILINE))
        stem = prompt[: cuts[-1].start()] if cuts else prompt
    numbers = _numbers(prompt)
    option_lens = [len(o) for o in options]
    mean_opt = float(np.mean(option_lens)) if options else 0.0
    spread = float(np.std(option_lens) / (mean_opt + 1.0)) if options else 0.0
    numeric_opts = (
        sum(bool(_NUMBER.search(o)) and len(_NUMBER.sub("", o).strip()) < 8 for o in options)
        / len(options)
        if options
        else 0.0
    )
    overlap = 0.0
    if options:
        tokens = [set(o.lower().split()) for o in options]
        union = set().union(*tokens)
        common = set.intersection(*tokens) if all(tokens) else set()
        overlap = len(common) / len(union) if union else 0.0
    letters = [c for c in prompt if c.isalpha()]
    return [
        _log(chars),
        _log(len(words)),
        _log(prompt.count("\n") + 1),
        sum(c.isdigit() for c in prompt) / chars,
        _log(len(numbers)),
        len(_MATH.findall(prompt)) / chars,
        _log(max(numbers, default=0.0)),
        float(sum("." in t for t in _NUMBER.findall(prompt))),
        float(len(_MONEY_UNITS.findall(prompt))),
        float(len(options)),
        _log(len(stem)),
        _log(mean_opt),
        spread,
        numeric_opts,
        overlap,
        float(len(_SENTENCE_END.findall(stem))),
        float(prompt.count("?")),
        float(len(_NEGATION.findall(prompt))),
        float(bool(_STATEMENTS.search(prompt))),
        float(bool(_WHICH.search(prompt))),
        sum(c.isupper() for c in letters) / max(len(letters), 1),
        float(np.mean([len(w) for w in words])) if words else 0.0,
        float(len(_CODE.findall(prompt))),
        float(len(stem) > 800),
        *_form(prompt, stem, words, options),
    ]


def _form(prompt: str, stem: str, words: list[str], options: list[str]) -> list[float]:
    """Form of the reasoning asked for: operations, steps, conditions, option kinds."""
    lowered = [w.strip(".,;:?!()\"'").lower() for w in words]
    lowered = [w for w in lowered if w]
    return [
        _log(len(_OPERATION.findall(prompt))),
        _log(len(_MULTI_STEP.findall(stem))),
        _log(len(_COMPUTE.findall(stem))),
        _log(len(_CONDITION.findall(stem))),
        _log(len(_SUPERLATIVE.findall(stem))),
        sum(bool(_COMBO_OPTION.search(o)) for o in options) / len(options) if options else 0.0,
        float(len(_ROMAN_ITEM.findall(stem))),
        float(bool(_BLANK.search(prompt))),
        sum(len(w) >= 10 for w in lowered) / max(len(lowered), 1),
        len(set(lowered)) / max(len(lowered), 1),
        _log(len(_numbers(stem))),
    ]


def feature_matrix(prompts: Sequence[str]) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float32 features of `prompts`."""
    if not prompts:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    return np.asarray([prompt_features(p) for p in prompts], dtype=np.float32)
