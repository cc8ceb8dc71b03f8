"""The evaluation queue: newest per job first, a batch's outcomes recorded together, older
open evaluations superseded, delayed follow-ups queued, job statuses re-derived."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mxvm.models import EvalOutcome, EvalStatus, EvalTrigger, JobSpec, JobStatus
from mxvm.store import Store
from mxvm.store.evaluations import NewEvaluation


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
