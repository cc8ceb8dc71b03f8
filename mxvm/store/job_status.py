"""A job's status, derived from its allocations and open evaluations (never set directly)."""

from __future__ import annotations

from mxvm.models import JobStatus, JobType
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
