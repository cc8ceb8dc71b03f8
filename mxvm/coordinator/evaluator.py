"""The evaluator: the leader's loop that turns evaluations into committed plans.

It is the only caller of store.apply_plan. A batch of ready evaluations shares one cluster
snapshot, kept current in memory with what each plan committed; placements that went stale
are re-planned against a fresh snapshot (a few times), then the evaluation is blocked.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from mxvm.errors import NotFound
from mxvm.models import ClusterSnapshot, EvalStatus, EvalTrigger, Evaluation, Plan, PlanResult
from mxvm.scheduler import SchedulerConfig, schedule
from mxvm.store import Store

log = logging.getLogger(__name__)

MAX_PLAN_ATTEMPTS = 3


def _new_id() -> str:
    return str(uuid.uuid4())


def record_committed(snapshot: ClusterSnapshot, plan: Plan, result: PlanResult) -> None:
    """Fold what the store committed into the in-memory snapshot."""
    committed = set(result.committed)
    for a in plan.placements:
        if a.id in committed:
            snapshot.account(a)


class Evaluator:
    def __init__(self, store: Store, epoch: int, config: SchedulerConfig | None = None) -> None:
        self.store = store
        self.epoch = epoch
        self.config = config or SchedulerConfig()

    async def run_once(self, limit: int = 64) -> int:
        """Process the evaluations that are ready now; returns how many."""
        evals = await self.store.ready_evaluations(limit)
        if not evals:
            return 0
        snapshot = await self.store.snapshot()
        for ev in evals:
            snapshot = await self.process(ev, snapshot)
        return len(evals)

    async def process(self, ev: Evaluation, snapshot: ClusterSnapshot) -> ClusterSnapshot:
        try:
            job = await self.store.get_job(ev.job_id)
        except NotFound:
            await self.store.finish_evaluation(ev, EvalStatus.CANCELED, description="job gone")
            return snapshot
        plan = result = None
        for _attempt in range(MAX_PLAN_ATTEMPTS):
            allocs = await self.store.job_allocations(job.id)
            now = datetime.now(UTC)
            plan = schedule(snapshot, job, allocs, eval_id=ev.id, now=now, new_id=_new_id)
            result = await self.store.apply_plan(plan, self.epoch)
            record_committed(snapshot, plan, result)
            if result.fully_committed:
                break
            log.info("plan.partial %s %s", ev.id, result.rejected_nodes, extra={"eval_id": ev.id})
            snapshot = await self.store.snapshot()
        assert plan is not None and result is not None
        await self._finish(ev, plan, result)
        await self.store.refresh_job_status(job.id)
        return snapshot

    async def _finish(self, ev: Evaluation, plan: Plan, result: PlanResult) -> None:
        stale = sum(1 for a in plan.placements if a.node_id in result.rejected_nodes)
        queued = plan.unplaced + stale
        if queued:
            desc = f"{queued} allocation(s) could not be placed"
            if not plan.failures:
                desc += ": no nodes to place on"
            await self.store.finish_evaluation(
                ev, EvalStatus.BLOCKED, description=desc, failures=plan.failures, queued=queued
            )
            log.info("eval.blocked %s %s", ev.id, plan.failures, extra={"eval_id": ev.id})
        else:
            await self.store.finish_evaluation(
                ev,
                EvalStatus.COMPLETE,
                description=f"placed {len(result.committed)}, stopped {len(result.stopped)}",
                failures=plan.failures,
            )
        if plan.next_eval_at is not None:
            await self.store.create_evaluation(
                ev.job_id, EvalTrigger.ALLOC_FAILURE, wait_until=plan.next_eval_at
            )
