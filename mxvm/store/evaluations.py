"""Evaluations: the queue of reasons to re-plan, with blocked ones retried on capacity change."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import NamedTuple

from mxvm.errors import NotFound
from mxvm.models import EvalOutcome, EvalTrigger, Evaluation
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.database import Conn
from mxvm.store.job_status import refresh_statuses
from mxvm.store.queries import q


class NewEvaluation(NamedTuple):
    job_id: str
    trigger: EvalTrigger
    node_id: str | None = None
    wait_until: datetime | None = None


async def insert_evaluations(conn: Conn, new: list[NewEvaluation]) -> list[Evaluation]:
    """Queue evaluations inside the caller's transaction and wake the evaluator."""
    if not new:
        return []
    created = await conn.fetch(
        q("evals_insert_many"),
        [str(uuid.uuid4()) for _ in new],
        [n.job_id for n in new],
        [n.trigger.value for n in new],
        [n.node_id for n in new],
        [n.wait_until for n in new],
    )
    await conn.execute(q("evals_notify"))
    return [rows.evaluation(r) for r in created]


class EvaluationStore(StoreBase):
    async def notify_evaluators(self) -> None:
        """Wake the evaluator of every coordinator (Postgres NOTIFY `mxvm_eval`)."""
        await self.db.execute(q("evals_notify"))

    async def get_evaluation(self, eval_id: str) -> Evaluation:
        row = await self.db.fetchrow(q("eval_get"), eval_id)
        if row is None:
            raise NotFound(f"evaluation {eval_id} not found")
        return rows.evaluation(row)

    async def ready_evaluations(self, limit: int = 32) -> list[Evaluation]:
        """The newest runnable pending evaluation of each job, oldest job first."""
        return [rows.evaluation(r) for r in await self.db.fetch(q("evals_ready"), limit)]

    async def capacity_seq(self) -> int:
        """How many capacity changes there have been: read before planning, handed back to
        finish_evaluations."""
        return int(await self.db.fetchval(q("capacity_seq")))

    async def finish_evaluations(
        self, outcomes: list[EvalOutcome], capacity_seq: int | None = None
    ) -> list[str]:
        """Record a batch's outcomes in one transaction: each evaluation's status, the older
        open evaluations of its job superseded, delayed follow-ups queued, and the jobs'
        statuses re-derived. A blocked outcome planned before the last capacity change
        (`capacity_seq`: the count read before the snapshot; None: not checked) is left
        pending to be planned again; returns those evaluations."""
        if not outcomes:
            return []
        async with self.db.transaction() as conn:
            requeued = await conn.fetch(
                q("evals_finish_many"),
                [o.evaluation.id for o in outcomes],
                [o.status.value for o in outcomes],
                [o.description for o in outcomes],
                [json.dumps(o.failures) for o in outcomes],
                [o.queued for o in outcomes],
                capacity_seq,
            )
            follow = [
                NewEvaluation(o.evaluation.job_id, EvalTrigger.ALLOC_FAILURE, None, o.follow_up_at)
                for o in outcomes
                if o.follow_up_at is not None
            ]
            await insert_evaluations(conn, follow)
            await refresh_statuses(conn, sorted({o.evaluation.job_id for o in outcomes}))
        return [r["id"] for r in requeued]

    async def create_evaluations(self, new: list[NewEvaluation]) -> list[Evaluation]:
        """Queue several evaluations in one transaction, and re-derive their jobs' statuses."""
        if not new:
            return []
        async with self.db.transaction() as conn:
            created = await insert_evaluations(conn, new)
            await refresh_statuses(conn, sorted({n.job_id for n in new}))
        return created

    async def unblock_evaluations(self) -> int:
        async with self.db.transaction() as conn:
            await conn.execute(q("capacity_changed"))
            n = len(await conn.fetch(q("evals_unblock")))
            if n:
                await conn.execute(q("evals_notify"))
        return n
