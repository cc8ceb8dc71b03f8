"""Forward-only numbered migrations (migrations/NNNN_name.sql), applied under an advisory lock.

Each migration runs in its own transaction together with its row in schema_migrations, so a
failed migration leaves nothing half-applied, and concurrent coordinators starting at once
apply each migration exactly once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from mxvm.store.database import Conn

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant: the advisory lock that serialises migrations cluster-wide.
MIGRATION_LOCK_ID = 0x6D78766D  # "mxvm"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    out: list[Migration] = []
    folder = resources.files("mxvm.store").joinpath("migrations")
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return out


async def apply_all(conn: Conn) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in available():
            if mig.version in done:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    mig.version,
                    mig.name,
                )
            log.info("store.migration_applied %04d_%s", mig.version, mig.name)
            applied_now.append(f"{mig.version:04d}_{mig.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now
