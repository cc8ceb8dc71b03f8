"""The evaluation queue: newest per job first, a batch's outcomes recorded together, older
open evaluations superseded, delayed follow-ups queued, job statuses re-derived."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from mxvm.models import EvalOutcome, EvalStatus, EvalTrigger, JobSpec, JobStatus
from mxvm.store import Store
from mxvm.store.evaluations import NewEvaluation
from mxvm.store.queries import q


def _spec(name: str) -> JobSpec:
    return JobSpec.model_validate(
        {"name": name, "type": "batch", "task": {"argv": ["true"], "driver": "fake"}}
    )


async def test_a_batch_of_outcomes_supersedes_older_evaluations(store: Store) -> None:
    job, first = await store.create_job(_spec("a"))
    other, other_ev = await store.create_job(_spec("b"))
    await store.create_evaluations([NewEvaluation(job.id, EvalTrigger.NODE_UPDATE)])
    ready = await store.ready_evaluations(10)
    assert {e.job_id for e in ready} == {job.id, other.id}  # the newest of each job
    newest = next(e for e in ready if e.job_id == job.id)
    assert newest.id != first.id
    later = datetime.now(UTC) + timedelta(hours=1)
    await store.finish_evaluations(
        [
            EvalOutcome(evaluation=newest, status=EvalStatus.COMPLETE, description="placed 0"),
            EvalOutcome(
                evaluation=next(e for e in ready if e.job_id == other.id),
                status=EvalStatus.BLOCKED,
                failures={"memory": 2},
                queued=1,
                follow_up_at=later,
            ),
        ]
    )
    old = await store.get_evaluation(first.id)
    assert old.status == EvalStatus.CANCELED
    assert old.status_description == f"superseded by {newest.id}"
    blocked = await store.get_evaluation(other_ev.id)
    assert (blocked.status, blocked.failures, blocked.queued) == (
        EvalStatus.BLOCKED,
        {"memory": 2},
        1,
    )
    # The follow-up waits for its time; nothing is ready now.
    assert await store.ready_evaluations(10) == []
    # A batch job with no allocations and a blocked evaluation is still pending.
    assert (await store.get_job(other.id)).status == JobStatus.PENDING


async def _finish_blocked(conn: asyncpg.Connection, eval_id: str, seen: int) -> list[str]:
    rows = await conn.fetch(
        q("evals_finish_many"), [eval_id], ["blocked"], ["no room"], ["{}"], [1], seen
    )
    return [r["id"] for r in rows]


async def _unblock(conn: asyncpg.Connection) -> int:
    async with conn.transaction():
        await conn.execute(q("capacity_changed"))
        return len(await conn.fetch(q("evals_unblock")))


async def test_an_unblock_racing_a_blocked_outcome_is_never_lost(store: Store, pg_dsn: str) -> None:
    """The two orders in which a capacity change can meet a blocked outcome being written,
    each with both transactions open at once: the evaluation always ends up pending."""
    finisher, unblocker = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
    try:
        # 1. The outcome is written first (holding the count's share lock): the unblock's
        # count waits for its commit, and its unblock then sees the evaluation blocked.
        _, ev = await store.create_job(_spec("first"))
        seen = await store.capacity_seq()
        tx = finisher.transaction()
        await tx.start()
        assert await _finish_blocked(finisher, ev.id, seen) == []
        unblock = asyncio.create_task(_unblock(unblocker))
        await asyncio.sleep(0.3)
        assert not unblock.done()  # waiting for the outcome's commit
        await tx.commit()
        assert await unblock == 1
        assert (await store.get_evaluation(ev.id)).status == EvalStatus.PENDING
        # 2. The count goes first (not committed yet): the outcome waits for it, then sees
        # a count newer than its snapshot's, and leaves the evaluation pending.
        _, ev2 = await store.create_job(_spec("second"))
        seen = await store.capacity_seq()
        tx = unblocker.transaction()
        await tx.start()
        await unblocker.execute(q("capacity_changed"))
        finish = asyncio.create_task(_finish_blocked(finisher, ev2.id, seen))
        await asyncio.sleep(0.3)
        assert not finish.done()  # waiting for the count's commit
        await unblocker.fetch(q("evals_unblock"))
        await tx.commit()
        assert await finish == [ev2.id]
        assert (await store.get_evaluation(ev2.id)).status == EvalStatus.PENDING
    finally:
        await finisher.close()
        await unblocker.close()
