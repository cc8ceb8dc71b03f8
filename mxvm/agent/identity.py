"""What makes an agent the one agent of its node: a lock on its state dir, so that two agent
processes never share one (both would re-adopt and start the same VMs), and the node key kept
there, which ties the node's name at the coordinator to this agent (another host that comes
up under the same name is refused while this one is live, rather than sharing its node)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from mxvm.errors import Conflict

LOCK = "agent.lock"
NODE_KEY = "node-key"


@contextlib.contextmanager
def hold_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold the state dir's lock until the block ends; Conflict if another process holds it.
    An flock goes with its holder: a killed agent leaves nothing to clean up."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise Conflict(
                f"state dir {state_dir} is in use by another mxvm agent (pid {holder}); "
                "one agent per state dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def node_key(state_dir: Path) -> str:
    """This agent's node key, made on first use. Kept with the VMs' records: an agent whose
    state dir is wiped is a new agent to the coordinator (it may take over its old name once
    the old agent's node is no longer live)."""
    path = state_dir / NODE_KEY
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text().strip()
        if key:
            return key
    key = secrets.token_hex(16)
    tmp = path.with_name(f".{NODE_KEY}.tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(key + "\n")
    tmp.replace(path)  # whole or not at all: a torn key would make this agent a stranger
    return key
