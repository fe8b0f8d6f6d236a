"""Thresholds of the routing policies: typed, each in [0, 1], kept in a versioned file.

Every threshold has a flat name, the one used in the file's `thresholds`
object and in per-request overrides (the gateway's `PolicyOverrides.thresholds`):

- `route.<tier>` for every tier but the cheapest: the lowest classifier score
  that sends a prompt to that tier (non-decreasing from cheap to expensive);
- `cascade.<tier>` for every tier but the most capable: the lowest answer
  confidence that keeps that tier's answer (below it, escalate);
- `hybrid.easy` and `hybrid.hard`: below `easy` a prompt stays on the cheapest
  tier, at or above `hard` it goes straight to the most capable tier, and in
  between it is cascaded (`easy <= hard`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascade.classifiers import SHIPPED
from core.errors import FieldError

SCHEMA_VERSION: Literal[1] = 1
_FIELD_PREFIX = re.compile(r"([A-Za-z_][\w.\-]*): ")

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
"""A threshold: a float in [0, 1]."""


class ThresholdError(FieldError):
    """A threshold name or value that cannot be used (INVALID_ARGUMENT).

    `field` names what was wrong: `thresholds.<name>` for a bad override. When
    only a message is given, its `name: ` prefix is taken as the field.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        prefix = _FIELD_PREFIX.match(message)
        if field is None:
            field = prefix.group(1) if prefix else "thresholds"
        problem = message[prefix.end():] if prefix and prefix.group(1) == field else message
        super().__init__(field, problem)


class Thresholds(BaseModel):
    """The thresholds of all policies over `tiers` (cheapest first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = Field(
        SCHEMA_VERSION, description="Version of this file's layout; readers reject others."
    )
    tiers: list[str] = Field(
        min_length=2, description="Tier names, cheapest first (as the gateway names them)."
    )
    classifier: str = Field(SHIPPED, description="Registry name the scores come from.")
    thresholds: dict[str, Probability] = Field(
        description="Flat threshold names (route.*, cascade.*, hybrid.*) to values in [0, 1]."
    )
    calibration: dict[str, Any] = Field(
        default_factory=dict, description="How the values were chosen (data, target, figures)."
    )

    @model_validator(mode="after")
    def _check(self) -> Thresholds:
        if len(set(self.tiers)) != len(self.tiers) or not all(self.tiers):
            raise ValueError(f"tiers must be distinct non-empty names, got {self.tiers}")
        expected = set(threshold_names(self.tiers))
        given = set(self.thresholds)
        if unknown := sorted(given - expected):
            raise ValueError(f"unknown threshold {unknown[0]!r}; known: {sorted(expected)}")
        if missing := sorted(expected - given):
            raise ValueError(f"missing threshold {missing[0]!r}")
        route = [self.thresholds[f"route.{t}"] for t in self.tiers[1:]]
        for name, low, high in zip(self.tiers[2:], route, route[1:], strict=False):
            if high < low:
                raise ValueError(f"route.{name} ({high}) is below the tier before it ({low})")
        if self.thresholds["hybrid.hard"] < self.thresholds["hybrid.easy"]:
            raise ValueError("hybrid.hard must not be below hybrid.easy")
        return self

    def route(self, tier: str) -> float:
        """Lowest score that sends a prompt to `tier` (not the cheapest)."""
        return self.thresholds[f"route.{tier}"]

    def cascade(self, tier: str) -> float:
        """Lowest confidence that keeps `tier`'s answer (not the most capable)."""
        return self.thresholds[f"cascade.{tier}"]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Thresholds:
        """A copy with some thresholds replaced; unknown names or bad values raise."""
        if not overrides:
            return self
        known = set(self.thresholds)
        values = dict(self.thresholds)
        for name, value in overrides.items():
            field = f"thresholds.{name}"
            if name not in known:
                raise ThresholdError(f"unknown threshold; known: {sorted(known)}", field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ThresholdError(f"must be a number, got {value!r}", field)
            if not 0.0 <= float(value) <= 1.0:
                raise ThresholdError(f"must be in [0, 1], got {value}", field)
            values[name] = float(value)
        try:
            return Thresholds.model_validate({**self.model_dump(), "thresholds": values})
        except ValidationError as exc:
            raise ThresholdError(f"thresholds: {_first_error(exc)}") from exc


def threshold_names(tiers: list[str]) -> list[str]:
    """Every threshold name a file over `tiers` must define."""
    return (
        [f"route.{t}" for t in tiers[1:]]
        + [f"cascade.{t}" for t in tiers[:-1]]
        + ["hybrid.easy", "hybrid.hard"]
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', '')}" if where else str(err.get("msg", ""))


def default_path() -> Path:
    """The thresholds file shipped with the package."""
    return Path(__file__).parent / "artifacts" / "thresholds.json"


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """Read and validate a thresholds file (the shipped default when `path` is None)."""
    path = Path(path) if path else default_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ThresholdError(f"{path}: cannot read thresholds: {exc}") from exc
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise ThresholdError(
            f"{path}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
        )
    try:
        return Thresholds.model_validate(raw)
    except ValidationError as exc:
        raise ThresholdError(f"{path}: {_first_error(exc)}") from exc


def save_thresholds(thresholds: Thresholds, path: str | Path) -> Path:
    """Write `thresholds` as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(thresholds.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
