"""Batch API state in NATS JetStream, so it outlives every mesh process.

    files      object store `cmesh_files`       file id -> the file's bytes
    file_meta  key-value    `cmesh_file_meta`   file id -> the file object (JSON, with tenant)
    batches    key-value    `cmesh_batches`     batch id -> the batch object (JSON, with tenant)
    lines      key-value    `cmesh_batch_lines` <batch id>.<line index> -> that line's result

A line's result is written once it is known and read back before a line runs,
so a batch resumed after a restart never runs a stored line again. The tenant
is kept beside each object and compared on every read: another tenant's id is
NotFound, as if it did not exist.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError, ObjectNotFoundError

from core.errors import NotFound

FILES, FILE_META, BATCHES, LINES = "cmesh_files", "cmesh_file_meta", "cmesh_batches", \
    "cmesh_batch_lines"
MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's limit for a batch input file


def new_file(filename: str, purpose: str, size: int) -> dict[str, Any]:
    """A file object as OpenAI's Files API returns it."""
    return {"id": f"file-{uuid.uuid4().hex}", "object": "file", "bytes": size,
            "created_at": int(time.time()), "filename": filename, "purpose": purpose,
            "status": "processed", "expires_at": None, "status_details": None}


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "tenant"}


class BatchStore:
    """Files, batch objects and per-line results over one JetStream context."""

    def __init__(self, js: Any, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas
        self._kv: dict[str, Any] = {}
        self._files: Any = None

    async def open(self) -> BatchStore:
        """Create (or bind to) the buckets."""
        for bucket in (FILE_META, BATCHES, LINES):
            self._kv[bucket] = await self.js.create_key_value(bucket=bucket,
                                                              replicas=self.replicas)
        self._files = await self.js.create_object_store(bucket=FILES, replicas=self.replicas)
        return self

    async def _get(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            entry = await self._kv[bucket].get(key)
        except (KeyNotFoundError, NotFoundError):
            return None
        return None if entry.value is None else dict(json.loads(entry.value))

    async def _put(self, bucket: str, key: str, value: dict[str, Any]) -> None:
        await self._kv[bucket].put(key, json.dumps(value, separators=(",", ":")).encode())

    async def put_file(self, file: dict[str, Any], tenant: str, data: bytes) -> dict[str, Any]:
        """Store a file's bytes, then its object (so a listed file always has content)."""
        await self._files.put(file["id"], data)
        await self._put(FILE_META, file["id"], {**file, "tenant": tenant})
        return file

    async def file(self, file_id: str, tenant: str) -> dict[str, Any]:
        obj = await self._get(FILE_META, file_id)
        if obj is None or obj.get("tenant") != tenant:
            raise NotFound(f"file {file_id!r} does not exist")
        return _public(obj)

    async def content(self, file_id: str, tenant: str) -> bytes:
        await self.file(file_id, tenant)
        try:
            result = await self._files.get(file_id)
        except (ObjectNotFoundError, NotFoundError) as exc:
            raise NotFound(f"file {file_id!r} has no content") from exc
        return bytes(result.data or b"")

    async def put_batch(self, batch: dict[str, Any], tenant: str) -> None:
        await self._put(BATCHES, batch["id"], {**batch, "tenant": tenant})

    async def batch(self, batch_id: str, tenant: str | None) -> tuple[dict[str, Any], str]:
        """The batch object and its tenant; `tenant` None reads any (the runner)."""
        obj = await self._get(BATCHES, batch_id)
        if obj is None or (tenant is not None and obj.get("tenant") != tenant):
            raise NotFound(f"batch {batch_id!r} does not exist")
        return _public(obj), str(obj["tenant"])

    async def batch_ids(self) -> list[str]:
        try:
            return sorted(await self._kv[BATCHES].keys())
        except NoKeysError:
            return []

    async def batches(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's batches, newest first."""
        found = []
        for batch_id in await self.batch_ids():
            obj = await self._get(BATCHES, batch_id)
            if obj is not None and obj.get("tenant") == tenant:
                found.append(_public(obj))
        return sorted(found, key=lambda b: (b["created_at"], b["id"]), reverse=True)

    async def put_line(self, batch_id: str, index: int, result: dict[str, Any]) -> None:
        await self._put(LINES, f"{batch_id}.{index}", result)

    async def line(self, batch_id: str, index: int) -> dict[str, Any] | None:
        return await self._get(LINES, f"{batch_id}.{index}")

    async def lines(self, batch_id: str, count: int) -> Sequence[dict[str, Any] | None]:
        return [await self.line(batch_id, i) for i in range(count)]
