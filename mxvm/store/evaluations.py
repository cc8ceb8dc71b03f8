"""Evaluations: the queue of reasons to re-plan, with blocked ones retried on capacity change."""

from __future__ import annotations

import uuid
from datetime import datetime

from mxvm.errors import NotFound
from mxvm.models import EvalStatus, EvalTrigger, Evaluation
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.queries import q


class EvaluationStore(StoreBase):
    async def create_evaluation(
        self,
        job_id: str,
        trigger: EvalTrigger,
        *,
        node_id: str | None = None,
        wait_until: datetime | None = None,
    ) -> Evaluation:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                q("eval_insert"), str(uuid.uuid4()), job_id, trigger.value, node_id, wait_until
            )
            await conn.execute(q("evals_notify"))
        assert row is not None
        return rows.evaluation(row)

    async def get_evaluation(self, eval_id: str) -> Evaluation:
        row = await self.db.fetchrow(q("eval_get"), eval_id)
        if row is None:
            raise NotFound(f"evaluation {eval_id} not found")
        return rows.evaluation(row)

    async def ready_evaluations(self, limit: int = 32) -> list[Evaluation]:
        """The newest runnable pending evaluation of each job, oldest job first."""
        return [rows.evaluation(r) for r in await self.db.fetch(q("evals_ready"), limit)]

    async def finish_evaluation(
        self,
        ev: Evaluation,
        status: EvalStatus,
        *,
        description: str = "",
        failures: dict[str, int] | None = None,
        queued: int = 0,
    ) -> Evaluation:
        """Record the outcome; older open evaluations of the same job are superseded by it."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                q("eval_finish"), ev.id, status.value, description, failures or {}, queued
            )
            if row is None:
                raise NotFound(f"evaluation {ev.id} not found")
            await conn.execute(q("evals_supersede"), ev.id, ev.job_id, row["created_at"])
        return rows.evaluation(row)

    async def unblock_evaluations(self) -> int:
        async with self.db.transaction() as conn:
            n = len(await conn.fetch(q("evals_unblock")))
            if n:
                await conn.execute(q("evals_notify"))
        return n
