"""Jobs: submit and stop (each with its evaluation, in one transaction), and derived status."""

from __future__ import annotations

import uuid

import asyncpg

from mxvm.errors import Conflict, NotFound
from mxvm.models import EvalTrigger, Evaluation, Job, JobSpec, JobStatus, JobType
from mxvm.store import rows
from mxvm.store.base import StoreBase
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
        job_id = str(uuid.uuid4())
        try:
            async with self.db.transaction() as conn:
                jrow = await conn.fetchrow(
                    q("job_insert"),
                    job_id,
                    spec.name,
                    spec.type.value,
                    spec.priority,
                    spec.model_dump(mode="json"),
                )
                erow = await conn.fetchrow(
                    q("eval_insert"),
                    str(uuid.uuid4()),
                    job_id,
                    EvalTrigger.JOB_REGISTER.value,
                    None,
                    None,
                )
                await conn.execute(q("evals_notify"))
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(
                f"a job named {spec.name!r} is already live; stop it first", name=spec.name
            ) from exc
        assert jrow is not None and erow is not None
        return rows.job(jrow), rows.evaluation(erow)

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

    async def refresh_job_status(self, job_id: str) -> JobStatus | None:
        r = await self.db.fetchrow(q("job_status_inputs"), job_id)
        if r is None:
            return None
        status = derive_status(
            JobType(r["type"]), r["stop"], r["live"], r["total"], r["open_evals"]
        )
        await self.db.execute(q("job_set_status"), job_id, status.value)
        return status

    async def live_system_job_ids(self) -> list[str]:
        return [r["id"] for r in await self.db.fetch(q("jobs_system_live"))]

    async def refresh_many(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            await self.refresh_job_status(job_id)
