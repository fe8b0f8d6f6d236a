"""RouteLLM-format correctness tables: `prompt,<weak model>,<strong model>[,...]`.

Each row says whether the weak and the strong model answered the prompt
correctly (`True`/`False`). Extra columns (the responses) are ignored. A
folder is read as every `*.csv` inside it, and the file's stem becomes the
row's group (the MMLU subject), which cross-validation keeps on one side.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
DEFAULT_STRONG = "gpt-4-1106-preview"

_BOOL = {"true": True, "false": False, "1": True, "0": False}

csv.field_size_limit(1 << 24)


class TableError(ValueError):
    """A correctness table that cannot be read; the message names the file and line."""


@dataclass
class Table:
    """Prompts with the weak and strong model's correctness, and a group per row."""

    prompts: list[str]
    weak: np.ndarray
    strong: np.ndarray
    groups: list[str]
    weak_model: str = DEFAULT_WEAK
    strong_model: str = DEFAULT_STRONG
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, mask: np.ndarray) -> Table:
        """The rows where `mask` is true."""
        idx = np.nonzero(mask)[0]
        return Table(
            prompts=[self.prompts[i] for i in idx],
            weak=self.weak[idx],
            strong=self.strong[idx],
            groups=[self.groups[i] for i in idx],
            weak_model=self.weak_model,
            strong_model=self.strong_model,
            sources=self.sources,
        )


def _parse_bool(value: str, where: str, column: str) -> bool:
    try:
        return _BOOL[value.strip().lower()]
    except KeyError:
        raise TableError(
            f"{where}: column {column!r} must be True or False, got {value!r}"
        ) from None


def _group_name(path: Path) -> str:
    stem = path.stem
    return re.sub(r"^mmlu_", "", stem)


def read_csv(
    path: str | Path,
    weak_model: str | None = None,
    strong_model: str | None = None,
    exclude: Iterable[str] = (),
) -> Table:
    """Read one RouteLLM-format CSV; the models default to columns 2 and 3."""
    path = Path(path)
    excluded = {_normalise(p) for p in exclude}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise TableError(f"{path}:1: empty file, expected a header row") from None
        if not header or header[0] != "prompt":
            raise TableError(f"{path}:1: the first column must be 'prompt', got {header[:1]}")
        weak_name = weak_model or (header[1] if len(header) > 1 else "")
        strong_name = strong_model or (header[2] if len(header) > 2 else "")
        for role, name in (("weak", weak_name), ("strong", strong_name)):
            if not name or name not in header:
                raise TableError(
                    f"{path}:1: missing the {role} model column {name!r}; header is {header}"
                )
        wi, si = header.index(weak_name), header.index(strong_name)
        prompts: list[str] = []
        weak: list[bool] = []
        strong: list[bool] = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row:
                continue
            if len(row) <= max(wi, si):
                raise TableError(f"{where}: expected {len(header)} columns, got {len(row)}")
            w = _parse_bool(row[wi], where, weak_name)
            s = _parse_bool(row[si], where, strong_name)
            if _normalise(row[0]) in excluded:
                continue
            prompts.append(row[0])
            weak.append(w)
            strong.append(s)
    if not prompts:
        raise TableError(f"{path}: no rows")
    return Table(
        prompts=prompts,
        weak=np.asarray(weak, dtype=bool),
        strong=np.asarray(strong, dtype=bool),
        groups=[_group_name(path)] * len(prompts),
        weak_model=weak_name,
        strong_model=strong_name,
        sources=[str(path)],
    )


def read_tables(
    path: str | Path,
    weak_model: str | None = None,
    strong_model: str | None = None,
    exclude: Iterable[str] = (),
) -> Table:
    """Read a CSV, or every `*.csv` in a folder (recursively), into one table."""
    path = Path(path)
    if path.is_file():
        return read_csv(path, weak_model, strong_model, exclude)
    files = sorted(path.rglob("*.csv")) if path.is_dir() else []
    if not files:
        raise TableError(f"{path}: no such CSV file or folder of CSV files")
    exclude = list(exclude)
    return concat([read_csv(f, weak_model, strong_model, exclude) for f in files])


def concat(tables: Sequence[Table]) -> Table:
    """One table from several (model names from the first)."""
    if not tables:
        raise TableError("no tables to join")
    return Table(
        prompts=[p for t in tables for p in t.prompts],
        weak=np.concatenate([t.weak for t in tables]),
        strong=np.concatenate([t.strong for t in tables]),
        groups=[g for t in tables for g in t.groups],
        weak_model=tables[0].weak_model,
        strong_model=tables[0].strong_model,
        sources=[s for t in tables for s in t.sources],
    )


def read_column(path: str | Path, column: str) -> np.ndarray:
    """Float column `column` of a CSV, or of every `*.csv` in a folder (read_tables' order).

    Contaminated rows are not dropped here: pass a file written for the purpose
    (`cascade.tuning.write_scored_csv`).
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.csv"))
    values: list[float] = []
    for file in files:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            if column not in header:
                raise TableError(f"{file}:1: no column {column!r}; header is {header}")
            at = header.index(column)
            for row in reader:
                if not row:
                    continue
                try:
                    values.append(float(row[at]))
                except (ValueError, IndexError):
                    raise TableError(f"{file}:{reader.line_num}: column {column!r} must be a "
                                     f"number") from None
    return np.asarray(values, dtype=np.float64)


def _normalise(prompt: str) -> str:
    return " ".join(prompt.split())


def read_contaminated(path: str | Path) -> list[str]:
    """Benchmark prompts that RouteLLM found in its training data (`eval_prompt`)."""
    prompts = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                prompts.append(json.loads(line)["eval_prompt"])
            except (json.JSONDecodeError, KeyError) as exc:
                raise TableError(f"{path}:{number}: expected JSON with 'eval_prompt'") from exc
    return prompts
