"""Node drain: stop what runs on a node so the scheduler places it elsewhere.

Enabling a drain is one transaction: the node becomes ineligible and draining, its live
allocations get desired STOP ("node drain"), its agent is woken, and each affected job gets a
node-update evaluation. The drain is complete, and the flag cleared, once no allocation
stopped on the node is live any more (system jobs' allocations left running by
ignore_system_jobs do not hold it up).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from mxvm.errors import NotFound
from mxvm.models import AllocStop, EvalTrigger, Evaluation, Node
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.database import Conn
from mxvm.store.evaluations import NewEvaluation, insert_evaluations
from mxvm.store.job_status import refresh_statuses
from mxvm.store.plans import notify_nodes, stop_allocations
from mxvm.store.queries import q

DRAIN_DESCRIPTION = "node drain"


class Drained(NamedTuple):
    node: Node
    stopped: list[tuple[str, str]]  # (allocation id, job id)
    evaluations: list[Evaluation]


async def complete_drains(conn: Conn, node_ids: Sequence[str]) -> list[str]:
    """Clear the drain flag of those nodes that have nothing left to drain; their ids."""
    locked = [r["id"] for r in await conn.fetch(q("nodes_lock_draining"), list(node_ids))]
    if not locked:
        return []
    return [r["id"] for r in await conn.fetch(q("nodes_drain_complete"), locked)]


class DrainStore(StoreBase):
    async def drain_node(self, node_id: str, *, enable: bool, ignore_system_jobs: bool) -> Drained:
        """Start (enable) or cancel a node's drain. Cancelling only clears the flag: the node
        stays ineligible, and what was stopped stays stopped."""
        async with self.db.transaction() as conn:
            if await conn.fetchval(q("node_lock"), node_id) is None:
                raise NotFound(f"node {node_id} not found")
            stopped: list[tuple[str, str]] = []
            if enable:
                # Stopped as a plan stops allocations (node index bumped, each stamped).
                job_of = {
                    r["id"]: r["job_id"]
                    for r in await conn.fetch(q("allocs_to_drain"), node_id, ignore_system_jobs)
                }
                stops = [AllocStop(alloc_id=i, description=DRAIN_DESCRIPTION) for i in job_of]
                stopped = [(r["id"], job_of[r["id"]]) for r in await stop_allocations(conn, stops)]
            if stopped:
                await notify_nodes(conn, [node_id])  # the agent stops them
            row = await conn.fetchrow(q("node_set_drain"), node_id, enable)
            assert row is not None
            job_ids = sorted({job_id for _, job_id in stopped})
            evals = await insert_evaluations(
                conn, [NewEvaluation(j, EvalTrigger.NODE_UPDATE, node_id) for j in job_ids]
            )
            await refresh_statuses(conn, job_ids)
        return Drained(rows.node(row), stopped, evals)

    async def complete_drains(self, node_ids: Sequence[str]) -> list[str]:
        """Nodes whose drain this finished (no allocation stopped on them is live any more)."""
        async with self.db.transaction() as conn:
            return await complete_drains(conn, node_ids)
