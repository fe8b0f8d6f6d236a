"""Runs Batch API batches through the orchestrator, one asyncio task per batch.

validating -> in_progress -> finalizing -> completed, or -> failed (the input
cannot be used at all), cancelling -> cancelled, expired (the window passed).

Each line is a request to the batch's endpoint, translated exactly as the HTTP
door translates it and answered by the same orchestrator (the cache answers
repeats for nothing, the policy routes) as a `batch` question, which the
broker queues behind interactive work. A malformed line, or one the
orchestrator refuses, is that line's error; the batch goes on. Every line's
result is stored before it is counted, and stored lines are skipped on resume
(`resume()` at start-up picks up every unfinished batch), so no line runs
twice once its result is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from core.errors import ErrorKind, FailedPrecondition, FieldError, kind_of
from services.gateway.batch.store import BatchStore, new_file
from services.gateway.collect import collect
from services.gateway.domain import Question
from services.gateway.frontends.openai_render import (
    ChatRenderer,
    CompletionRenderer,
    error_response,
)
from services.gateway.frontends.openai_schema import (
    ChatRequest,
    CompletionRequest,
    chat_question,
    completion_question,
    parse,
)
from services.gateway.orchestrator import Orchestrator

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, tuple[type, Callable[..., Any], type]] = {
    "/v1/chat/completions": (ChatRequest, chat_question, ChatRenderer),
    "/v1/completions": (CompletionRequest, completion_question, CompletionRenderer),
}
MAX_LINES = 50_000  # OpenAI's limit per batch
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")
# A line whose tier is busy or down (a broker or backend restarting) is tried again
# with a growing pause, for this long, before its error goes to the output.
LINE_RETRY_S = 120.0


def line_error(custom_id: Any, code: str, message: str) -> dict[str, Any]:
    """An error-file line for a line that could not be run at all."""
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}


def parse_lines(data: bytes, endpoint: str) -> list[tuple[Any, dict[str, Any] | None, str]]:
    """(custom_id, body or None, why not) per non-empty line of an input file."""
    out: list[tuple[Any, dict[str, Any] | None, str]] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            out.append((None, None, f"line {number}: not valid JSON"))
            continue
        if not isinstance(line, dict):
            out.append((None, None, f"line {number}: must be a JSON object"))
            continue
        cid = line.get("custom_id")
        problem = ""
        if not isinstance(cid, str) or not cid:
            problem = "custom_id: must be a non-empty string"
        elif cid in seen:
            problem = f"custom_id: {cid!r} appears more than once"
        elif line.get("method") != "POST":
            problem = "method: must be POST"
        elif line.get("url") != endpoint:
            problem = f"url: must be the batch's endpoint {endpoint}"
        elif not isinstance(line.get("body"), dict):
            problem = "body: must be a JSON object"
        if isinstance(cid, str):
            seen.add(cid)
        out.append((cid, None if problem else line["body"],
                    f"line {number}: {problem}" if problem else ""))
    return out


class BatchRunner:
    """Owns the tasks of the batches this gateway runs; `close()` leaves them resumable."""

    def __init__(self, store: BatchStore, orchestrator: Orchestrator,
                 concurrency: int = 4, line_timeout_s: float = 600.0) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.concurrency = concurrency
        self.line_timeout_s = line_timeout_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._live: dict[str, dict[str, Any]] = {}  # batch objects their tasks are writing

    async def resume(self) -> None:
        """Start every batch a previous gateway left unfinished."""
        for batch_id in await self.store.batch_ids():
            batch, _ = await self.store.batch(batch_id, None)
            if batch["status"] in UNFINISHED:
                log.info("resuming batch %s (%s)", batch_id, batch["status"])
                self.start(batch_id)

    def start(self, batch_id: str) -> None:
        if batch_id not in self._tasks or self._tasks[batch_id].done():
            self._cancel.setdefault(batch_id, asyncio.Event())
            self._tasks[batch_id] = asyncio.create_task(self._guarded(batch_id),
                                                        name=f"batch-{batch_id}")

    async def cancel(self, batch_id: str, tenant: str) -> dict[str, Any]:
        """`cancelling` now; no line starts after this returns; `cancelled` once the lines
        in flight are done and the files are written. The running task's own batch
        object is changed, so it and this call never write different versions."""
        batch, _ = await self.store.batch(batch_id, tenant)
        live = self._live.get(batch_id)
        if live is not None:
            batch = live
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            raise FailedPrecondition(f"batch {batch_id!r} is already {batch['status']}")
        self._cancel.setdefault(batch_id, asyncio.Event()).set()
        if batch["status"] != "cancelling":
            await self._save(batch, tenant, status="cancelling",
                             cancelling_at=int(time.time()))
        self.start(batch_id)  # a batch no task runs still has to reach `cancelled`
        return dict(batch)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _guarded(self, batch_id: str) -> None:
        """Run the batch; after a failure (NATS away for a moment, say) start it over from
        its stored state, which skips every stored line, with a growing pause."""
        pause = 0.5
        try:
            while True:
                try:
                    await self._run(batch_id)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if kind_of(exc) is ErrorKind.NOT_FOUND:
                        log.error("batch %s cannot run: %s", batch_id, exc)
                        return
                    log.warning("batch %s stopped (%s: %s); going on from its stored state "
                                "in %.1fs", batch_id, type(exc).__name__, exc, pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 10.0)
        finally:
            self._live.pop(batch_id, None)

    async def _save(self, batch: dict[str, Any], tenant: str, **changes: Any) -> None:
        batch.update(changes)
        await self.store.put_batch(batch, tenant)

    async def _run(self, batch_id: str) -> None:
        batch, tenant = await self.store.batch(batch_id, None)
        self._live[batch_id] = batch
        data = await self.store.content(batch["input_file_id"], tenant)
        lines = parse_lines(data, batch["endpoint"])
        if batch["status"] == "validating":
            if not lines or len(lines) > MAX_LINES:
                why = "the input file has no lines" if not lines else \
                    f"more than {MAX_LINES} lines ({len(lines)})"
                await self._save(batch, tenant, status="failed", failed_at=int(time.time()),
                                 errors={"object": "list", "data": [
                                     {"code": "invalid_file", "message": why,
                                      "param": "input_file_id", "line": None}]})
                return
            await self._save(batch, tenant, status="in_progress",
                             in_progress_at=int(time.time()),
                             request_counts={"total": len(lines), "completed": 0, "failed": 0})
        cancel = self._cancel.setdefault(batch_id, asyncio.Event())
        if batch["status"] == "cancelling":
            cancel.set()
        elif batch["status"] == "in_progress":
            await self._run_lines(batch, tenant, lines, cancel)
        await self._finish(batch, tenant, lines)

    async def _run_lines(self, batch: dict[str, Any], tenant: str,
                         lines: Sequence[tuple[Any, dict[str, Any] | None, str]],
                         cancel: asyncio.Event) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        counts = {"completed": 0, "failed": 0}
        stats = {"cache_hits": 0, "cost": 0.0, "saving": 0.0}
        expires = float(batch["expires_at"])

        async def one(index: int, cid: Any, body: dict[str, Any] | None, why: str) -> None:
            async with gate:
                result = await self.store.line(batch["id"], index)
                if result is None:
                    if cancel.is_set() or time.time() >= expires:
                        return
                    result = (line_error(cid, "invalid_line", why) if body is None
                              else await self._line(batch, tenant, cid, body))
                    await self.store.put_line(batch["id"], index, result)
                ok = result.get("response") is not None and \
                    result["response"]["status_code"] == 200
                counts["completed" if ok else "failed"] += 1
                if ok:
                    meta = result["response"]["body"].get("cascade", {})
                    stats["cache_hits"] += meta.get("cache_status") == "hit"
                    stats["cost"] += meta.get("cost", 0.0)
                    stats["saving"] += meta.get("saving", 0.0)

        async def report() -> None:  # progress only: a failed write waits for the next
            while True:
                await asyncio.sleep(0.5)
                try:
                    await self._progress(batch, tenant, counts, stats)
                except Exception as exc:
                    log.warning("batch %s: progress not saved (%s)", batch["id"], exc)

        reporter = asyncio.create_task(report())
        try:
            # A TaskGroup, so one failed line store stops its siblings before a restart.
            async with asyncio.TaskGroup() as group:
                for i, line in enumerate(lines):
                    group.create_task(one(i, *line))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        await self._progress(batch, tenant, counts, stats)

    async def _progress(self, batch: dict[str, Any], tenant: str, counts: dict[str, int],
                        stats: dict[str, float]) -> None:
        await self._save(batch, tenant, request_counts={
            "total": batch["request_counts"]["total"], **counts},
            cascade={"cache_hits": int(stats["cache_hits"]),
                     "cost": round(stats["cost"], 8),
                     "cost_if_top_tier": round(stats["cost"] + stats["saving"], 8)})

    async def _line(self, batch: dict[str, Any], tenant: str, cid: str,
                    body: dict[str, Any]) -> dict[str, Any]:
        model, translate, renderer_type = ENDPOINTS[batch["endpoint"]]
        translated = None
        give_up = time.monotonic() + LINE_RETRY_S
        for attempt in itertools.count():
            # A new id per attempt: the broker stores a job once per id (JetStream's
            # de-duplication), so a retry under the same id would never run.
            request_id = uuid.uuid4().hex
            try:
                req = parse(model, body)
                if req.stream:
                    raise FieldError("stream", "batch lines cannot stream")
                translated = translate(req, self.orchestrator.policy.tiers, tenant, request_id)
                question = translated.question
                assert isinstance(question, Question)
                answer = await collect(self.orchestrator.ask(
                    replace(question, batch=True), self.line_timeout_s))
                reply = renderer_type(translated, request_id).unary(answer.text,
                                                                    answer.metadata)
                return {"id": f"batch_req_{request_id}", "custom_id": cid, "error": None,
                        "response": {"status_code": 200, "request_id": request_id,
                                     "body": reply}}
            except Exception as exc:
                pause = min(5.0, 1.0 * (attempt + 1))
                if kind_of(exc).retryable and time.monotonic() + pause < give_up:
                    await asyncio.sleep(pause)
                    continue
                status, error, _ = error_response(exc, translated)
                if kind_of(exc) is ErrorKind.INTERNAL:
                    log.exception("batch %s line %s failed", batch["id"], cid)
                return {"id": f"batch_req_{request_id}", "custom_id": cid, "error": None,
                        "response": {"status_code": status, "request_id": request_id,
                                     "body": error}}
        raise AssertionError("unreachable")

    async def _finish(self, batch: dict[str, Any], tenant: str,
                      lines: Sequence[tuple[Any, dict[str, Any] | None, str]]) -> None:
        cancelled = batch["status"] == "cancelling"
        expired = not cancelled and time.time() >= float(batch["expires_at"])
        await self._save(batch, tenant, status="finalizing", finalizing_at=int(time.time()))
        output: list[str] = []
        errors: list[str] = []
        results = await self.store.lines(batch["id"], len(lines))
        for (cid, _, _), result in zip(lines, results, strict=True):
            if result is None:
                if expired:
                    errors.append(json.dumps(line_error(
                        cid, "batch_expired", "the batch's completion window passed first")))
                continue  # cancelled before it started: in neither file
            ok = result.get("response") is not None and result["response"]["status_code"] == 200
            (output if ok else errors).append(json.dumps(result))
        for name, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                data = ("\n".join(rows) + "\n").encode()
                file = new_file(f"{batch['id']}_{name.removesuffix('_file_id')}.jsonl",
                                "batch_output", len(data))
                await self.store.put_file(file, tenant, data)
                batch[name] = file["id"]
        now = int(time.time())
        status = "cancelled" if cancelled else "expired" if expired else "completed"
        await self._save(batch, tenant, status=status, **{f"{status}_at": now})
        log.info("batch %s %s: %d output lines, %d error lines", batch["id"], status,
                 len(output), len(errors))
