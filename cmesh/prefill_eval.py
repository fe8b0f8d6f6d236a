"""Glue of `cmesh cascade prefill-stats|prefill-evaluate`: SmolLM2's prompt statistics
for sampled development prompts, computed once by the backend's own engine, then judged
on issue 22's yardstick.

The statistics come from `VllmEngine.prefill`, the same code the backend's
Prefill RPC runs, so the offline figures are those a router would get online.
Prompts go to the engine in chunks of concurrent requests (vLLM batches
them); after each chunk the rows done so far are written to a partial file,
from which an interrupted run resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.prefill import PrefillTable, inputs_hash, model_digest
from cascade.training import prompt_hashes
from core.prefill import FEATURE_NAMES

Echo = Callable[[str], None]


def partial_path(out: Path) -> Path:
    return out.with_name(out.stem + ".partial.npz")


async def _score(prompts: Sequence[str], chat: bool, top: int, model: str, chunk: int,
                 done: PrefillTable, partial: Path, echo: Echo) -> PrefillTable:
    from core.errors import FieldError
    from core.generation import GenerationRequest
    from services.backend.engine import VllmEngine
    from services.backend.settings import BackendSettings

    known = {int(k) for k in done.keys.tolist()}
    keys = prompt_hashes(prompts)
    todo = [i for i, k in enumerate(keys.tolist()) if int(k) not in known]
    rows = [done.features]
    new_keys = [done.keys]
    echo(f"{len(prompts) - len(todo)} prompts resumed from {partial}, {len(todo)} to score")
    engine = VllmEngine(BackendSettings(model=model, served_name="prefill-stats",
                                        max_num_seqs=chunk, max_in_flight=4 * chunk,
                                        self_check=False))
    await engine.start()
    try:
        start = time.perf_counter()
        for at in range(0, len(todo), chunk):
            part = todo[at:at + chunk]

            async def one(i: int) -> list[float]:
                try:
                    stats = await engine.prefill(GenerationRequest(prompts[i], chat=chat), top)
                except FieldError as exc:  # too long for the context: no statistics
                    echo(f"prompt {i}: {exc}")
                    return [float("nan")] * len(FEATURE_NAMES)
                return stats.features()

            rows.append(np.asarray(await asyncio.gather(*(one(i) for i in part)), np.float32))
            new_keys.append(keys[part])
            done = PrefillTable(np.concatenate(new_keys), np.concatenate(rows), done.meta)
            done.save(partial)
            n = at + len(part)
            per = (time.perf_counter() - start) / n
            echo(f"prefill {n}/{len(todo)}: {1000 * per:.0f} ms per prompt, "
                 f"{per * (len(todo) - n) / 60:.1f} min left")
    finally:
        engine.shutdown()
    return done


def compute(prompts: Sequence[str], out: Path, chat: bool, top: int, chunk: int,
            meta: dict[str, Any], echo: Echo) -> tuple[PrefillTable, bool]:
    """The statistics of `prompts` in `out`: reused when its inputs hash matches, else
    computed (resuming `out`'s partial file of the same inputs). Returns (table, reused)."""
    from services.backend.engine import default_model

    model = default_model()
    digest = inputs_hash(prompts, model_digest(model), chat, top)
    if out.is_file():
        table = PrefillTable.load(out)
        if table.meta.get("inputs") == digest:
            echo(f"{out}: statistics of these inputs already computed ({digest})")
            return table, True
    partial = partial_path(out)
    empty = PrefillTable(np.zeros(0, np.uint64), np.zeros((0, len(FEATURE_NAMES)), np.float32),
                         {})
    done = PrefillTable.load(partial) if partial.is_file() else empty
    if done.meta.get("inputs") != digest:
        done = empty
    info = {**meta, "inputs": digest, "model_digest": model_digest(model), "chat": chat,
            "top": top, "features": list(FEATURE_NAMES), "n": len(prompts)}
    done.meta = info
    table = asyncio.run(_score(prompts, chat, top, model, chunk, done, partial, echo))
    table.meta = info
    table.save(out)
    partial.unlink(missing_ok=True)
    return table, False


def evaluate(table: Any, stats: PrefillTable, draws: int, held_out: int, seed: int,
             embeddings: Callable[[list[str]], np.ndarray] | None, echo: Echo) -> dict[str, Any]:
    """The yardstick on the rows of `table` that have statistics in `stats`, per head."""
    from cascade.evaluation import heads_of
    from cascade.prefill import prefill_head, prefill_yardstick

    have = set(stats.keys.tolist())
    rows_with = np.asarray([int(k) in have for k in prompt_hashes(table.prompts).tolist()])
    sub = table.subset(rows_with)
    feats = stats.rows_for(sub.prompts)
    usable = ~np.isnan(feats).any(axis=1)
    sub, feats = sub.subset(usable), feats[usable]
    emb = embeddings(sub.prompts) if embeddings is not None else None
    out: dict[str, Any] = {"rows": len(sub), "dropped_without_statistics": int((~usable).sum())}
    for name, rows, by_group in zip(("mmlu", "gsm8k"), heads_of(sub), (True, False),
                                    strict=True):
        echo(f"{name}: yardstick on {len(rows)} sampled rows, {draws} draws")
        data = prefill_head(sub, rows, feats[rows], by_group, emb)
        out[name] = prefill_yardstick(data, draws, held_out, seed=seed, progress=echo)
    return out
