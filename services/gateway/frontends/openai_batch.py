"""The Batch API's routes on the HTTP door (files and batches), translators over
`services.gateway.batch`: admission, then the store or the runner, then OpenAI's
objects.

    POST /v1/files (multipart: file, purpose=batch)   GET /v1/files/{id}[/content]
    POST /v1/batches   GET /v1/batches[/{id}]   POST /v1/batches/{id}/cancel
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from core.errors import FieldError
from services.gateway.batch.runner import ENDPOINTS, BatchRunner
from services.gateway.batch.store import MAX_FILE_BYTES, BatchStore, new_file
from services.gateway.frontends.openai import OpenAIDoor
from services.gateway.frontends.openai_schema import parse

WINDOW_S = {"24h": 24 * 3600}


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


def new_batch(req: BatchCreate) -> dict[str, Any]:
    now = int(time.time())
    return {"id": f"batch_{uuid.uuid4().hex}", "object": "batch", "endpoint": req.endpoint,
            "errors": None, "input_file_id": req.input_file_id,
            "completion_window": req.completion_window, "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": None, "expires_at": now + WINDOW_S[req.completion_window],
            "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": req.metadata, "cascade": {"cache_hits": 0, "cost": 0.0,
                                                  "cost_if_top_tier": 0.0}}


def add_batch_routes(app: FastAPI, door: OpenAIDoor, store: BatchStore,
                     runner: BatchRunner) -> None:
    """Mount the Files and Batches routes on the door's app."""

    async def answer(request: Request, work: Any) -> Response:
        try:
            caller = await door.admit(request)
            return await work(caller.tenant)
        except Exception as exc:
            return door.error(exc)

    @app.post("/v1/files")
    async def create_file(request: Request) -> Response:
        async def work(tenant: str) -> Response:
            size = int(request.headers.get("content-length") or 0)
            if size > MAX_FILE_BYTES + 64 * 1024:
                raise FieldError("file", f"larger than {MAX_FILE_BYTES} bytes")
            form = await request.form()
            purpose, upload = form.get("purpose"), form.get("file")
            if purpose != "batch":
                raise FieldError("purpose", "only 'batch' files are accepted")
            if upload is None or isinstance(upload, str):
                raise FieldError("file", "must be a file part of the form")
            data = await upload.read()
            if len(data) > MAX_FILE_BYTES:
                raise FieldError("file", f"larger than {MAX_FILE_BYTES} bytes")
            file = new_file(upload.filename or "input.jsonl", "batch", len(data))
            return JSONResponse(await store.put_file(file, tenant, data))
        return await answer(request, work)

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> Response:
        async def work(tenant: str) -> Response:
            return JSONResponse(await store.file(file_id, tenant))
        return await answer(request, work)

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, request: Request) -> Response:
        async def work(tenant: str) -> Response:
            return Response(await store.content(file_id, tenant),
                            media_type="application/jsonl")
        return await answer(request, work)

    @app.post("/v1/batches")
    async def create_batch(request: Request) -> Response:
        async def work(tenant: str) -> Response:
            try:
                body = json.loads(await request.body())
            except ValueError as exc:
                raise FieldError("body", "is not valid JSON") from exc
            req = parse(BatchCreate, body)
            if req.endpoint not in ENDPOINTS:
                raise FieldError("endpoint", f"must be one of {sorted(ENDPOINTS)}")
            if req.completion_window not in WINDOW_S:
                raise FieldError("completion_window", "must be '24h'")
            file = await store.file(req.input_file_id, tenant)
            if file["purpose"] != "batch":
                raise FieldError("input_file_id", "must be a file of purpose 'batch'")
            batch = new_batch(req)
            await store.put_batch(batch, tenant)
            runner.start(batch["id"])
            return JSONResponse(batch)
        return await answer(request, work)

    @app.get("/v1/batches")
    async def list_batches(request: Request, limit: int = 20, after: str | None = None
                           ) -> Response:
        async def work(tenant: str) -> Response:
            batches = await store.batches(tenant)
            if after is not None:
                ids = [b["id"] for b in batches]
                batches = batches[ids.index(after) + 1:] if after in ids else []
            page = batches[:max(1, min(limit, 100))]
            return JSONResponse({"object": "list", "data": page,
                                 "first_id": page[0]["id"] if page else None,
                                 "last_id": page[-1]["id"] if page else None,
                                 "has_more": len(batches) > len(page)})
        return await answer(request, work)

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str, request: Request) -> Response:
        async def work(tenant: str) -> Response:
            batch, _ = await store.batch(batch_id, tenant)
            return JSONResponse(batch)
        return await answer(request, work)

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        async def work(tenant: str) -> Response:
            return JSONResponse(await runner.cancel(batch_id, tenant))
        return await answer(request, work)
