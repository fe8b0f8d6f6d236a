"""A replica's ordering state: what it wrote that the log has not handed back yet.

Writes change the store only when the log hands them back in its one order
(`apply`), the writer's own included, so every replica holds what one replica
fed the stream in order would hold. A store is shown at once as *tentative*
(read-your-writes); an invalidation or eviction applied before its own store
comes back leaves it alone, because the log ordered that change first.
Evictions are decided once, by the replica whose store overfilled the
namespace: `apply` returns them for the log to append, and the log hands back
(`withdraw`) any event it gives up on. Invalidations carry their tenant and
remove only that tenant's entries.
"""

from __future__ import annotations

from typing import Protocol

from cache.entries import Entry, Event
from cache.store import NamespaceStore


class EventSink(Protocol):
    """What the log hands events to, in its one order."""

    def apply(self, event: Event) -> list[Event]:
        """Apply the log's next event; returns events it decided, for the log to append."""

    def withdraw(self, event: Event) -> None:
        """The log gave up on an event this replica appended (or decided)."""


class ReplicaState:
    """Tentative stores, decided evictions and awaited invalidations of one replica."""

    def __init__(self, store: NamespaceStore) -> None:
        self.store = store
        self._tentative: set[str] = set()  # own stores the log has not handed back yet
        self._evicting: set[str] = set()  # evictions decided here, not yet applied
        self._outcomes: dict[str, int | None] = {}  # own invalidations: removed on apply

    # ---- this replica's writes ---------------------------------------------------------
    def show_tentatively(self, entry: Entry) -> None:
        """Serve an own store at once, before the log orders it."""
        self._tentative.add(entry.id)
        self.store.insert(entry, evict=False)

    def take_back(self, entry_id: str) -> None:
        """The log refused an own store: forget it if it is still tentative."""
        if entry_id in self._tentative:
            self._tentative.discard(entry_id)
            self.store.remove_entry(entry_id)

    def await_outcome(self, event_id: str) -> None:
        """Remember how many entries this own invalidation removes once applied."""
        self._outcomes[event_id] = None

    def outcome(self, event_id: str) -> int | None:
        """Entries the applied invalidation removed (None if not applied); forgets it."""
        return self._outcomes.pop(event_id, None)

    def forget_outcome(self, event_id: str) -> None:
        """Stop waiting for this invalidation's outcome."""
        self._outcomes.pop(event_id, None)

    def remove(self, event: Event) -> int:
        """Apply an eviction or invalidation's removals; returns entries removed."""
        return self.store.remove_ids(self.targets(event))

    def targets(self, event: Event) -> list[str]:
        """The committed entries an eviction or invalidation removes, tenant checked."""
        spaces = self.store.spaces
        if event.entry_id:
            entry = self.store.get(event.entry_id)
            if entry is None or event.entry_id in self._tentative:
                return []
            return [entry.id] if entry.tenant == event.tenant else []
        if event.namespace:
            chosen = [spaces[event.namespace]] if event.namespace in spaces else []
        else:
            chosen = list(spaces.values())
        return [e.id for s in chosen if s.tenant == event.tenant
                for e in s.entries.values() if e.id not in self._tentative]

    # ---- the log's order ---------------------------------------------------------------
    def apply(self, event: Event) -> list[Event]:
        """Apply the log's next event (replay or follow); returns the evictions it decided.

        Only the log calls this, in its order. A store already held is not added
        again; an eviction or invalidation removes only entries of its own tenant
        and spares this replica's tentative stores (the log ordered them later).
        """
        if event.op == "store":
            return self._apply_store(event)
        if event.op == "evict":
            self._evicting.discard(event.entry_id)
        removed = self.remove(event)
        if event.id in self._outcomes:
            self._outcomes[event.id] = removed
        return []

    def withdraw(self, event: Event) -> None:
        """The log gave up on an event this replica appended: forget its local traces
        (a tentative store that will never be ordered, an eviction that will not happen)."""
        if event.op == "store":
            self.take_back(event.entry_id)
        elif event.op == "evict":
            self._evicting.discard(event.entry_id)

    def _apply_store(self, event: Event) -> list[Event]:
        entry = event.entry
        if entry is None:
            raise ValueError(f"store event {event.id} without an entry")
        if not entry.namespace.startswith(f"{entry.tenant}/"):  # no planting in another's
            raise ValueError(f"store event {event.id}: namespace {entry.namespace!r} is not "
                             f"tenant {entry.tenant!r}'s")
        if entry.id in self._tentative:  # our own store, now in its place in the order
            self._tentative.discard(entry.id)
            if entry.id in self.store.where:
                return self._decide_evictions(entry.namespace)
            return []
        held = entry.id in self.store.where
        if held or self.store.clock() - entry.created > self.store.config.ttl_s:
            return []
        self.store.insert(entry, evict=False)
        return []

    def _decide_evictions(self, ns: str) -> list[Event]:
        """Our store overfilled `ns`: pick LRU victims once, to be logged for everyone."""
        space = self.store.spaces.get(ns)
        if space is None:
            return []
        committed = [e for e in space.entries.values() if e.id not in self._tentative]
        pending = sum(1 for e in committed if e.id in self._evicting)
        over = len(committed) - pending - self.store.config.max_entries_per_namespace
        victims = [e for e in committed if e.id not in self._evicting][:max(over, 0)]
        self.store.counters.evictions += len(victims)
        self._evicting.update(e.id for e in victims)
        return [Event("evict", old.tenant, old.namespace, old.id) for old in victims]
