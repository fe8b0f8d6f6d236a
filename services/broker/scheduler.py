"""Which fetched job starts next: interactive before batch, tenants in turn.

Pure data structure (no NATS, no gRPC). The broker fetches a few jobs more
than it has free backend slots (the look-ahead) and this picks among them:

- Classes: interactive first, but batch gets `batch_share` of the starts
  whenever both classes are waiting (a credit of `batch_share` per start; a
  batch job starts when the credit reaches 1), so batch is never starved.
  Either class takes every slot when the other has nothing waiting.
- Tenants: round-robin within a class, so one tenant's burst does not delay
  another's jobs by more than one turn per tenant. The stream's per-tenant
  limit (`tenant_max_jobs`) bounds how many of one tenant's jobs can sit in
  the queue ahead of another's at all (see docs/broker.md for the bound).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

JobClass = Literal["interactive", "batch"]
CLASSES: tuple[JobClass, ...] = ("interactive", "batch")

T = TypeVar("T")


@dataclass
class Queued(Generic[T]):
    """One fetched job waiting for a slot."""

    job_class: JobClass
    tenant: str
    item: T


class _ClassQueue(Generic[T]):
    """Per-tenant FIFOs served round-robin."""

    def __init__(self) -> None:
        self._tenants: OrderedDict[str, deque[Queued[T]]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(q) for q in self._tenants.values())

    def push(self, queued: Queued[T]) -> None:
        self._tenants.setdefault(queued.tenant, deque()).append(queued)

    def pop(self) -> Queued[T] | None:
        for tenant in list(self._tenants):
            q = self._tenants.pop(tenant)
            if not q:
                continue
            queued = q.popleft()
            if q:
                self._tenants[tenant] = q  # back of the line
            return queued
        return None

    def remove(self, match: Callable[[T], bool]) -> list[Queued[T]]:
        removed = []
        for tenant, q in list(self._tenants.items()):
            keep = deque(x for x in q if not match(x.item))
            removed += [x for x in q if match(x.item)]
            if keep:
                self._tenants[tenant] = keep
            else:
                del self._tenants[tenant]
        return removed

    def __iter__(self) -> Iterator[Queued[T]]:
        for q in self._tenants.values():
            yield from q


class Scheduler(Generic[T]):
    """Interactive/batch classes with a settable batch share, tenants round-robin."""

    def __init__(self, batch_share: float = 0.1) -> None:
        if not 0.0 <= batch_share <= 1.0:
            raise ValueError("batch_share must be in [0, 1]")
        self.batch_share = batch_share
        self._queues: dict[JobClass, _ClassQueue[T]] = {c: _ClassQueue() for c in CLASSES}
        self._batch_credit = 0.0

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def buffered(self, job_class: JobClass) -> int:
        return len(self._queues[job_class])

    def push(self, job_class: JobClass, tenant: str, item: T) -> None:
        self._queues[job_class].push(Queued(job_class, tenant, item))

    def pop(self) -> Queued[T] | None:
        """The next job to start, or None when nothing waits."""
        interactive, batch = self._queues["interactive"], self._queues["batch"]
        if len(interactive) and len(batch):
            self._batch_credit = min(1.0, self._batch_credit + self.batch_share)
            if self._batch_credit >= 1.0 - 1e-9:
                self._batch_credit -= 1.0
                return batch.pop()
            return interactive.pop()
        return interactive.pop() or batch.pop()

    def remove(self, match: Callable[[T], bool]) -> list[Queued[T]]:
        """Take out every waiting job whose item matches (cancelled, expired)."""
        return [x for q in self._queues.values() for x in q.remove(match)]

    def __iter__(self) -> Iterator[Queued[T]]:
        for q in self._queues.values():
            yield from q
