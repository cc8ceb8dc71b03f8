"""Node drain through the REST API: stop a node's allocations, place them elsewhere, and clear
the drain flag once the agent reports them ended. A drain with a deadline is paced by the
leader's drainer: services a few at a time, batch jobs left to finish, system jobs last."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tests.api.test_scheduling_flow import job, submit
from tests.harness import AGENT, Api


@contextlib.asynccontextmanager
async def heartbeats(api: Api, *node_ids: str) -> AsyncIterator[None]:
    """Keep these nodes ready (the test heartbeat TTL is 2 s) for the body of the block."""

    async def beat() -> None:
        while True:
            for node_id in node_ids:
                await api.ok("POST", f"/api/v1/agent/nodes/{node_id}/heartbeat", token=AGENT)
            await asyncio.sleep(0.5)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def report(api: Api, node_id: str, alloc_ids: list[str], status: str) -> None:
    reports = [{"alloc_id": a, "client_status": status} for a in alloc_ids]
    out = await api.ok(
        "POST",
        f"/api/v1/agent/nodes/{node_id}/allocations/status",
        token=AGENT,
        json={"reports": reports},
    )
    assert [r["status"] for r in out["results"]] == [200] * len(alloc_ids), out


async def drain(api: Api, node_id: str, **body: Any) -> dict[str, Any]:
    out: dict[str, Any] = await api.ok("POST", f"/api/v1/nodes/{node_id}/drain", json=body)
    return out


async def node(api: Api, node_id: str) -> dict[str, Any]:
    got: dict[str, Any] = await api.ok("GET", f"/api/v1/nodes/{node_id}")
    return got


async def test_forced_drain_moves_everything_at_once_and_completes(api: Api) -> None:
    a = await api.register("a")
    async with heartbeats(api, a["id"]):
        j, _ = await submit(api, job("web", count=2, type_="service"))
        old = await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")
        assert {x["node_id"] for x in old} == {a["id"]}
        old_ids = sorted(x["id"] for x in old)
        await report(api, a["id"], old_ids, "running")
        b = await api.register("b")
    async with heartbeats(api, a["id"], b["id"]):
        index = await api.coord.store.node_alloc_index(a["id"])

        out = await drain(api, a["id"], enable=True, ignore_system_jobs=False, deadline_s=0)
        assert out["node"]["drain"] is True and out["node"]["eligibility"] == "ineligible"
        assert sorted(out["stopped"]) == old_ids
        [ev] = out["evaluations"]
        assert (ev["job_id"], ev["trigger"], ev["node_id"]) == (j["id"], "node-update", a["id"])
        assert await api.coord.store.node_alloc_index(a["id"]) > index  # the agent is woken
        assert (await api.wait_eval(ev["id"]))["status"] == "complete"

        allocs = await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")
        stopped = [x for x in allocs if x["id"] in old_ids]
        assert {(x["desired_status"], x["desired_description"], x["client_status"])
                for x in stopped} == {("stop", "node drain", "running")}  # fmt: skip
        new = [x for x in allocs if x["id"] not in old_ids]
        assert sorted(x["index"] for x in new) == [0, 1]
        assert {(x["node_id"], x["desired_status"]) for x in new} == {(b["id"], "run")}
        # The agent's long-poll tells it to stop both.
        desired = await api.ok("GET", f"/api/v1/agent/nodes/{a['id']}/allocations?index=0",
                               token=AGENT)  # fmt: skip
        assert {x["allocation"]["desired_status"] for x in desired["allocations"]} == {"stop"}
        listed = {n["id"]: n for n in await api.ok("GET", "/api/v1/nodes")}
        assert listed[a["id"]]["drain"] is True and listed[b["id"]]["drain"] is False

        await report(api, a["id"], old_ids[:1], "complete")
        assert (await node(api, a["id"]))["drain"] is True  # one still to go
        await report(api, a["id"], old_ids[1:], "complete")
        after = await node(api, a["id"])
        assert after["drain"] is False and after["eligibility"] == "ineligible"
        assert len(await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")) == 4


async def allocs(api: Api, job_id: str) -> dict[str, dict[str, Any]]:
    return {x["id"]: x for x in await api.ok("GET", f"/api/v1/jobs/{job_id}/allocations")}


async def stopped_by_drain(api: Api, job_id: str) -> set[str]:
    return {
        i
        for i, x in (await allocs(api, job_id)).items()
        if (x["desired_status"], x["desired_description"]) == ("stop", "node drain")
    }


async def settles(api: Api, job_id: str, n: int) -> set[str]:
    """Wait until `n` of the job's allocations are stopped by the drain; then a few more
    drainer rounds (0.2 s each here) to show that no more are."""
    for _ in range(50):
        got = await stopped_by_drain(api, job_id)
        if len(got) >= n:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.7)
    got = await stopped_by_drain(api, job_id)
    assert len(got) == n, got
    return got


async def replacements_running(api: Api, node_id: str, job_id: str, old: set[str]) -> set[str]:
    """Once their evaluation placed them, report the job's replacements running on node_id."""
    for _ in range(50):
        new = {i for i, x in (await allocs(api, job_id)).items() if i not in old}
        if new:
            break
        await asyncio.sleep(0.1)
    await report(api, node_id, sorted(new), "running")
    return new


async def test_a_service_moves_max_parallel_at_a_time(api: Api) -> None:
    a = await api.register("a")
    async with heartbeats(api, a["id"]):
        web, _ = await submit(api, job("web", count=3, memory=256, type_="service"))
        pair, _ = await submit(
            api, job("pair", count=2, memory=256, type_="service", migrate={"max_parallel": 2})
        )
        old_web, old_pair = set(await allocs(api, web["id"])), set(await allocs(api, pair["id"]))
        await report(api, a["id"], sorted(old_web | old_pair), "running")
        b = await api.register("b")
    async with heartbeats(api, a["id"], b["id"]):
        out = await drain(api, a["id"], enable=True)
        strategy = out["node"]["drain_strategy"]
        assert strategy["ignore_system_jobs"] is False and strategy["deadline"] is not None
        # max_parallel 1: one of web's three now; pair (max_parallel 2) both at once.
        [first] = set(out["stopped"]) & old_web
        assert set(out["stopped"]) - old_web == old_pair
        # The next waits for first's replacement to run, however long that takes.
        assert await settles(api, web["id"], 1) == {first}
        done: set[str] = set()
        for n in (2, 3):
            done |= await replacements_running(api, b["id"], web["id"], old_web | done)
            assert len(await settles(api, web["id"], n)) == n
        done |= await replacements_running(api, b["id"], web["id"], old_web | done)
        assert (await node(api, a["id"]))["drain"] is True  # all stopped, none ended yet
        await report(api, a["id"], sorted(old_web | old_pair), "complete")
        after = await node(api, a["id"])
        assert after["drain"] is False and "drain_strategy" not in after
        wanted = [
            x for x in (await allocs(api, web["id"])).values() if x["desired_status"] == "run"
        ]
        assert len(wanted) == 3 and {(x["node_id"], x["client_status"]) for x in wanted} == {
            (b["id"], "running")
        }


async def test_a_degraded_service_waits_and_cancelling_stops_the_pacing(api: Api) -> None:
    a = await api.register("a")
    async with heartbeats(api, a["id"]):
        web, _ = await submit(api, job("web", count=2, type_="service"))
        [one, two] = sorted(await allocs(api, web["id"]))
        await report(api, a["id"], [one], "running")  # two never came up
        b = await api.register("b")
    async with heartbeats(api, a["id"], b["id"]):
        # two is not running: moving it costs nothing. one is the only copy running: it
        # stays until two's replacement runs.
        out = await drain(api, a["id"], enable=True)
        assert out["stopped"] == [two]
        await settles(api, web["id"], 1)
        # Eligible again while draining would place work the drain then stops.
        status, body, _ = await api.call(
            "POST", f"/api/v1/nodes/{a['id']}/eligibility", json={"eligibility": "eligible"}
        )
        assert status == 409 and "cancel the drain first" in body["detail"]
        out = await drain(api, a["id"], enable=False)
        assert out["node"]["drain"] is False and "drain_strategy" not in out["node"]
        await replacements_running(api, b["id"], web["id"], {one, two})
        assert await settles(api, web["id"], 1) == {two}  # cancelled: one stays


async def test_batch_jobs_finish_or_meet_the_deadline_and_system_jobs_go_last(api: Api) -> None:
    a = await api.register("a")
    async with heartbeats(api, a["id"]):
        sys_job, _ = await submit(api, job("sys", type_="system"))
        svc, _ = await submit(api, job("svc", type_="service"))
        short, _ = await submit(api, job("short"))
        long_, _ = await submit(api, job("long"))
        ids = {
            j["name"]: next(iter(await allocs(api, j["id"]))) for j in (sys_job, svc, short, long_)
        }
        await report(api, a["id"], sorted(ids.values()), "running")

        out = await drain(api, a["id"], enable=True, deadline_s=3)
        assert out["stopped"] == [ids["svc"]]  # the batch jobs may finish; the system job waits
        await report(api, a["id"], [ids["svc"]], "complete")
        await report(api, a["id"], [ids["short"]], "complete")  # finished on its own
        await settles(api, long_["id"], 0)
        assert not await stopped_by_drain(api, sys_job["id"])  # long is still live
        # At the deadline whatever is left goes.
        assert await settles(api, long_["id"], 1) == {ids["long"]}
        assert await stopped_by_drain(api, sys_job["id"]) == {ids["sys"]}
        assert (await allocs(api, short["id"]))[ids["short"]]["desired_status"] == "run"
        await report(api, a["id"], [ids["long"], ids["sys"]], "complete")
        assert (await node(api, a["id"]))["drain"] is False


async def test_system_jobs_are_kept_when_ignored_and_not_placed_back_otherwise(api: Api) -> None:
    a = await api.register("a")
    async with heartbeats(api, a["id"]):
        svc, _ = await submit(api, job("svc", type_="service"))
        [svc_alloc] = await api.ok("GET", f"/api/v1/jobs/{svc['id']}/allocations")
        b = await api.register("b")
    async with heartbeats(api, a["id"], b["id"]):
        sys_job, _ = await submit(api, job("sys", type_="system"))
        sys_allocs = await api.ok("GET", f"/api/v1/jobs/{sys_job['id']}/allocations")
        [sys_on_a] = [x for x in sys_allocs if x["node_id"] == a["id"]]

        out = await drain(api, a["id"], enable=True, ignore_system_jobs=True)
        assert out["stopped"] == [svc_alloc["id"]]
        assert [e["job_id"] for e in out["evaluations"]] == [svc["id"]]
        got = await api.ok("GET", f"/api/v1/allocations/{sys_on_a['id']}")
        assert got["desired_status"] == "run"
        # Nothing the drain stopped is live any more: complete, though the system job runs on.
        await report(api, a["id"], [svc_alloc["id"]], "complete")
        assert (await node(api, a["id"]))["drain"] is False

        # Drained again without ignoring system jobs: stopped, and not placed back on a.
        out = await drain(api, a["id"], enable=True)
        assert out["stopped"] == [sys_on_a["id"]] and out["node"]["drain"] is True
        [ev] = out["evaluations"]
        assert (await api.wait_eval(ev["id"]))["status"] == "complete"
        on_a = [
            x
            for x in await api.ok("GET", f"/api/v1/jobs/{sys_job['id']}/allocations")
            if x["node_id"] == a["id"]
        ]
        assert [(x["id"], x["desired_status"]) for x in on_a] == [(sys_on_a["id"], "stop")]


async def test_cancel_empty_node_and_node_down(api: Api) -> None:
    a = await api.register("a")
    # Nothing to move: drained at once, and ineligible.
    out = await drain(api, a["id"], enable=True)
    assert out["stopped"] == [] and out["evaluations"] == []
    assert out["node"]["drain"] is False and out["node"]["eligibility"] == "ineligible"

    await api.ok("POST", f"/api/v1/nodes/{a['id']}/eligibility", json={"eligibility": "eligible"})
    async with heartbeats(api, a["id"]):
        j, _ = await submit(api, job("w", type_="service"))
        assert (await drain(api, a["id"], enable=True))["node"]["drain"] is True
        # Cancelling clears the flag only: the node stays ineligible, the stop stays.
        out = await drain(api, a["id"], enable=False)
        assert out["node"]["drain"] is False and out["node"]["eligibility"] == "ineligible"
        assert out["stopped"] == []
        [alloc] = await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")
        assert alloc["desired_status"] == "stop"
        # Draining again finds nothing to stop: its allocation is still live, so it waits.
        assert (await drain(api, a["id"], enable=True))["node"]["drain"] is True
    # The node goes down: its allocations are lost, so the drain is complete.
    down, _ = await api.coord.store.mark_nodes_down([a["id"]])
    assert down == [a["id"]]
    assert (await node(api, a["id"]))["drain"] is False


async def test_drain_unknown_node_bad_body_and_scope(api: Api) -> None:
    a = await api.register("a")
    path = f"/api/v1/nodes/{a['id']}/drain"
    status, body, _ = await api.call("POST", "/api/v1/nodes/nope/drain", json={"enable": True})
    assert status == 404 and "nope" in body["detail"]
    for bad, field in (
        ({}, "enable"),
        ({"enable": "yes"}, "enable"),
        ({"enable": True, "ignore_system_jobs": 1}, "ignore_system_jobs"),
        ({"enable": True, "force": True}, "force"),
        ({"enable": True, "deadline_s": -1}, "deadline_s"),
        ({"enable": True, "deadline_s": "1h"}, "deadline_s"),
    ):
        status, body, _ = await api.call("POST", path, json=bad)
        assert status == 422, (bad, body)
        assert [e["field"] for e in body["errors"]] == [field], body
    status, _, _ = await api.call("POST", path, json={"enable": True}, token=AGENT)
    assert status in (401, 403)
    assert (await node(api, a["id"]))["eligibility"] == "eligible"
    spec = await api.ok("GET", "/api/v1/openapi.json")
    op = spec["paths"]["/api/v1/nodes/{id}/drain"]["post"]
    assert "stays ineligible" in op["summary"]
