"""Jobs: submit and stop (each with its evaluation, in one transaction), and derived status."""

from __future__ import annotations

import uuid

import asyncpg

from mxvm.errors import Conflict, InvalidSpec, NotFound
from mxvm.models import EvalTrigger, Evaluation, Job, JobSpec, JobStatus, JobType
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.database import Conn
from mxvm.store.queries import q


def derive_status(
    job_type: JobType, stop: bool, live: int, total: int, open_evals: int
) -> JobStatus:
    if stop:
        return JobStatus.RUNNING if live else JobStatus.DEAD
    if live:
        return JobStatus.RUNNING
    batchlike = job_type in (JobType.BATCH, JobType.SYSBATCH)
    if batchlike and total and not open_evals:
        return JobStatus.COMPLETE
    return JobStatus.PENDING


class JobStore(StoreBase):
    async def create_job(self, spec: JobSpec) -> tuple[Job, Evaluation]:
        """Insert the job and its first evaluation, unless its memory is below the minimum
        that nodes report for its image (InvalidSpec: such a guest could never boot)."""
        job_id, eval_id = str(uuid.uuid4()), str(uuid.uuid4())
        try:
            row = await self.db.fetchrow(
                q("job_submit"),
                job_id,
                spec.name,
                spec.type.value,
                spec.priority,
                spec.model_dump(mode="json"),
                eval_id,
                f"image.{spec.task.image}.min_memory_mb",
                spec.task.memory_mb,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(
                f"a job named {spec.name!r} is already live; stop it first", name=spec.name
            ) from exc
        assert row is not None
        if row["id"] is None:
            minimum = row["image_min_memory"]
            raise InvalidSpec(
                f"task.memory_mb {spec.task.memory_mb} is below image {spec.task.image!r}'s "
                f"minimum of {minimum} MiB",
                errors=[{"field": "task.memory_mb", "message": f"must be >= {minimum}"}],
            )
        ev = Evaluation(
            id=eval_id,
            job_id=job_id,
            trigger=EvalTrigger.JOB_REGISTER,
            created_at=row["eval_created_at"],
            modified_at=row["eval_modified_at"],
        )
        return rows.job(row), ev

    async def get_job(self, job_id: str) -> Job:
        row = await self.db.fetchrow(q("job_get"), job_id)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return rows.job(row)

    async def list_jobs(self) -> list[Job]:
        return [rows.job(r) for r in await self.db.fetch(q("job_list"))]

    async def stop_job(self, job_id: str) -> tuple[Job, Evaluation | None]:
        """Mark the job stopped and queue an evaluation that stops its allocations.

        Stopping a stopped job is not an error: it returns the job and no new evaluation.
        """
        async with self.db.transaction() as conn:
            jrow = await conn.fetchrow(q("job_stop"), job_id)
            if jrow is None:
                current = await conn.fetchrow(q("job_get"), job_id)
                if current is None:
                    raise NotFound(f"job {job_id} not found")
                return rows.job(current), None
            erow = await conn.fetchrow(
                q("eval_insert"),
                str(uuid.uuid4()),
                job_id,
                EvalTrigger.JOB_DEREGISTER.value,
                None,
                None,
            )
            await conn.execute(q("evals_notify"))
        assert erow is not None
        return rows.job(jrow), rows.evaluation(erow)

    async def get_jobs(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs that exist among `job_ids`, by id."""
        return {r["id"]: rows.job(r) for r in await self.db.fetch(q("jobs_get"), job_ids)}

    async def live_system_job_ids(self) -> list[str]:
        return [r["id"] for r in await self.db.fetch(q("jobs_system_live"))]


async def refresh_statuses(conn: Conn, job_ids: list[str]) -> dict[str, JobStatus]:
    """Re-derive the jobs' statuses from their allocations and evaluations, in two statements
    whatever their number; call it inside the transaction that changed those inputs."""
    if not job_ids:
        return {}
    out = {
        r["id"]: derive_status(
            JobType(r["type"]), r["stop"], r["live"], r["total"], r["open_evals"]
        )
        for r in await conn.fetch(q("jobs_status_inputs"), job_ids)
    }
    await conn.execute(q("jobs_set_status"), list(out), [s.value for s in out.values()])
    return out
