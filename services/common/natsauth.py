"""NATS credentials of a service: read from a file or the environment, never from argv.

A service's NATS user and password live in a credentials file (one line,
`<user>:<password>`, mode 0600) named by its `nats_credentials_file` setting,
or in its `nats_url` given through the environment (`CMESH_<SERVICE>_NATS_URL`,
readable only by the service's own user); the local stack writes the files.
Each service also has its own inbox prefix (`_INBOX_<service>`), so the server
can let each user subscribe to its own replies and nobody else's: with the
shared `_INBOX.>` a gateway could read the cache log's push deliveries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class NatsCredentials:
    """A NATS user and password (repr hides the password)."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"NatsCredentials(user={self.user!r}, password='***')"


def read_credentials(path: Path) -> NatsCredentials:
    """`<user>:<password>` from the first line of `path` (ValueError when malformed)."""
    line = path.read_text().strip()
    user, sep, password = line.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{path}: expected one line '<user>:<password>'")
    return NatsCredentials(user, password)


def write_credentials(path: Path, credentials: NatsCredentials) -> Path:
    """Write `path` as `read_credentials` reads it, created 0600 (never readable by others,
    not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{credentials.user}:{credentials.password}\n")
    return path


def inbox_prefix(service: str) -> str:
    """The inbox prefix of `service`'s connections (its NATS user may read only these)."""
    return f"_INBOX_{service}"


def connect_options(service: str, credentials_file: Path | None) -> dict[str, Any]:
    """Keyword arguments for `nats.connect`: the service's inbox prefix and, when a
    credentials file is set, its user and password."""
    options: dict[str, Any] = {"inbox_prefix": inbox_prefix(service)}
    if credentials_file is not None:
        creds = read_credentials(credentials_file)
        options |= {"user": creds.user, "password": creds.password}
    return options


def has_password(url: str) -> bool:
    """Whether any server of a comma-separated NATS URL carries a password."""
    return any(urlsplit(u.strip()).password for u in url.split(",") if u.strip())


def refuse_passwords_in_argv(args: list[str]) -> None:
    """Exit (status 2) when a command-line NATS URL carries a password: every local user
    can read a process's arguments in /proc/<pid>/cmdline."""
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not name.endswith("nats_url"):
            continue
        value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
        if has_password(value):
            raise SystemExit(f"{name}: a NATS password on the command line is readable by "
                             "every local user; use nats_credentials_file or the environment")
