"""Jobs: submit and stop, each with its evaluation in the same statement or transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from mxvm.errors import Conflict, InvalidSpec, MxvmError, NotFound
from mxvm.models import EvalTrigger, Evaluation, Job, JobSpec
from mxvm.store import rows
from mxvm.store.base import StoreBase
from mxvm.store.evaluations import NewEvaluation, insert_evaluations
from mxvm.store.queries import q


def _first_evaluation(eval_id: str, row: asyncpg.Record) -> Evaluation:
    return Evaluation(
        id=eval_id,
        job_id=row["id"],
        trigger=EvalTrigger.JOB_REGISTER,
        created_at=row["eval_created_at"],
        modified_at=row["eval_modified_at"],
    )


class JobStore(StoreBase):
    async def create_job(self, spec: JobSpec) -> tuple[Job, Evaluation]:
        """Insert the job and its first evaluation (see create_jobs)."""
        [created] = await self.create_jobs([spec])
        if isinstance(created, MxvmError):
            raise created
        return created

    async def create_jobs(
        self, specs: Sequence[JobSpec]
    ) -> list[tuple[Job, Evaluation] | MxvmError]:
        """Insert each job and its first evaluation, all in one statement; per spec, in
        order, the job and evaluation or why not: Conflict when a live job has its name,
        InvalidSpec when its memory is below the minimum that nodes report for its image
        (such a guest could never boot)."""
        ids = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in specs]
        found = await self.db.fetch(
            q("job_submit"),
            [job_id for job_id, _ in ids],
            [s.name for s in specs],
            [s.type.value for s in specs],
            [s.priority for s in specs],
            [s.model_dump_json() for s in specs],
            [eval_id for _, eval_id in ids],
            [f"image.{s.task.image}.min_memory_mb" for s in specs],
            [s.task.memory_mb for s in specs],
        )
        out: list[tuple[Job, Evaluation] | MxvmError] = []
        for spec, (_, eval_id), row in zip(specs, ids, found, strict=True):
            if row["id"] is not None:
                out.append((rows.job_of(spec, row), _first_evaluation(eval_id, row)))
            elif row["below_minimum"]:
                minimum = row["image_min_memory"]
                out.append(
                    InvalidSpec(
                        f"task.memory_mb {spec.task.memory_mb} is below image "
                        f"{spec.task.image!r}'s minimum of {minimum} MiB",
                        errors=[{"field": "task.memory_mb", "message": f"must be >= {minimum}"}],
                    )
                )
            else:
                out.append(
                    Conflict(
                        f"a job named {spec.name!r} is already live; stop it first",
                        name=spec.name,
                    )
                )
        return out

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
            [ev] = await insert_evaluations(
                conn, [NewEvaluation(job_id, EvalTrigger.JOB_DEREGISTER)]
            )
        return rows.job(jrow), ev

    async def get_jobs(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs that exist among `job_ids`, by id."""
        return {r["id"]: rows.job(r) for r in await self.db.fetch(q("jobs_get"), job_ids)}

    async def live_system_job_ids(self) -> list[str]:
        return [r["id"] for r in await self.db.fetch(q("jobs_system_live"))]
