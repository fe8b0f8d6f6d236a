"""Cache entries and the events that change them.

Every change to the cache is one `Event`; a replica that applies the same
events in the same order holds the same entries. The events travel through
the log (JetStream) as JSON, the vector included, so replay needs no model.
Each event has its own id: the log publishes it as `Nats-Msg-Id` and replicas
remember the ids they applied, so a publish retried after a lost ack is
applied once.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Op = Literal["store", "evict", "invalidate"]


@dataclass
class Entry:
    """One cached answer."""

    id: str
    namespace: str
    tenant: str
    prompt: str
    answer: str
    vector: np.ndarray
    tier: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created: float = 0.0
    last_hit: float = 0.0
    hit_count: int = 0
    key: int = field(default=-1, repr=False)


@dataclass(frozen=True)
class Event:
    """A store, an eviction, or an invalidation (by entry, namespace or tenant).

    `tenant` is the tenant on whose behalf the change is made; applying an
    eviction or invalidation checks it against the entries it would remove.
    """

    op: Op
    tenant: str
    namespace: str = ""
    entry_id: str = ""
    entry: Entry | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> bytes:
        """Serialise for the log."""
        body: dict[str, Any] = {"op": self.op, "tenant": self.tenant, "ns": self.namespace,
                                "id": self.entry_id, "eid": self.id}
        if self.entry is not None:
            e = self.entry
            body["entry"] = {
                "prompt": e.prompt, "answer": e.answer, "tier": e.tier,
                "pt": e.prompt_tokens, "ct": e.completion_tokens, "created": e.created,
                "vec": base64.b64encode(np.asarray(e.vector, np.float32).tobytes()).decode(),
            }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Event:
        """Parse what `to_json` wrote."""
        body = json.loads(data)
        entry = None
        if "entry" in body:
            raw = body["entry"]
            entry = Entry(
                id=body["id"], namespace=body["ns"], tenant=body["tenant"],
                prompt=raw["prompt"], answer=raw["answer"], tier=raw["tier"],
                prompt_tokens=raw["pt"], completion_tokens=raw["ct"], created=raw["created"],
                last_hit=raw["created"],
                vector=np.frombuffer(base64.b64decode(raw["vec"]), dtype=np.float32).copy(),
            )
        if body["op"] not in ("store", "evict", "invalidate"):
            raise ValueError(f"unknown op {body['op']!r}")
        return cls(op=body["op"], tenant=body["tenant"], namespace=body["ns"],
                   entry_id=body["id"], entry=entry, id=body.get("eid", ""))
