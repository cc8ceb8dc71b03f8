"""Find the Postgres and Redis server binaries.

Postgres: PATH first, then Debian's versioned layout /usr/lib/postgresql/<major>/bin (which
keeps initdb and postgres off PATH), newest major version first.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mxvm.embedded.errors import EmbeddedServerError

DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")

_PG_INSTALL_HINT = (
    "install the PostgreSQL server (Debian: `apt-get install postgresql-15`; "
    "elsewhere put initdb and postgres on PATH)"
)
_REDIS_INSTALL_HINT = "install Redis (Debian: `apt-get install redis-server`)"


@dataclass(frozen=True)
class PostgresBinaries:
    initdb: Path
    postgres: Path


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _from_path(search_path: str | None) -> PostgresBinaries | None:
    initdb = shutil.which("initdb", path=search_path)
    if initdb is None:
        return None
    # Prefer the postgres next to initdb's real location so both come from one version.
    sibling = Path(initdb).resolve().parent / "postgres"
    if _executable(sibling):
        return PostgresBinaries(initdb=Path(initdb), postgres=sibling)
    postgres = shutil.which("postgres", path=search_path)
    if postgres is None:
        return None
    return PostgresBinaries(initdb=Path(initdb), postgres=Path(postgres))


def _major(version_dir: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version_dir.name.split("."))
    except ValueError:
        return (-1,)


def _from_debian_root(root: Path) -> PostgresBinaries | None:
    if not root.is_dir():
        return None
    for version_dir in sorted(root.iterdir(), key=_major, reverse=True):
        bindir = version_dir / "bin"
        initdb, postgres = bindir / "initdb", bindir / "postgres"
        if _executable(initdb) and _executable(postgres):
            return PostgresBinaries(initdb=initdb, postgres=postgres)
    return None


def find_postgres_binaries(
    search_path: str | None = None, debian_root: Path | None = None
) -> PostgresBinaries:
    """initdb and postgres; `search_path` defaults to $PATH, `debian_root` to
    /usr/lib/postgresql."""
    debian_root = DEBIAN_POSTGRES_ROOT if debian_root is None else debian_root
    found = _from_path(search_path) or _from_debian_root(debian_root)
    if found is None:
        raise EmbeddedServerError(
            f"PostgreSQL server binaries (initdb, postgres) not found on PATH or in "
            f"{debian_root}/*/bin; {_PG_INSTALL_HINT}"
        )
    return found


def find_redis_server(search_path: str | None = None) -> Path:
    """redis-server on `search_path` (default $PATH)."""
    found = shutil.which("redis-server", path=search_path)
    if found is None:
        raise EmbeddedServerError(f"redis-server not found on PATH; {_REDIS_INSTALL_HINT}")
    return Path(found)
