"""The Store: the only module that imports asyncpg. SQL lives in queries/*.sql and
migrations/NNNN_*.sql; each part of the Store owns one kind of record."""

from __future__ import annotations

from mxvm.store.allocations import AllocationStore
from mxvm.store.database import Database
from mxvm.store.drain import DrainStore
from mxvm.store.evaluations import EvaluationStore
from mxvm.store.gc import GcStore
from mxvm.store.jobs import JobStore
from mxvm.store.listen import listen
from mxvm.store.migrate import apply_all
from mxvm.store.nodes import NodeStore
from mxvm.store.plans import PlanStore
from mxvm.store.snapshot import SnapshotStore


class Store(
    NodeStore,
    JobStore,
    AllocationStore,
    EvaluationStore,
    PlanStore,
    SnapshotStore,
    DrainStore,
    GcStore,
):
    @classmethod
    async def connect(cls, dsn: str, *, pool_max: int = 10, timeout_s: float = 5.0) -> Store:
        db = Database(dsn, pool_max=pool_max, timeout_s=timeout_s)
        await db.open()
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def migrate(self) -> list[str]:
        async with self.db.connection() as conn:
            return await apply_all(conn)

    async def ping(self) -> None:
        await self.db.fetchval("SELECT 1")


__all__ = ["Database", "Store", "listen"]
