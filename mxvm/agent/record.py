"""What the agent remembers about each allocation on disk, so a restarted agent can re-adopt
its VMs: the allocation's run dir holds record.json next to the VMM's own state."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mxvm.hypervisors.base import VmHandle
from mxvm.hypervisors.statefile import load_model, save_model
from mxvm.models import AllocStatusUpdate

RECORD = "record.json"


class AllocRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    alloc_id: str
    driver: str
    handle: VmHandle | None = None
    main_cmd_id: str | None = None  # set once the main command was started in the guest
    restarts: list[float] = []  # wall-clock times of restarts, for the restart policy
    started_at: float | None = None  # wall-clock time the agent began starting it (max runtime)
    # The terminal status, kept until the coordinator has it: a restarted agent re-reports it
    # instead of running the allocation again.
    final: AllocStatusUpdate | None = None


def alloc_dir(state_dir: Path, alloc_id: str) -> Path:
    # Short: unix socket paths inside it must stay under 108 bytes.
    return state_dir / "a" / alloc_id[:18]


def vm_dir(run_dir: Path) -> Path:
    """The driver's own directory (sockets, pidfile); the driver may remove it on destroy,
    so the allocation's log (mxvm.agent.alloclog) and record live one level up."""
    return run_dir / "vm"


def save(run_dir: Path, record: AllocRecord) -> None:
    """`run_dir` exists: the runner makes it before the VM starts (a second mkdir here was a
    tenth of an agent's time per VM start)."""
    save_model(run_dir / RECORD, record)


def load_all(state_dir: Path) -> list[tuple[Path, AllocRecord]]:
    out: list[tuple[Path, AllocRecord]] = []
    root = state_dir / "a"
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        record = load_model(d / RECORD, AllocRecord)
        if record is not None:
            out.append((d, record))
    return out


def remove(run_dir: Path) -> None:
    """Forget a finished allocation's VM (its log stays for `mxvm alloc logs`)."""
    (run_dir / RECORD).unlink(missing_ok=True)


def finished_dirs(state_dir: Path, skip: Collection[str]) -> list[Path]:
    """The run dirs of finished allocations, oldest first. Finished: no record left (its end
    reached the coordinator). `skip`: run dir names the caller keeps track of itself."""
    root = state_dir / "a"
    finished: list[tuple[float, Path]] = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    for entry in entries:
        path = Path(entry.path)
        if entry.name in skip or not entry.is_dir() or (path / RECORD).exists():
            continue
        try:
            finished.append((entry.stat().st_mtime, path))  # the record's removal: the end
        except FileNotFoundError:
            continue
    return [path for _, path in sorted(finished)]
