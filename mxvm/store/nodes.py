"""Nodes: registration (with a subnet carved from the pool), eligibility, liveness."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import asyncpg

from mxvm.errors import Conflict, NotFound
from mxvm.models import Device, Eligibility, Node, NodeRegistration
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.drain import complete_drains
from mxvm.store.queries import q


def free_subnets(pool: str, prefix: int, used: set[str]) -> Iterator[str]:
    """The /prefix subnets of `pool` that no node holds yet, in order."""
    net = ipaddress.ip_network(pool)
    if prefix < net.prefixlen:
        raise ValueError(f"node subnet prefix /{prefix} is larger than the pool {pool}")
    for sub in net.subnets(new_prefix=prefix):
        if str(sub) not in used:
            yield str(sub)
    raise Conflict(f"node subnet pool {pool} is exhausted (/{prefix} each)")


def next_subnet(pool: str, prefix: int, used: set[str]) -> str:
    return next(free_subnets(pool, prefix, used))


@dataclass(frozen=True)
class NodeClaim:
    """Whose a node name is: the node's id, its agent's key (None: not claimed) and address."""

    node_id: str
    node_key: str | None
    address: str


class NodeStore(StoreBase):
    async def node_claim(self, name: str) -> NodeClaim | None:
        row = await self.db.fetchrow(q("node_claim"), name)
        return None if row is None else NodeClaim(row["id"], row["node_key"], row["address"])

    async def retire_node_name(self, claim: NodeClaim) -> str:
        """Rename the claimed node out of the way of a new agent taking its name over;
        returns its new name. Conflict if the claim changed meanwhile."""
        try:
            name = await self.db.fetchval(q("node_retire_name"), claim.node_id, claim.node_key)
        except asyncpg.UniqueViolationError:
            name = None
        if name is None:
            raise Conflict(f"node {claim.node_id} was just registered again")
        return str(name)

    async def register_node(
        self,
        reg: NodeRegistration,
        *,
        subnet_pool: str,
        subnet_prefix: int,
        expect_key: str | None = None,
    ) -> tuple[Node, bool]:
        """Insert or refresh a node by name; returns (node, newly created). An existing node
        is refreshed only while its key is still `expect_key` (what the caller checked its
        claim against): Conflict if another registration took the name meanwhile."""
        existing = await self.db.fetchrow(q("node_by_name"), reg.name)
        node_id = existing["id"] if existing else str(uuid.uuid4())
        for _ in range(5):  # two nodes registering at once may pick the same free subnet
            subnet = existing["subnet"] if existing and existing["subnet"] else None
            if subnet is None:
                used = {str(r["subnet"]) for r in await self.db.fetch(q("node_subnets"))}
                subnet = next_subnet(subnet_pool, subnet_prefix, used)
            try:
                row = await self.db.fetchrow(
                    q("node_upsert"),
                    node_id,
                    reg.name,
                    reg.address,
                    reg.resources.cpu_millicores,
                    reg.resources.memory_mb,
                    reg.resources.disk_mb,
                    reg.reserved.cpu_millicores,
                    reg.reserved.memory_mb,
                    reg.reserved.disk_mb,
                    [d.model_dump(mode="json") for d in reg.devices],
                    reg.attributes,
                    reg.drivers,
                    reg.host_volumes,
                    str(subnet),
                    reg.agent_url,
                    reg.agent_secret,
                    reg.node_key,
                    expect_key,
                )
            except asyncpg.UniqueViolationError:
                continue
            except asyncpg.CheckViolationError as exc:
                raise Conflict(f"node resources are inconsistent: {exc}") from exc
            if row is None:
                raise Conflict(f"node name {reg.name!r} was just registered by another agent")
            return rows.node(row), bool(row["inserted"])
        raise Conflict("could not allocate a subnet for the node, try again")

    async def register_nodes(
        self, regs: list[NodeRegistration], *, subnet_pool: str, subnet_prefix: int
    ) -> list[str]:
        """Register many new nodes in one statement; returns their ids."""
        used = {str(r["subnet"]) for r in await self.db.fetch(q("node_subnets"))}
        subnets = free_subnets(subnet_pool, subnet_prefix, used)
        ids = [str(uuid.uuid4()) for _ in regs]
        cols: list[Sequence[object]] = [
            ids,
            [r.name for r in regs],
            [r.address for r in regs],
            [r.resources.cpu_millicores for r in regs],
            [r.resources.memory_mb for r in regs],
            [r.resources.disk_mb for r in regs],
            [r.reserved.cpu_millicores for r in regs],
            [r.reserved.memory_mb for r in regs],
            [r.reserved.disk_mb for r in regs],
            [json.dumps([d.model_dump(mode="json") for d in r.devices]) for r in regs],
            [json.dumps(r.attributes) for r in regs],
            [json.dumps(r.drivers) for r in regs],
            [json.dumps(r.host_volumes) for r in regs],
            [next(subnets) for _ in regs],
        ]
        try:
            await self.db.execute(q("nodes_insert_many"), *cols)
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"a node with one of these names already exists: {exc}") from exc
        return ids

    async def get_node(self, node_id: str) -> Node:
        row = await self.db.fetchrow(q("node_get"), node_id)
        if row is None:
            raise NotFound(f"node {node_id} not found")
        return rows.node(row)

    async def list_nodes(self) -> list[Node]:
        return [rows.node(r) for r in await self.db.fetch(q("node_list"))]

    async def set_node_eligibility(self, node_id: str, eligibility: Eligibility) -> Node:
        row = await self.db.fetchrow(q("node_set_eligibility"), node_id, eligibility.value)
        if row is None:
            if await self.db.fetchval(q("node_exists"), node_id) is None:
                raise NotFound(f"node {node_id} not found")
            raise Conflict(f"node {node_id} is draining: cancel the drain first")
        return rows.node(row)

    async def node_heartbeat(self, node_id: str, *, refresh_after_s: float) -> bool:
        """Record a heartbeat; True when the node was not ready before (it came back from
        down: capacity changed)."""
        row = await self.db.fetchrow(q("node_heartbeat"), node_id, refresh_after_s)
        if row is None:
            status = await self.db.fetchval(q("node_exists"), node_id)
            if status is None:
                raise NotFound(f"node {node_id} not found")
            return False
        return bool(row["came_back"])

    async def ready_node_ids(self) -> list[str]:
        return [r["id"] for r in await self.db.fetch(q("nodes_ready_ids"))]

    async def mark_nodes_down(self, node_ids: list[str]) -> tuple[list[str], set[str]]:
        """Mark nodes down and their live allocations lost; returns (nodes, affected job ids)."""
        async with self.db.transaction() as conn:
            down = [r["id"] for r in await conn.fetch(q("nodes_mark_down"), node_ids)]
            lost = await conn.fetch(q("allocs_mark_lost"), down) if down else []
            if down:
                await complete_drains(conn, down)  # nothing of theirs is live any more
        return down, {r["job_id"] for r in lost}

    async def node_alloc_index(self, node_id: str) -> int:
        idx = await self.db.fetchval(q("node_alloc_index"), node_id)
        if idx is None:
            raise NotFound(f"node {node_id} not found")
        return int(idx)

    async def status_counts(self) -> dict[str, dict[str, int]]:
        """{"nodes": {status: n}, "jobs": {status: n}} without loading the records."""
        out: dict[str, dict[str, int]] = {"nodes": {}, "jobs": {}}
        for r in await self.db.fetch(q("status_counts")):
            out[r["kind"]][r["status"]] = int(r["n"])
        return out

    async def agent_endpoint(self, node_id: str) -> tuple[str, str]:
        """(agent_url, agent_secret) of a node, for the coordinator's calls to its agent."""
        row = await self.db.fetchrow(q("node_agent_endpoint"), node_id)
        if row is None:
            raise NotFound(f"node {node_id} not found")
        return row["agent_url"], row["agent_secret"]

    async def set_node_devices(
        self, node_id: str, devices: list[Device]
    ) -> tuple[Node, list[tuple[str, str]]]:
        """Replace a node's devices with its agent's fresh view and, in the same transaction,
        fail every live allocation holding a device that is now unhealthy or gone, with the
        reason. Returns (node, [(allocation id, job id)] of the allocations failed)."""
        async with self.db.transaction() as conn:
            old = await conn.fetchval(q("node_devices_for_update"), node_id)
            if old is None:
                raise NotFound(f"node {node_id} not found")
            row = await conn.fetchrow(
                q("node_set_devices"), node_id, [d.model_dump(mode="json") for d in devices]
            )
            assert row is not None
            failed: list[tuple[str, str]] = []
            for device_id, why in device_problems(old, devices).items():
                recs = await conn.fetch(q("allocs_fail_on_device"), node_id, device_id, why)
                failed += [(r["id"], r["job_id"]) for r in recs]
            if failed:
                await conn.execute(q("nodes_bump_index"), [node_id])  # the agent stops the VMs
                await complete_drains(conn, [node_id])
        return rows.node(row), failed


def device_problems(old: list[dict[str, object]], new: list[Device]) -> dict[str, str]:
    """device id -> why no allocation may keep it: unhealthy now, or no longer reported."""
    out = {
        d.id: f"{'GPU' if d.kind == 'gpu' else 'device'} {d.id} unhealthy: {d.health_reason}"
        for d in new
        if not d.healthy
    }
    present = {d.id for d in new}
    for d in old:
        device_id = str(d["id"])
        if device_id not in present:
            out[device_id] = f"device {device_id} is no longer present on the node"
    return out
