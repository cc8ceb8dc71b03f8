"""Jobs and their allocations."""

from __future__ import annotations

from aiohttp import web

from mxvm.api.http import body, coordinator, reply
from mxvm.api.schemas import JobStopped, JobSubmitted
from mxvm.models import JobSpec


async def list_jobs(request: web.Request) -> web.Response:
    return reply(await coordinator(request).store.list_jobs())


async def submit_job(request: web.Request) -> web.Response:
    spec = await body(request, JobSpec)
    job, ev = await coordinator(request).submit_job(spec)
    return reply(JobSubmitted(job=job, evaluation=ev), status=201)


async def get_job(request: web.Request) -> web.Response:
    return reply(await coordinator(request).store.get_job(request.match_info["id"]))


async def stop_job(request: web.Request) -> web.Response:
    job, ev = await coordinator(request).stop_job(request.match_info["id"])
    return reply(JobStopped(job=job, evaluation=ev), status=202 if ev else 200)


async def job_allocations(request: web.Request) -> web.Response:
    store = coordinator(request).store
    job = await store.get_job(request.match_info["id"])  # 404 for an unknown job
    return reply(await store.job_allocations(job.id))
