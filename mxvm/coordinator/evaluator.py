"""The evaluator: the leader's loop that turns evaluations into committed plans.

It is the only caller of store.apply_plans. The ready evaluations are taken as one batch: they
share one cluster snapshot, each plan is made against it with the earlier plans' placements
already counted, and the batch commits in two transactions whatever its size (the plans; then
the evaluations' outcomes and the jobs' statuses). That keeps a burst of submits from costing a
dozen Postgres round trips per job. Placements that went stale at commit are re-planned against
a fresh snapshot (a few times), then the evaluation is blocked.

The outcomes are written in the background while the next batch is read and planned (their
plans are committed already, so the next batch sees the placements): in a burst, the submits
that came in behind a first small batch no longer wait for its bookkeeping. Evaluations whose
outcomes are still being written are left out of the next batch; the writes keep their order.

An evaluation is blocked only if no capacity changed since its snapshot was read: a change's
unblock only sees evaluations already blocked, so one blocked by a round that read the cluster
before the change (a node came back while it was being planned) is planned again instead.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from mxvm.errors import BackendUnavailable
from mxvm.models import (
    Allocation,
    ClusterSnapshot,
    EvalOutcome,
    EvalStatus,
    Evaluation,
    Job,
    Plan,
    PlanResult,
)
from mxvm.scheduler import SchedulerConfig, schedule
from mxvm.store import Store

log = logging.getLogger(__name__)

MAX_PLAN_ATTEMPTS = 3


def _new_id() -> str:
    return str(uuid.uuid4())


class Evaluator:
    def __init__(
        self,
        store: Store,
        epoch: int,
        config: SchedulerConfig | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        """`wake`: have run_once called again soon (evaluations were left pending)."""
        self.store = store
        self.epoch = epoch
        self.config = config or SchedulerConfig()
        self._wake = wake
        self._writer: asyncio.Task[None] | None = None
        self._writing: set[str] = set()  # evaluations whose outcomes the writer is writing

    async def run_once(self, limit: int = 64) -> int:
        """Process the evaluations that are ready now; returns how many. Their outcomes are
        being written when this returns (`outcomes_written` waits for them)."""
        writing = self._writing  # as the read starts (the writer may finish during it)
        ready = await self.store.ready_evaluations(limit + len(writing))
        evals = [ev for ev in ready if ev.id not in writing][:limit]
        if not evals:
            return 0
        job_ids = sorted({ev.job_id for ev in evals})
        capacity_seq = await self.store.capacity_seq()  # before the snapshot: see above
        # Three independent reads, side by side on the evaluator's own connections.
        jobs, snapshot, allocs = await asyncio.gather(
            self.store.get_jobs(job_ids),
            self.store.snapshot(),
            self.store.jobs_allocations(job_ids),
        )
        outcomes = [
            EvalOutcome(evaluation=ev, status=EvalStatus.CANCELED, description="job gone")
            for ev in evals
            if ev.job_id not in jobs
        ]
        todo = [ev for ev in evals if ev.job_id in jobs]
        for attempt in range(MAX_PLAN_ATTEMPTS):
            if not todo:
                break
            if attempt:
                allocs = await self.store.jobs_allocations([ev.job_id for ev in todo])
            plans = [self._plan(snapshot, jobs[ev.job_id], allocs[ev.job_id], ev) for ev in todo]
            results = await self.store.apply_plans(plans, self.epoch)
            retry = []
            for ev, plan, result in zip(todo, plans, results, strict=True):
                if result.fully_committed or attempt == MAX_PLAN_ATTEMPTS - 1:
                    outcomes.append(outcome(ev, plan, result))
                else:
                    log.info(
                        "plan.partial %s %s", ev.id, result.rejected_nodes, extra={"eval_id": ev.id}
                    )
                    retry.append(ev)
            todo = retry
            if todo:
                snapshot = await self.store.snapshot()
        await self.outcomes_written()  # the previous batch's first: they supersede in order
        self._writing = {o.evaluation.id for o in outcomes}
        self._writer = asyncio.create_task(
            self._write(outcomes, capacity_seq), name="eval-outcomes"
        )
        return len(evals)

    async def outcomes_written(self) -> None:
        """Until the last batch's outcomes are written (or failed to be: its evaluations then
        stay pending and are evaluated again, which finds their placements made)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write(self, outcomes: list[EvalOutcome], capacity_seq: int) -> None:
        requeued: list[str] = []
        try:
            requeued = await self.store.finish_evaluations(outcomes, capacity_seq)
        except BackendUnavailable as exc:
            log.warning("evaluator.outcomes_unwritten %s", exc.detail)
        finally:
            self._writing = set()
        if requeued:
            log.info("eval.requeued %s: capacity changed while they were planned", requeued)
            self._wake()
        for o in outcomes:
            if o.status == EvalStatus.BLOCKED and o.evaluation.id not in requeued:
                log.info(
                    "eval.blocked %s %s",
                    o.evaluation.id,
                    o.failures,
                    extra={"eval_id": o.evaluation.id},
                )

    def _plan(
        self, snapshot: ClusterSnapshot, job: Job, allocs: list[Allocation], ev: Evaluation
    ) -> Plan:
        plan = schedule(
            snapshot,
            job,
            allocs,
            eval_id=ev.id,
            now=datetime.now(UTC),
            new_id=_new_id,
            config=self.config,
        )
        for a in plan.placements:
            snapshot.account(a)  # the batch's next plans see these resources as taken
        return plan


def outcome(ev: Evaluation, plan: Plan, result: PlanResult) -> EvalOutcome:
    """Complete, or blocked with what could not be placed (unplaced or gone stale)."""
    stale = sum(1 for a in plan.placements if a.node_id in result.rejected_nodes)
    queued = plan.unplaced + stale
    if queued:
        desc = f"{queued} allocation(s) could not be placed"
        if not plan.failures:
            desc += ": no nodes to place on"
        status = EvalStatus.BLOCKED
    else:
        status = EvalStatus.COMPLETE
        desc = f"placed {len(result.committed)}, stopped {len(result.stopped)}"
        if result.withdrawn:
            desc += f" ({len(result.withdrawn)} not placed: the job was stopped meanwhile)"
    return EvalOutcome(
        evaluation=ev,
        status=status,
        description=desc,
        failures=plan.failures,
        queued=queued,
        follow_up_at=plan.next_eval_at,
    )
