"""Which OS user runs the servers, and making their files reachable for it.

initdb and postgres refuse to run as root, so as root we switch to `postgres` (or `nobody`).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from mxvm.embedded.errors import EmbeddedServerError

_CANDIDATES = ("postgres", "nobody")


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int


def unprivileged_user() -> RunAs | None:
    """The user to switch to when we are root; None when we are not (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in _CANDIDATES:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise EmbeddedServerError(
        f"running as root, but none of the users {_CANDIDATES} exists to run Postgres as"
    )


def _groups_of(run_as: RunAs) -> set[int]:
    return {run_as.gid} | {g.gr_gid for g in grp.getgrall() if run_as.name in g.gr_mem}


def _can_search(path: Path, run_as: RunAs, groups: set[int]) -> bool:
    st = path.stat()
    if st.st_uid == run_as.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def check_traversable(path: Path, run_as: RunAs | None) -> None:
    """Fail clearly when a parent directory would stop the server user reaching `path`."""
    if run_as is None:
        return
    groups = _groups_of(run_as)
    for parent in reversed(path.resolve().parents):
        if not _can_search(parent, run_as, groups):
            raise EmbeddedServerError(
                f"{parent} is not searchable by user {run_as.name!r}, which must reach "
                f"{path}; use a data directory whose parents are mode 0755 (e.g. from "
                f"tempfile.mkdtemp, then chmod 0755)"
            )
