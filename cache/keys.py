"""Namespaces: which entries may ever answer a prompt.

Two prompts may share an answer only when everything else that shapes the
answer is the same: the tenant, the system prompt, the earlier turns, the
sampling parameters and the tier policy. All of that is folded into the
namespace, so a lookup can only ever see entries made under the same context;
the verifier never has to judge context, only the prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from core.errors import FailedPrecondition, FieldError
from core.generation import Conversation, Sampling, Turn

__all__ = [
    "Conversation", "Sampling", "Scope", "Turn", "Uncacheable", "check_tenant", "fingerprint",
    "namespace_of",
]

TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""What a tenant name may be: it starts every namespace key (`<tenant>/...`), so a `/`
or a path-like name could reach into another tenant's namespaces."""


def check_tenant(tenant: str, field: str = "tenant") -> str:
    """`tenant` when it matches `TENANT`, else FieldError naming `field`."""
    if not TENANT.fullmatch(tenant):
        raise FieldError(field, "must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return tenant


class Uncacheable(FailedPrecondition, ValueError):
    """The request's answer is not reproducible, so it must not be cached."""


@dataclass(frozen=True)
class Scope:
    """Everything around a prompt that decides its namespace."""

    tenant: str
    conversation: Conversation = field(default_factory=Conversation)
    sampling: Sampling = field(default_factory=Sampling)
    policy: str = ""


def fingerprint(scope: Scope) -> str:
    """A stable hash of everything in `scope` except the tenant (the payload's shape is
    what stored namespaces were keyed by, so it stays as it is)."""
    payload = {
        "system": scope.conversation.system_prompt,
        "turns": [[t.role, t.content] for t in scope.conversation.turns],
        "sampling": [
            scope.sampling.temperature,
            scope.sampling.top_p,
            scope.sampling.top_k,
            scope.sampling.max_tokens,
            scope.sampling.seed,
            list(scope.sampling.stop),
        ],
        "policy": scope.policy,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def namespace_of(scope: Scope, allow_sampling: bool = False) -> str:
    """The namespace key `<tenant>/<fingerprint>` for `scope`.

    Raises `Uncacheable` when the temperature is above 0 and `allow_sampling`
    is off: a sampled answer is one draw among many, and replaying it as *the*
    answer is only acceptable when the operator says so. An unset temperature
    counts as sampled, since the serving side's default is not known here.
    """
    if not scope.tenant:
        raise FieldError("scope.tenant", "is required")
    temperature = scope.sampling.temperature
    if not allow_sampling and (temperature is None or temperature > 0):
        raise Uncacheable("temperature above 0 (or unset) is not cacheable by settings")
    return f"{scope.tenant}/{fingerprint(scope)}"
