"""Garbage collection: delete what is over and has been for a while (queries/gc.sql)."""

from __future__ import annotations

from mxvm.store.base import StoreBase
from mxvm.store.queries import q


class GcStore(StoreBase):
    async def collect_jobs(self, older_than_s: float, limit: int) -> list[str]:
        """Delete jobs over for `older_than_s`, with their evaluations and allocations."""
        return [r["id"] for r in await self.db.fetch(q("gc_jobs"), older_than_s, limit)]

    async def collect_evaluations(self, older_than_s: float, limit: int) -> list[str]:
        """Delete evaluations finished `older_than_s` ago, but each job's newest."""
        return [r["id"] for r in await self.db.fetch(q("gc_evaluations"), older_than_s, limit)]

    async def collect_nodes(self, older_than_s: float, limit: int) -> list[tuple[str, str]]:
        """Delete nodes down for `older_than_s` and their ended allocations; (id, name)s."""
        rows = await self.db.fetch(q("gc_nodes"), older_than_s, limit)
        return [(r["id"], r["name"]) for r in rows]
