"""The leader's garbage collector: what is long over is deleted (jobs with their allocations
and evaluations, old evaluations, long-down nodes with their subnets), and nothing that
still matters is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.test_drain import heartbeats, report
from tests.harness import Api, running, settings_for


@pytest.fixture
async def gc_api(pg_dsn: str, redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    thresholds: dict[str, float] = request.param
    settings = settings_for(pg_dsn, redis_url, gc_interval_s=0.2, **thresholds)
    async with running(settings) as api:
        yield api


def on(node: str, name: str, type_: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "task": {"driver": "fake", "argv": ["x"], "memory_mb": 256},
        "constraints": [{"attribute": "node.name", "value": node}],
        "restart": {"attempts": 0},
        "reschedule": {"attempts": 0},
    }


async def placed(api: Api, spec: dict[str, Any]) -> tuple[str, list[str], str]:
    """The job's id, its allocations' ids and its evaluation's id."""
    out = await api.ok("POST", "/api/v1/jobs", json=spec)
    await api.wait_eval(out["evaluation"]["id"])
    allocs = await api.ok("GET", f"/api/v1/jobs/{out['job']['id']}/allocations")
    assert allocs, spec["name"]
    return out["job"]["id"], [a["id"] for a in allocs], out["evaluation"]["id"]


async def status(api: Api, path: str) -> int:
    return (await api.call("GET", path))[0]


async def until_gone(api: Api, path: str, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while await status(api, path) != 404:
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    "gc_api", [{"job_gc_threshold_s": 1.0, "eval_gc_threshold_s": 1.0}], indirect=True
)
async def test_jobs_that_are_over_go_with_their_allocations_and_the_rest_stay(
    gc_api: Api,
) -> None:
    api = gc_api
    n1 = await api.register("n1")
    async with heartbeats(api, n1["id"]):
        done, [done_alloc], _ = await placed(api, on("n1", "done", "batch"))
        busy, [busy_alloc], busy_eval = await placed(api, on("n1", "busy", "batch"))
        svc, [svc_alloc], _ = await placed(api, on("n1", "svc", "service"))
        sysb, [sys_alloc], sys_eval = await placed(api, on("n1", "sysb", "sysbatch"))
        await report(api, n1["id"], [done_alloc, sys_alloc], "complete")
        await report(api, n1["id"], [busy_alloc, svc_alloc], "running")
        await api.ok("POST", f"/api/v1/jobs/{svc}/stop")  # its VM has not reported its end
        assert (await api.ok("GET", f"/api/v1/jobs/{sysb}"))["status"] == "complete"
        await api.register("n2")  # gives the sysbatch job a newer evaluation

        await until_gone(api, f"/api/v1/jobs/{done}")
        assert await status(api, f"/api/v1/allocations/{done_alloc}") == 404
        # An evaluation that is not its job's newest goes; a job's newest stays.
        await until_gone(api, f"/api/v1/evaluations/{sys_eval}")
        await asyncio.sleep(1.5)  # several more rounds past every threshold
        assert await status(api, f"/api/v1/evaluations/{busy_eval}") == 200
        assert (await api.ok("GET", f"/api/v1/jobs/{busy}"))["status"] == "running"
        assert (await api.ok("GET", f"/api/v1/jobs/{svc}"))["status"] == "running"  # stopping
        assert (await api.ok("GET", f"/api/v1/jobs/{sysb}"))["status"] == "complete"  # not stopped
        # The stopped service job goes once its VM's end is reported, and then the threshold.
        await report(api, n1["id"], [svc_alloc], "complete")
        await until_gone(api, f"/api/v1/jobs/{svc}")
        assert await status(api, f"/api/v1/allocations/{svc_alloc}") == 404
        assert await status(api, f"/api/v1/allocations/{busy_alloc}") == 200
        assert sorted(j["name"] for j in await api.ok("GET", "/api/v1/jobs")) == ["busy", "sysb"]


@pytest.mark.parametrize(
    "gc_api",
    [{"job_gc_threshold_s": 3600.0, "eval_gc_threshold_s": 1.0, "node_gc_threshold_s": 0.5}],
    indirect=True,
)
async def test_a_long_down_node_goes_and_its_subnet_is_used_again(gc_api: Api) -> None:
    api = gc_api
    keeper = await api.register("keeper")
    gone = await api.register("gone")
    batchy = await api.register("batchy")
    async with heartbeats(api, keeper["id"]):
        _, [svc_alloc], _ = await placed(api, on("gone", "svc", "service"))
        batch, [batch_alloc], _ = await placed(api, on("batchy", "batch", "batch"))
        await report(api, gone["id"], [svc_alloc], "running")
        await report(api, batchy["id"], [batch_alloc], "complete")
        # Neither heartbeats: both go down (the reaper, after a TTL), and "gone" then goes.
        await until_gone(api, f"/api/v1/nodes/{gone['id']}", timeout_s=15)
        assert await status(api, f"/api/v1/allocations/{svc_alloc}") == 404
        # "batchy" stays: the batch job's completed instance there must not run again.
        await asyncio.sleep(1.0)
        node = await api.ok("GET", f"/api/v1/nodes/{batchy['id']}")
        assert node["status"] == "down"
        assert (await api.ok("GET", f"/api/v1/jobs/{batch}"))["status"] == "complete"
        # The subnet "gone" held is free for a new node; an agent of "gone" that came back
        # would register as a new node.
        fresh = await api.register("fresh")
        assert fresh["subnet"] == gone["subnet"]
        again = await api.register("gone")
        assert again["id"] != gone["id"]
