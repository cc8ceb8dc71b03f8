"""The scheduler's input, read from Postgres in one read-only transaction."""

from __future__ import annotations

from mxvm.models import ClusterSnapshot, Resources
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.queries import q


class SnapshotStore(StoreBase):
    async def snapshot(self) -> ClusterSnapshot:
        async with (
            self.db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            nodes = [rows.node(r) for r in await conn.fetch(q("node_list"))]
            usage_rows = await conn.fetch(q("snapshot_usage"))
            dev_rows = await conn.fetch(q("snapshot_devices"))
            port_rows = await conn.fetch(q("snapshot_ports"))
        snap = ClusterSnapshot(nodes=nodes)
        for r in usage_rows:
            u = snap.usage_of(r["node_id"])
            u.used = Resources(cpu_millicores=r["cpu"], memory_mb=r["memory"], disk_mb=r["disk"])
            u.alloc_count = int(r["allocs"])
        for r in dev_rows:
            snap.usage_of(r["node_id"]).device_ids.add(r["device_id"])
        for r in port_rows:
            snap.usage_of(r["node_id"]).ports.add(r["port"])
        return snap
