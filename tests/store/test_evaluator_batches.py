"""The evaluator writes a batch's outcomes while it reads and plans the next batch, and never
leaves an evaluation blocked on a snapshot older than the last capacity change."""

from __future__ import annotations

import asyncio

from mxvm.coordinator.evaluator import Evaluator
from mxvm.models import EvalOutcome, EvalStatus, JobSpec
from mxvm.store import Store
from tests.store.conftest import registration


def _spec(name: str) -> JobSpec:
    task = {"argv": ["x"], "driver": "fake", "memory_mb": 256}
    return JobSpec.model_validate({"name": name, "type": "service", "task": task})


class HeldWrites(Store):
    """The real store, with the evaluations' outcomes held back until `release` is set."""

    release: asyncio.Event
    written: list[list[str]]

    async def finish_evaluations(
        self, outcomes: list[EvalOutcome], capacity_seq: int | None = None
    ) -> list[str]:
        await self.release.wait()
        requeued = await super().finish_evaluations(outcomes, capacity_seq)
        self.written.append([o.evaluation.id for o in outcomes])
        return requeued


async def test_the_next_batch_is_planned_while_outcomes_are_written(pg_dsn: str) -> None:
    store = await HeldWrites.connect(pg_dsn)
    assert isinstance(store, HeldWrites)
    store.release, store.written = asyncio.Event(), []
    try:
        await store.migrate()
        await store.register_node(registration("n1"), subnet_pool="10.98.0.0/16", subnet_prefix=24)
        epoch = 1
        await store.claim_epoch(epoch)
        evaluator = Evaluator(store, epoch)
        first_job, first = await store.create_job(_spec("first"))
        assert await evaluator.run_once() == 1  # placed; its outcome is being written
        assert len(await store.job_allocations(first_job.id)) == 1
        assert (await store.get_evaluation(first.id)).status == EvalStatus.PENDING
        # Its evaluation is still pending in Postgres, but it is not taken again...
        assert await evaluator.run_once() == 0
        # ...while a later job is placed at once, beside the first's allocation.
        second_job, second = await store.create_job(_spec("second"))
        run = asyncio.create_task(evaluator.run_once())
        await asyncio.sleep(0.3)
        assert len(await store.job_allocations(second_job.id)) == 1
        assert not run.done()  # its outcomes wait for the first batch's, to keep their order
        store.release.set()
        assert await run == 1
        await evaluator.outcomes_written()
        assert store.written == [[first.id], [second.id]]
        for ev in (first, second):
            assert (await store.get_evaluation(ev.id)).status == EvalStatus.COMPLETE
        assert len(await store.job_allocations(first_job.id)) == 1  # never placed twice
    finally:
        await store.close()


async def test_capacity_that_changes_while_an_evaluation_is_planned_is_not_missed(
    pg_dsn: str,
) -> None:
    """A node joins (its unblock finds nothing blocked: the evaluation is still pending) after
    the evaluator read a cluster without it and before the evaluation's blocked outcome is
    written. The outcome must not stand: the evaluation is planned again, onto the node."""
    store = await HeldWrites.connect(pg_dsn)
    assert isinstance(store, HeldWrites)
    store.release, store.written = asyncio.Event(), []
    woken = asyncio.Event()
    try:
        await store.migrate()
        epoch = 1
        await store.claim_epoch(epoch)
        evaluator = Evaluator(store, epoch, wake=woken.set)
        job, ev = await store.create_job(_spec("waits"))
        assert await evaluator.run_once() == 1  # no node: blocked, written while held
        await store.register_node(registration("n1"), subnet_pool="10.98.0.0/16", subnet_prefix=24)
        assert await store.unblock_evaluations() == 0  # nothing blocked yet to unblock
        store.release.set()
        await evaluator.outcomes_written()
        assert woken.is_set()
        got = await store.get_evaluation(ev.id)
        assert got.status == EvalStatus.PENDING, got
        assert await evaluator.run_once() == 1
        await evaluator.outcomes_written()
        assert (await store.get_evaluation(ev.id)).status == EvalStatus.COMPLETE
        assert len(await store.job_allocations(job.id)) == 1
        # With no change since its snapshot, a blocked outcome stands.
        other, ev2 = await store.create_job(
            JobSpec.model_validate(
                {"name": "huge", "task": {"argv": ["x"], "driver": "fake", "memory_mb": 10**6}}
            )
        )
        woken.clear()
        assert await evaluator.run_once() == 1
        await evaluator.outcomes_written()
        assert (await store.get_evaluation(ev2.id)).status == EvalStatus.BLOCKED
        assert not woken.is_set() and await store.job_allocations(other.id) == []
    finally:
        await store.close()
