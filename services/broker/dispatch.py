"""Choosing a backend replica for a job, the way an endpoint picker scores them.

Pure (no gRPC, no NATS). Each replica's load comes from two views: what the
backend last reported (`GetLoad`, shared by every broker) and what this
broker itself has sent there since (instant). Free slots are the batch size
minus the larger of the two.

Affinity: jobs with one key (a conversation, or a long shared system prompt)
rank the replicas by rendezvous hashing, so every broker, with no shared
state, sends that key to the same replica, whose vLLM prefix cache then
already holds the prefix. The top-ranked replica is taken while it has a free
slot; when it is full the job goes to the least loaded replica instead
(affinity yields to load rather than queueing behind it).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Replica:
    """One backend replica of a tier, as this broker sees it."""

    address: str
    healthy: bool = False
    capacity: int = 0          # sequences it batches (max_num_seqs)
    reported_in_flight: int = 0
    local_in_flight: int = 0   # jobs this broker runs there now
    max_slots: int = 0         # operator's cap below the batch size (0: none)

    @property
    def in_flight(self) -> int:
        return max(self.reported_in_flight, self.local_in_flight)

    @property
    def slots(self) -> int:
        return min(self.capacity, self.max_slots) if self.max_slots else self.capacity

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - self.in_flight) if self.healthy else 0

    @property
    def queue_depth(self) -> int:
        """Requests waiting inside the backend beyond its batch."""
        return max(0, self.in_flight - self.slots)


def affinity_key(explicit: str, system_prompt: str, first_turn: str, min_chars: int) -> str:
    """The job's prefix identity: the explicit key, else a long shared prefix, else none.

    Short prefixes are not worth the skew: below `min_chars` of system prompt
    plus first turn the prefill they save is small, so the job goes wherever
    there is room.
    """
    if explicit:
        return explicit
    prefix = system_prompt + "\x00" + first_turn
    if len(prefix) - 1 < min_chars:
        return ""
    return hashlib.blake2b(prefix.encode(), digest_size=12).hexdigest()


def rendezvous(key: str, replicas: Sequence[Replica]) -> list[Replica]:
    """Replicas ordered by highest random weight for `key` (same order on every broker)."""

    def weight(replica: Replica) -> bytes:
        return hashlib.blake2b(f"{key}|{replica.address}".encode(), digest_size=8).digest()

    return sorted(replicas, key=weight, reverse=True)


def pick(replicas: Sequence[Replica], key: str = "") -> tuple[Replica | None, bool]:
    """(replica, affinity hit) for the next job; (None, False) when none has a free slot."""
    ready = [r for r in replicas if r.free_slots > 0]
    if not ready:
        return None, False
    if key:
        top = rendezvous(key, [r for r in replicas if r.healthy])[0]
        if top.free_slots > 0:
            return top, True
    best = max(ready, key=lambda r: (r.free_slots - r.queue_depth, -r.local_in_flight))
    return best, False


def pick_random(replicas: Sequence[Replica], key: str = "") -> tuple[Replica | None, bool]:
    """Any replica with a free slot, uniformly: the baseline the benchmark compares with."""
    ready = [r for r in replicas if r.free_slots > 0]
    return (random.choice(ready) if ready else None), False


POLICIES = {"scored": pick, "random": pick_random}


def total_free(replicas: Sequence[Replica]) -> int:
    return sum(r.free_slots for r in replicas)
