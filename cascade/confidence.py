"""An answer's confidence from the backend's per-token logprobs.

`mean` is the geometric mean of the token probabilities, exp(mean logprob):
how sure the model was per token on average. `min` is the probability of the
least likely token: one shaky token (a guessed number) is enough to doubt the
answer. An answer without tokens has no evidence for it: confidence 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

ConfidenceMethod = Literal["mean", "min"]


def confidence(logprobs: Iterable[float], method: ConfidenceMethod = "mean") -> float:
    """Confidence in [0, 1] of an answer whose tokens had `logprobs` (natural log)."""
    values = [float(v) for v in logprobs]
    if not values:
        return 0.0
    if any(math.isnan(v) or v > 1e-6 for v in values):
        raise ValueError("logprobs must be <= 0 and not NaN")
    if method == "mean":
        return math.exp(sum(values) / len(values))
    if method == "min":
        return math.exp(min(values))
    raise ValueError(f"unknown confidence method {method!r}; known: mean, min")
