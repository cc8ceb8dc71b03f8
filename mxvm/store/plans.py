"""apply_plan: the one write path for scheduling decisions (Nomad's plan applier).

One transaction: reject a stale leader's epoch, lock the plan's nodes, re-check capacity,
device and port claims against what is committed now, then write the placements that still fit.
Placements on a node that no longer fits are rejected as a whole and reported, so the
coordinator can re-plan them against a fresh snapshot.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from mxvm.errors import StaleEpoch
from mxvm.models import Allocation, Plan, PlanResult, Resources
from mxvm.store.base import StoreBase
from mxvm.store.database import Conn
from mxvm.store.queries import q

# Node ids per NOTIFY: 36-character ids and commas stay well under Postgres' 8000-byte payload.
NOTIFY_BATCH = 150


@dataclass
class _NodeState:
    ready: bool
    free: Resources
    devices: set[str]  # healthy device ids on the node
    claimed_devices: set[str] = field(default_factory=set)
    claimed_ports: set[int] = field(default_factory=set)


def _why_rejected(state: _NodeState | None, placements: list[Allocation]) -> str | None:
    if state is None:
        return "node not found"
    if not state.ready:
        return "node is not ready and eligible"
    need = Resources()
    devices: set[str] = set()
    ports: set[int] = set()
    for a in placements:
        need = need + a.resources
        for d in a.device_ids:
            if d in devices or d in state.claimed_devices or d not in state.devices:
                return f"device {d} is unavailable"
            devices.add(d)
        for p in a.ports.values():
            if p in ports or p in state.claimed_ports:
                return f"port {p} is taken"
            ports.add(p)
    lack = state.free.shortfall(need)
    return f"not enough {lack}" if lack else None


async def _node_states(conn: Conn, node_ids: list[str]) -> dict[str, _NodeState]:
    states: dict[str, _NodeState] = {}
    for r in await conn.fetch(q("plan_lock_nodes"), node_ids):
        states[r["id"]] = _NodeState(
            ready=r["status"] == "ready" and r["eligibility"] == "eligible",
            free=Resources(cpu_millicores=r["cpu"], memory_mb=r["memory"], disk_mb=r["disk"]),
            devices={d["id"] for d in r["devices"] if d.get("healthy", True)},
        )
    for r in await conn.fetch(q("plan_node_usage"), list(states)):
        s = states[r["node_id"]]
        used = Resources(cpu_millicores=r["cpu"], memory_mb=r["memory"], disk_mb=r["disk"])
        s.free = s.free - used
        s.claimed_devices.update(r["devices"])
        s.claimed_ports.update(r["ports"])
    return states


async def notify_nodes(conn: Conn, node_ids: Iterable[str]) -> None:
    """Wake the long-polls of these nodes' agents, in as few notifications as fit."""
    batch: list[str] = []
    for node_id in sorted(node_ids):
        batch.append(node_id)
        if len(batch) >= NOTIFY_BATCH:
            await conn.execute(q("nodes_notify"), ",".join(batch))
            batch = []
    if batch:
        await conn.execute(q("nodes_notify"), ",".join(batch))


async def _insert(conn: Conn, allocs: list[Allocation]) -> None:
    await conn.execute(
        q("plan_insert_allocations"),
        [a.id for a in allocs],
        [a.eval_id for a in allocs],
        [a.job_id for a in allocs],
        [a.job_version for a in allocs],
        [a.node_id for a in allocs],
        [a.name for a in allocs],
        [a.index for a in allocs],
        [a.resources.cpu_millicores for a in allocs],
        [a.resources.memory_mb for a in allocs],
        [a.resources.disk_mb for a in allocs],
        [json.dumps(a.device_ids) for a in allocs],
        [json.dumps(a.ports) for a in allocs],
        [a.previous_allocation for a in allocs],
        [a.reschedule_attempts for a in allocs],
    )
    dev = [(a.node_id, d, a.id) for a in allocs for d in a.device_ids]
    if dev:
        await conn.execute(q("plan_insert_devices"), *map(list, zip(*dev, strict=True)))
    ports = [(a.node_id, p, a.id) for a in allocs for p in a.ports.values()]
    if ports:
        await conn.execute(q("plan_insert_ports"), *map(list, zip(*ports, strict=True)))


async def _stop(conn: Conn, plan: Plan) -> list[asyncpg.Record]:
    if not plan.stops:
        return []
    stopped = await conn.fetch(
        q("plan_stop"), [s.alloc_id for s in plan.stops], [s.description for s in plan.stops]
    )
    # Stops lock no node row up front: bump the index of the nodes whose agents must act.
    await conn.execute(q("nodes_bump_index"), sorted({r["node_id"] for r in stopped}))
    return list(stopped)


def _group(placements: Iterable[Allocation]) -> dict[str, list[Allocation]]:
    by_node: dict[str, list[Allocation]] = defaultdict(list)
    for a in placements:
        by_node[a.node_id].append(a)
    return by_node


async def _fence(conn: Conn, epoch: int) -> None:
    if await conn.fetchval(q("epoch_fence"), epoch) is None:
        raise StaleEpoch(epoch, int(await conn.fetchval(q("epoch_get"))))


class PlanStore(StoreBase):
    async def current_epoch(self) -> int:
        return int(await self.db.fetchval(q("epoch_get")))

    async def claim_epoch(self, epoch: int) -> None:
        """A new leader records its epoch at once, fencing off every older leader."""
        async with self.db.transaction() as conn:
            await _fence(conn, epoch)

    async def apply_plan(self, plan: Plan, epoch: int) -> PlanResult:
        by_node = _group(plan.placements)
        async with self.db.transaction() as conn:
            await _fence(conn, epoch)
            states = await _node_states(conn, sorted(by_node))
            rejected: dict[str, str] = {}
            accepted: list[Allocation] = []
            for node_id, placements in by_node.items():
                why = _why_rejected(states.get(node_id), placements)
                if why:
                    rejected[node_id] = why
                else:
                    accepted.extend(placements)
            stopped = await _stop(conn, plan)
            if accepted:
                await _insert(conn, accepted)
            touched = {a.node_id for a in accepted} | {r["node_id"] for r in stopped}
            await notify_nodes(conn, touched)
        return PlanResult(
            committed=[a.id for a in accepted],
            stopped=[r["id"] for r in stopped],
            rejected_nodes=rejected,
        )
