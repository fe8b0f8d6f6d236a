"""What one prefill of the small model says about a prompt (issue 22, build 3).

The small tier reads the prompt once anyway; the same forward pass gives,
for free, how surprising the prompt's own tokens were and how sure the
model is about what comes next. These are candidate routing signals:

- `mean_logprob`, `min_logprob`: the log-probability of each prompt token
  given the ones before it, averaged and at its lowest, over the prompt's
  own tokens (the chat template's fixed text around it is left out);
- `next_entropy`: entropy (nats) of the next-token distribution after the
  prompt, over its `top` most likely tokens renormalised (vLLM returns the
  top logprobs of a generated token; the offline evaluation truncates the
  full distribution to the same `top`, so both sides compute one quantity);
- `top_mass`: how much probability those `top` tokens hold;
- `option_mass`: probability of each option letter (A, B, C, D, with or
  without a leading space) as the next token, where it is among the top.

Pure arithmetic on logprobs; the backend's engine and the offline
evaluation (`cmesh cascade prefill-stats`) both call `summarise`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
DEFAULT_TOP = 20
"""Top logprobs of the next token the statistics use (vLLM's own maximum is 20 by default)."""
MAX_TOP = 20


@dataclass(frozen=True)
class PrefillStats:
    """Prompt statistics from one prefill; see the module docstring for each field."""

    prompt_tokens: int
    scored_tokens: int
    """Prompt tokens the mean and minimum cover (the prompt's own, after the first)."""
    mean_logprob: float
    min_logprob: float
    next_entropy: float
    top_mass: float
    top: int
    option_mass: Mapping[str, float] = field(default_factory=dict)

    @property
    def option_total(self) -> float:
        """Probability that the next token is any option letter."""
        return float(sum(self.option_mass.values()))

    def features(self) -> list[float]:
        """The statistics as one row of numbers, in `FEATURE_NAMES` order."""
        options = [self.option_mass.get(letter, 0.0) for letter in OPTION_LETTERS]
        top_option = max(options)
        total = sum(options)
        return [self.mean_logprob, self.min_logprob, self.next_entropy, self.top_mass,
                total, top_option / total if total > 0 else 0.0]


FEATURE_NAMES: tuple[str, ...] = ("prefill_mean_logprob", "prefill_min_logprob",
                                  "prefill_next_entropy", "prefill_top_mass",
                                  "prefill_option_total", "prefill_option_top_share")
"""Names of `PrefillStats.features()`; `option_top_share` is the largest letter's share of
the letters' mass (how decided the model is among the options)."""


def content_span(ids: Sequence[int], empty: Sequence[int]) -> tuple[int, int]:
    """The prompt's own tokens inside templated `ids`: [start, end).

    `empty` is the same template around an empty prompt; the tokens both share
    at the front and at the back are the template's. Raw prompts pass `empty=()`.
    """
    start = 0
    while start < min(len(ids), len(empty)) and ids[start] == empty[start]:
        start += 1
    suffix, most = 0, min(len(ids), len(empty)) - start
    while suffix < most and ids[-1 - suffix] == empty[-1 - suffix]:
        suffix += 1
    return start, len(ids) - suffix


def summarise(prompt_logprobs: Sequence[float | None], span: tuple[int, int],
              next_top: Sequence[tuple[str, float]], top: int = DEFAULT_TOP) -> PrefillStats:
    """Statistics from each prompt token's logprob (None for the first), the prompt's own
    span (`content_span`) and the next token's (decoded text, logprob) candidates, of which
    the `top` most likely are used."""
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"top must be in 1..{MAX_TOP}")
    start, end = span
    scored = [float(lp) for lp in prompt_logprobs[max(start, 1):end] if lp is not None]
    if not scored:  # a one-token prompt: nothing was predicted from context
        scored = [0.0]
    used = sorted(next_top, key=lambda pair: -pair[1])[:top]
    probs = [math.exp(lp) for _, lp in used]
    mass = sum(probs)
    entropy = -sum(p / mass * math.log(p / mass) for p in probs if p > 0) if mass > 0 else 0.0
    letters: dict[str, float] = dict.fromkeys(OPTION_LETTERS, 0.0)
    for (text, _), p in zip(used, probs, strict=True):
        letter = text.strip()
        if letter in letters:
            letters[letter] += p
    return PrefillStats(
        prompt_tokens=len(prompt_logprobs), scored_tokens=len(scored),
        mean_logprob=sum(scored) / len(scored), min_logprob=min(scored),
        next_entropy=max(entropy, 0.0), top_mass=min(mass, 1.0), top=len(used),
        option_mass=letters)
