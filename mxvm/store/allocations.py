"""Allocations: reads, the agents' view of their node, and client status reports."""

from __future__ import annotations

import json
from typing import NamedTuple

import asyncpg

from mxvm.errors import Forbidden, InvalidState, MxvmError, NotFound
from mxvm.models import (
    TERMINAL,
    TRANSITIONS,
    Allocation,
    AllocStatusReport,
    AllocStatusUpdate,
    AssignedAllocation,
    ClientStatus,
    JobSpec,
    NodeAllocations,
    NodeChanges,
)
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.queries import q


def check_transition(current: ClientStatus, new: ClientStatus) -> None:
    if new == current and new not in TERMINAL:
        return  # repeating a non-terminal status (e.g. to add events) is fine
    if new not in TRANSITIONS.get(current, frozenset()):
        raise InvalidState(
            f"allocation cannot go from {current.value} to {new.value}",
            current=current.value,
            requested=new.value,
        )


class AllocationStore(StoreBase):
    async def get_allocation(self, alloc_id: str) -> Allocation:
        row = await self.db.fetchrow(q("alloc_get"), alloc_id)
        if row is None:
            raise NotFound(f"allocation {alloc_id} not found")
        return rows.allocation(row)

    async def list_allocations(self, limit: int = 1000) -> list[Allocation]:
        return [rows.allocation(r) for r in await self.db.fetch(q("alloc_list"), limit)]

    async def job_allocations(self, job_id: str) -> list[Allocation]:
        return [rows.allocation(r) for r in await self.db.fetch(q("alloc_list_job"), job_id)]

    async def jobs_allocations(self, job_ids: list[str]) -> dict[str, list[Allocation]]:
        """Every allocation of each job (an empty list for a job without any)."""
        out: dict[str, list[Allocation]] = {job_id: [] for job_id in job_ids}
        for r in await self.db.fetch(q("alloc_list_jobs"), job_ids):
            out[r["job_id"]].append(rows.allocation(r))
        return out

    async def node_allocation_list(self, node_id: str) -> list[Allocation]:
        return [rows.allocation(r) for r in await self.db.fetch(q("alloc_list_node"), node_id)]

    async def node_desired(self, node_id: str) -> NodeAllocations:
        """Every live allocation of the node, in full."""
        index, changed, _ = await self._node_allocations(node_id, 0)
        return NodeAllocations(index=index, allocations=changed)

    async def node_changes(self, node_id: str, since: int) -> NodeChanges:
        """The node's live allocations that changed after index `since`, in full, and the
        ids of all of them."""
        index, changed, live = await self._node_allocations(node_id, since)
        return NodeChanges(index=index, changed=changed, live=live)

    async def _node_allocations(
        self, node_id: str, since: int
    ) -> tuple[int, list[AssignedAllocation], list[str]]:
        recs = await self.db.fetch(q("alloc_node_desired"), node_id, since)
        if not recs:
            raise NotFound(f"node {node_id} not found")
        changed, live = [], []
        for r in recs:
            if r["live_id"] is None:  # the node runs nothing
                continue
            live.append(r["live_id"])
            if r["id"] is None:  # unchanged since `since`
                continue
            spec = JobSpec.model_validate_json(r["job_spec"])
            changed.append(
                AssignedAllocation(
                    allocation=rows.allocation(r),
                    job_name=spec.name,
                    job_type=spec.type,
                    task=spec.task,
                    restart=spec.restart,
                    on_disconnect=spec.on_disconnect,
                    ports=spec.ports,
                    volumes=spec.volumes,
                )
            )
        return int(recs[0]["node_index"]), changed, live

    async def update_allocation_statuses(
        self, node_id: str, reports: list[AllocStatusReport]
    ) -> ReportsApplied:
        """Apply an agent's reports in order, in one transaction (rows locked, each transition
        checked against the status the earlier reports of the batch left)."""
        ids = sorted({r.alloc_id for r in reports})
        async with self.db.transaction() as conn:
            # A batch that may end an allocation bumps the node's index: it locks the node
            # first, then the allocations, as plans and drains do (the other order could
            # deadlock with a plan stopping that allocation). Others leave the node alone, so
            # the reports of VMs starting never hold up a plan for their node.
            if any(r.client_status in TERMINAL for r in reports):
                await conn.fetchval(q("node_lock"), node_id)
            before = {r["id"]: r for r in await conn.fetch(q("allocs_get_for_update"), ids)}
            status = {i: ClientStatus(r["client_status"]) for i, r in before.items()}
            refusals: list[MxvmError | None] = []
            merged: dict[str, AllocStatusUpdate] = {}
            for rep in reports:
                refusal = _refusal(before.get(rep.alloc_id), node_id, status.get(rep.alloc_id), rep)
                refusals.append(refusal)
                if refusal is None:
                    status[rep.alloc_id] = rep.client_status
                    merged[rep.alloc_id] = _merge(merged.get(rep.alloc_id), rep)
            changed = (
                await conn.fetch(
                    q("allocs_update_client"),
                    list(merged),
                    [u.client_status.value for u in merged.values()],
                    [u.description for u in merged.values()],
                    [u.exit_code for u in merged.values()],
                    [json.dumps(rows.events_json(u.events)) for u in merged.values()],
                )
                if merged
                else []
            )
            ended = [
                Ended(r["id"], r["job_id"], ClientStatus(r["client_status"]))
                for r in changed
                if ClientStatus(r["client_status"]) in TERMINAL
                and ClientStatus(before[r["id"]]["client_status"]) not in TERMINAL
            ]
            if ended:
                await conn.execute(q("nodes_bump_index"), [node_id])
        return ReportsApplied(refusals, ended)


class Ended(NamedTuple):
    """An allocation that a batch of reports made terminal."""

    id: str
    job_id: str
    client_status: ClientStatus


class ReportsApplied(NamedTuple):
    refusals: list[MxvmError | None]  # per report: None when applied, else why not
    ended: list[Ended]  # the allocations the batch made terminal


def _refusal(
    row: asyncpg.Record | None, node_id: str, current: ClientStatus | None, rep: AllocStatusReport
) -> MxvmError | None:
    if row is None or current is None:
        return NotFound(f"allocation {rep.alloc_id} not found")
    if row["node_id"] != node_id:
        return Forbidden(f"allocation {rep.alloc_id} does not belong to node {node_id}")
    try:
        check_transition(current, rep.client_status)
    except InvalidState as exc:
        return exc
    return None


def _merge(prev: AllocStatusUpdate | None, rep: AllocStatusUpdate) -> AllocStatusUpdate:
    """Two reports of one allocation in a batch: the later one's status and description,
    every event, the last exit code given."""
    if prev is None:
        return AllocStatusUpdate.model_validate(rep.model_dump(exclude={"alloc_id"}))
    return AllocStatusUpdate(
        client_status=rep.client_status,
        description=rep.description,
        exit_code=rep.exit_code if rep.exit_code is not None else prev.exit_code,
        events=prev.events + rep.events,
    )
