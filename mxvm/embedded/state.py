"""Small files in an embedded server's data dir that must survive restarts: port, password.

Keeping both makes a restarted server reachable at the same DSN/URL, so clients (and tests
that kill and restart a server) simply reconnect.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def load_or_choose_port(path: Path, requested: int | None) -> int:
    """The requested port, else the one persisted at `path`, else a fresh free one; persisted."""
    port = requested
    if port is None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            port = int(path.read_text().strip())
    if port is None:
        port = free_port()
    path.write_text(f"{port}\n")
    return port


def load_or_create_secret(path: Path) -> str:
    """A URL-safe secret kept at `path` with mode 0600, created on first use."""
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if secret:
        return secret
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def log_tail(path: Path, max_bytes: int = 3000) -> str:
    """The end of a server log, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log written)"
