"""`cmesh tune`: cost-quality curve and thresholds from RouteLLM-format data."""

from __future__ import annotations


def tune() -> None:
    """Compute the cost-quality curve and write thresholds."""
    raise NotImplementedError("owned by the cascade work (issue 4)")
