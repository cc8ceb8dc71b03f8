"""Node drain: move what runs on a node elsewhere, without taking services down.

Enabling a drain makes the node ineligible and notes its strategy (deadline, whether system
jobs stay). What to stop, and when, is decided by `mxvm.scheduler.drain` each time the
leader's drainer looks (and once right away): service jobs a few at a time, batch jobs not
before the deadline, system jobs last. Each step is one transaction under the node's row
lock: the allocations get desired STOP ("node drain"), the agent is woken, and each affected
job gets a node-update evaluation that places the replacements. The drain is complete, and
the flag cleared, once nothing is live on the node (but the system jobs it leaves running).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from mxvm.errors import NotFound
from mxvm.models import AllocStop, EvalTrigger, Evaluation, JobType, Node
from mxvm.scheduler.drain import JobAvailability, LiveAlloc, drain_stops
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
    completed: bool  # this step finished the drain


async def complete_drains(conn: Conn, node_ids: Sequence[str]) -> list[str]:
    """Clear the drain flag of those nodes that have nothing left to drain; their ids."""
    locked = [r["id"] for r in await conn.fetch(q("nodes_lock_draining"), list(node_ids))]
    if not locked:
        return []
    return [r["id"] for r in await conn.fetch(q("nodes_drain_complete"), locked)]


async def _stop_due(conn: Conn, node_id: str) -> list[tuple[str, str]]:
    """Stop what the drain of `node_id` (row locked by the caller) stops now; (alloc, job)."""
    state = await conn.fetchrow(q("node_drain_state"), node_id)
    if state is None or not state["drain"]:
        return []
    allocs = [
        LiveAlloc(r["id"], r["job_id"], JobType(r["job_type"]), r["running"], r["stopping"])
        for r in await conn.fetch(q("drain_live_allocs"), node_id)
    ]
    if not allocs:
        return []
    services = sorted(
        {a.job_id for a in allocs if a.job_type == JobType.SERVICE and not a.stopping}
    )
    jobs = {
        r["id"]: JobAvailability(r["count"], r["max_parallel"], r["running"])
        for r in await conn.fetch(q("drain_job_availability"), services)
    }
    chosen = drain_stops(
        allocs,
        jobs,
        past_deadline=state["past_deadline"],
        ignore_system_jobs=state["drain_ignore_system"],
    )
    if not chosen:
        return []
    job_of = {a.id: a.job_id for a in allocs}
    stops = [AllocStop(alloc_id=i, description=DRAIN_DESCRIPTION) for i in chosen]
    # Stopped as a plan stops allocations (node index bumped, each stamped).
    stopped = [(r["id"], job_of[r["id"]]) for r in await stop_allocations(conn, stops)]
    if stopped:
        await notify_nodes(conn, [node_id])  # the agent stops them
    return stopped


async def _step(conn: Conn, node_id: str, *, stop_due: bool) -> Drained:
    """Stop what is due now (if `stop_due`), re-evaluate the stopped allocations' jobs (which
    places their replacements) and refresh their statuses, and complete the drain if nothing
    is left. The node's row is locked by the caller."""
    stopped = await _stop_due(conn, node_id) if stop_due else []
    job_ids = sorted({job_id for _, job_id in stopped})
    evals = await insert_evaluations(
        conn, [NewEvaluation(j, EvalTrigger.NODE_UPDATE, node_id) for j in job_ids]
    )
    await refresh_statuses(conn, job_ids)
    completed = bool(await complete_drains(conn, [node_id]))
    row = await conn.fetchrow(q("node_get"), node_id)
    assert row is not None
    return Drained(rows.node(row), stopped, evals, completed)


class DrainStore(StoreBase):
    async def drain_node(
        self,
        node_id: str,
        *,
        enable: bool,
        ignore_system_jobs: bool,
        deadline_s: float | None,
    ) -> Drained:
        """Start (enable) or cancel a node's drain, stopping what it stops right away (with
        `deadline_s` 0: everything; None: no deadline). Cancelling only clears the flag: the
        node stays ineligible, and what was stopped stays stopped."""
        async with self.db.transaction() as conn:
            if await conn.fetchval(q("node_lock"), node_id) is None:
                raise NotFound(f"node {node_id} not found")
            await conn.execute(q("node_set_drain"), node_id, enable, deadline_s, ignore_system_jobs)
            return await _step(conn, node_id, stop_due=enable)

    async def draining_node_ids(self) -> list[str]:
        return [r["id"] for r in await self.db.fetch(q("nodes_draining"))]

    async def drain_step(self, node_id: str) -> Drained | None:
        """One look at a draining node: stop what is due now (the leader's drainer). None
        when the node is gone; nothing stopped when it no longer drains."""
        async with self.db.transaction() as conn:
            if await conn.fetchval(q("node_lock"), node_id) is None:
                return None
            return await _step(conn, node_id, stop_due=True)

    async def complete_drains(self, node_ids: Sequence[str]) -> list[str]:
        """Nodes whose drain this finished (nothing the drain removes is live any more)."""
        async with self.db.transaction() as conn:
            return await complete_drains(conn, node_ids)
