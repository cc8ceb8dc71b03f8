"""apply_plan: the one write path for scheduling decisions (Nomad's plan applier).

One transaction: reject a stale leader's epoch, lock the plan's nodes, re-check capacity,
device and port claims against what is committed now, then write the placements that still fit.
Placements on a node that no longer fits are rejected as a whole and reported, so the
coordinator can re-plan them against a fresh snapshot.
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from mxvm.errors import StaleEpoch
from mxvm.models import Allocation, AllocStop, Plan, PlanResult, Resources
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
    subnet: str | None = None
    claimed_ips: set[str] = field(default_factory=set)


def free_ips(subnet: str | None, claimed: set[str], count: int) -> list[str] | None:
    """The first `count` free addresses of the node's subnet; its first host is the bridge's
    (the gateway). None when the subnet is full; [None]-free empty list when count is 0."""
    if subnet is None:
        return None
    hosts = ipaddress.ip_network(subnet).hosts()
    next(hosts, None)  # the gateway
    out: list[str] = []
    for host in hosts:
        if len(out) == count:
            break
        if str(host) not in claimed:
            out.append(str(host))
    return out if len(out) == count else None


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


async def _fence_and_lock(conn: Conn, epoch: int, node_ids: list[str]) -> dict[str, _NodeState]:
    """The epoch fence (StaleEpoch), then the nodes locked and their free capacity read."""
    locked = await conn.fetch(q("plan_lock_nodes"), epoch, node_ids)
    if locked[0]["fenced"] is None:
        raise StaleEpoch(epoch, int(await conn.fetchval(q("epoch_get"))))
    states: dict[str, _NodeState] = {}
    for r in locked:
        if r["id"] is None:  # the plan touches no node
            continue
        states[r["id"]] = _NodeState(
            ready=r["status"] == "ready" and r["eligibility"] == "eligible",
            free=Resources(cpu_millicores=r["cpu"], memory_mb=r["memory"], disk_mb=r["disk"]),
            devices={d["id"] for d in r["devices"] if d.get("healthy", True)},
            subnet=str(r["subnet"]) if r["subnet"] is not None else None,
        )
    usage = await conn.fetch(q("plan_node_usage"), list(states)) if states else []
    for r in usage:
        s = states[r["node_id"]]
        used = Resources(cpu_millicores=r["cpu"], memory_mb=r["memory"], disk_mb=r["disk"])
        s.free = s.free - used
        s.claimed_devices.update(r["devices"])
        s.claimed_ports.update(r["ports"])
        s.claimed_ips.update(r["ips"])
    return states


async def _stopped_jobs(conn: Conn, job_ids: set[str]) -> set[str]:
    if not job_ids:
        return set()
    return {r["id"] for r in await conn.fetch(q("plan_stopped_jobs"), sorted(job_ids)) if r["stop"]}


def notify_payloads(node_ids: Iterable[str]) -> list[str]:
    """The `mxvm_node` payloads that wake these nodes' agents: as few as fit."""
    ids = sorted(node_ids)
    return [",".join(ids[i : i + NOTIFY_BATCH]) for i in range(0, len(ids), NOTIFY_BATCH)]


async def notify_nodes(conn: Conn, node_ids: Iterable[str]) -> None:
    """Wake the long-polls of these nodes' agents."""
    payloads = notify_payloads(node_ids)
    if payloads:
        await conn.execute(q("nodes_notify"), payloads)


async def _insert(
    conn: Conn, allocs: list[Allocation], ips: dict[str, str], notify: list[str]
) -> None:
    dev = [(a.node_id, d, a.id) for a in allocs for d in a.device_ids]
    ports = [(a.node_id, p, a.id) for a in allocs for p in a.ports.values()]
    await conn.execute(
        q("plan_insert"),
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
        [ips.get(a.id) for a in allocs],
        [d[0] for d in dev],
        [d[1] for d in dev],
        [d[2] for d in dev],
        [p[0] for p in ports],
        [p[1] for p in ports],
        [p[2] for p in ports],
        notify,
    )


async def stop_allocations(conn: Conn, stops: list[AllocStop]) -> list[asyncpg.Record]:
    """Desired STOP for these allocations (those still to run), their nodes' index bumped
    and each stamped with it, in one statement; the rows (id, node_id) stopped. The caller
    wakes the nodes' agents (notify_nodes)."""
    if not stops:
        return []
    stopped = await conn.fetch(
        q("plan_stop"), [s.alloc_id for s in stops], [s.description for s in stops]
    )
    return list(stopped)


def _group(placements: Iterable[Allocation]) -> dict[str, list[Allocation]]:
    by_node: dict[str, list[Allocation]] = defaultdict(list)
    for a in placements:
        by_node[a.node_id].append(a)
    return by_node


def _admit(
    by_node: dict[str, list[Allocation]], states: dict[str, _NodeState]
) -> tuple[list[Allocation], dict[str, str], dict[str, str]]:
    """Which placements still fit, the IP each gets, and why the others' nodes were refused."""
    accepted: list[Allocation] = []
    ips: dict[str, str] = {}
    rejected: dict[str, str] = {}
    for node_id, placements in by_node.items():
        state = states.get(node_id)
        why = _why_rejected(state, placements)
        got = (
            None
            if why or state is None
            else free_ips(state.subnet, state.claimed_ips, len(placements))
        )
        if why is None and got is None:
            why = "no free IP address in the node's subnet"
        if why or got is None:
            rejected[node_id] = why or "rejected"
            continue
        accepted.extend(placements)
        ips.update((a.id, ip) for a, ip in zip(placements, got, strict=True))
    return accepted, ips, rejected


class PlanStore(StoreBase):
    async def current_epoch(self) -> int:
        return int(await self.db.fetchval(q("epoch_get")))

    async def claim_epoch(self, epoch: int) -> None:
        """A new leader records its epoch at once, fencing off every older leader."""
        async with self.db.transaction() as conn:
            await _fence_and_lock(conn, epoch, [])  # the fence alone: no node to lock

    async def apply_plan(self, plan: Plan, epoch: int) -> PlanResult:
        return (await self.apply_plans([plan], epoch))[0]

    async def apply_plans(self, plans: list[Plan], epoch: int) -> list[PlanResult]:
        """Commit several plans (one evaluation batch) in one transaction.

        The evaluator planned them one after another against one snapshot, so together they
        fit unless the cluster changed meanwhile; a node that no longer fits rejects its
        placements from every plan of the batch, and each plan's result says so.
        """
        placements = [a for plan in plans for a in plan.placements]
        async with self.db.transaction() as conn:
            states = await _fence_and_lock(conn, epoch, sorted({a.node_id for a in placements}))
            stopped_jobs = await _stopped_jobs(conn, {a.job_id for a in placements})
            withdrawn = {a.id for a in placements if a.job_id in stopped_jobs}
            by_node = _group([a for a in placements if a.id not in withdrawn])
            accepted, ips, rejected = _admit(by_node, states)
            stopped = await stop_allocations(conn, [s for p in plans for s in p.stops])
            touched = {a.node_id for a in accepted} | {r["node_id"] for r in stopped}
            if accepted:  # the insert statement also sends the notifications
                await _insert(conn, accepted, ips, notify_payloads(touched))
            else:
                await notify_nodes(conn, touched)
        committed = {a.id for a in accepted}
        stopped_ids = {r["id"] for r in stopped}
        return [
            PlanResult(
                committed=[a.id for a in p.placements if a.id in committed],
                stopped=[s.alloc_id for s in p.stops if s.alloc_id in stopped_ids],
                rejected_nodes={
                    a.node_id: rejected[a.node_id]
                    for a in p.placements
                    if a.node_id in rejected and a.id not in withdrawn
                },
                withdrawn=[a.id for a in p.placements if a.id in withdrawn],
            )
            for p in plans
        ]
