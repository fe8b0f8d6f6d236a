"""The API keys file: `<sha256 hex of key> <tenant>` lines (`#` comments), so a
leaked file reveals no key. `services.gateway.admission` turns a key into its
caller for every door.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from cache.keys import TENANT


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as stored in the keys file."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "cm_" + secrets.token_urlsafe(24)


def add_key(path: Path, tenant: str, key: str | None = None) -> str:
    """Append a key for `tenant` to the keys file (made if missing); return the key."""
    if not TENANT.fullmatch(tenant):  # the cache refuses any other tenant name
        raise ValueError("tenant: must be 1-64 characters of A-Z a-z 0-9 . _ -")
    key = key or new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{hash_key(key)} {tenant}\n")
    return key


def load_keys(path: Path) -> dict[str, str]:
    """Key hash -> tenant from a keys file; a malformed line stops start-up."""
    keys: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{path}:{number}: expected '<sha256 hex> <tenant>'")
        keys[parts[0].lower()] = parts[1]
    return keys
