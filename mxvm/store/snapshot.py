"""The scheduler's input, read from Postgres in one statement."""

from __future__ import annotations

from mxvm.models import ClusterSnapshot, Resources
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.queries import q


class SnapshotStore(StoreBase):
    async def snapshot(self) -> ClusterSnapshot:
        records = await self.db.fetch(q("snapshot"))
        snap = ClusterSnapshot(nodes=[rows.node(r) for r in records])
        for r in records:
            if not (r["used_allocs"] or r["used_devices"] or r["used_ports"]):
                continue
            u = snap.usage_of(r["id"])
            u.used = Resources(
                cpu_millicores=r["used_cpu"], memory_mb=r["used_memory"], disk_mb=r["used_disk"]
            )
            u.alloc_count = int(r["used_allocs"])
            u.device_ids.update(r["used_devices"])
            u.ports.update(r["used_ports"])
        return snap
