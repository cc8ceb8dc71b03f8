"""Allocations: reads, the agents' view of their node, and client status reports."""

from __future__ import annotations

from mxvm.errors import Forbidden, InvalidState, NotFound
from mxvm.models import (
    TERMINAL,
    TRANSITIONS,
    Allocation,
    AllocStatusUpdate,
    AssignedAllocation,
    ClientStatus,
    JobSpec,
    NodeAllocations,
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
        async with self.db.connection() as conn, conn.transaction(readonly=True):
            index = await conn.fetchval(q("node_alloc_index"), node_id)
            if index is None:
                raise NotFound(f"node {node_id} not found")
            recs = await conn.fetch(q("alloc_node_desired"), node_id)
        out = []
        for r in recs:
            spec = JobSpec.model_validate(r["job_spec"])
            out.append(
                AssignedAllocation(
                    allocation=rows.allocation(r),
                    job_name=spec.name,
                    job_type=spec.type,
                    task=spec.task,
                    restart=spec.restart,
                    ports=spec.ports,
                    volumes=spec.volumes,
                )
            )
        return NodeAllocations(index=int(index), allocations=out)

    async def update_allocation_status(
        self, alloc_id: str, node_id: str, update: AllocStatusUpdate
    ) -> tuple[Allocation, bool]:
        """Apply an agent's report; returns (allocation, it just became terminal)."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(q("alloc_get_for_update"), alloc_id)
            if row is None:
                raise NotFound(f"allocation {alloc_id} not found")
            if row["node_id"] != node_id:
                raise Forbidden(f"allocation {alloc_id} does not belong to node {node_id}")
            current = ClientStatus(row["client_status"])
            check_transition(current, update.client_status)
            new = await conn.fetchrow(
                q("alloc_update_client"),
                alloc_id,
                update.client_status.value,
                update.description,
                update.exit_code,
                rows.events_json(update.events),
            )
            assert new is not None
            became_terminal = current not in TERMINAL and update.client_status in TERMINAL
            if became_terminal:
                await conn.execute(q("nodes_bump_index"), [node_id])
        return rows.allocation(new), became_terminal
