"""End to end through the REST API: submit, place, long-poll, report, block and unblock."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.harness import AGENT, Api


def job(
    name: str, *, count: int = 1, memory: int = 1024, type_: str = "batch", **kw: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "count": count,
        "task": {"driver": "fake", "argv": ["true"], "memory_mb": memory},
        **kw,
    }


async def submit(api: Api, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    out = await api.ok("POST", "/api/v1/jobs", json=spec)
    ev = await api.wait_eval(out["evaluation"]["id"])
    return out["job"], ev


async def test_job_is_placed_listed_and_stopped(api: Api) -> None:
    node = await api.register("n1")
    j, ev = await submit(api, job("web", count=3, type_="service"))
    assert ev["status"] == "complete", ev
    allocs = await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")
    assert sorted(a["name"] for a in allocs) == ["web[0]", "web[1]", "web[2]"]
    assert {a["node_id"] for a in allocs} == {node["id"]}
    assert [x["id"] for x in await api.ok("GET", "/api/v1/jobs")] == [j["id"]]
    got = await api.ok("GET", f"/api/v1/jobs/{j['id']}")
    assert got["name"] == "web" and got["status"] == "running"  # it has live allocations
    one = await api.ok("GET", f"/api/v1/allocations/{allocs[0]['id']}")
    assert one["events"][0]["type"] == "placed"

    stopped = await api.ok("POST", f"/api/v1/jobs/{j['id']}/stop")
    await api.wait_eval(stopped["evaluation"]["id"])
    allocs = await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")
    assert {a["desired_status"] for a in allocs} == {"stop"}
    again = await api.ok("POST", f"/api/v1/jobs/{j['id']}/stop")
    assert again["evaluation"] is None  # idempotent


async def test_unplaceable_job_stays_blocked_with_explanation_until_capacity_arrives(
    api: Api,
) -> None:
    await api.register("small-1", memory=2048)
    await api.register("small-2", memory=2048)
    j, ev = await submit(api, job("big", memory=8192))
    assert ev["status"] == "blocked"
    assert ev["failures"] == {"memory": 2} and ev["queued"] == 1
    assert (await api.ok("GET", f"/api/v1/jobs/{j['id']}"))["status"] == "pending"
    big = await api.register("big-node", memory=16384)
    async with asyncio.timeout(15):
        while not (allocs := await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")):
            await asyncio.sleep(0.1)
    assert allocs[0]["node_id"] == big["id"]


async def test_ineligible_nodes_are_skipped_and_explained(api: Api) -> None:
    node = await api.register("n1")
    out = await api.ok(
        "POST", f"/api/v1/nodes/{node['id']}/eligibility", json={"eligibility": "ineligible"}
    )
    assert out["eligibility"] == "ineligible"
    _, ev = await submit(api, job("x"))
    assert ev["status"] == "blocked" and ev["failures"] == {"ineligible": 1}
    await api.ok(
        "POST", f"/api/v1/nodes/{node['id']}/eligibility", json={"eligibility": "eligible"}
    )
    status, body, _ = await api.call(
        "POST", f"/api/v1/nodes/{node['id']}/eligibility", json={"eligibility": "maybe"}
    )
    assert status == 422 and body["errors"][0]["field"] == "eligibility"


async def test_agent_long_poll_and_status_reports_drive_the_job(api: Api) -> None:
    node = await api.register("n1")
    base = f"/api/v1/agent/nodes/{node['id']}/allocations"
    first = await api.ok("GET", f"{base}?index=0&wait=5", token=AGENT)
    assert first["allocations"] == []

    # A long-poll at the current index returns as soon as something is placed.
    poll = asyncio.create_task(api.ok("GET", f"{base}?index={first['index']}&wait=20", token=AGENT))
    await asyncio.sleep(0.3)
    assert not poll.done()
    j, _ = await submit(api, job("task", count=1))
    got = await asyncio.wait_for(poll, 10)
    assert got["index"] > first["index"]
    [assigned] = got["allocations"]
    assert assigned["task"]["argv"] == ["true"] and assigned["job_name"] == "task"
    alloc_id = assigned["allocation"]["id"]

    report = f"/api/v1/agent/nodes/{node['id']}/allocations/{alloc_id}/status"
    running = await api.ok("POST", report, token=AGENT, json={"client_status": "running"})
    assert running["client_status"] == "running"
    assert (await api.ok("GET", f"/api/v1/jobs/{j['id']}"))["status"] == "running"
    done = await api.ok(
        "POST", report, token=AGENT, json={"client_status": "complete", "exit_code": 0}
    )
    assert done["exit_code"] == 0
    # Going back from a terminal state is refused.
    status, body, _ = await api.call("POST", report, token=AGENT, json={"client_status": "running"})
    assert status == 409 and "cannot go from complete" in body["detail"]
    async with asyncio.timeout(10):
        while (await api.ok("GET", f"/api/v1/jobs/{j['id']}"))["status"] != "complete":
            await asyncio.sleep(0.1)
    # Another node may not report on this allocation.
    other = await api.register("n2")
    status, _, _ = await api.call(
        "POST",
        f"/api/v1/agent/nodes/{other['id']}/allocations/{alloc_id}/status",
        token=AGENT,
        json={"client_status": "failed"},
    )
    assert status == 403


async def test_failed_batch_allocation_is_rescheduled_per_policy(api: Api) -> None:
    node = await api.register("n1")
    spec = job("flaky", reschedule={"attempts": 1, "interval_s": 3600, "delay_s": 0})
    j, _ = await submit(api, spec)
    [a] = await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")
    report = f"/api/v1/agent/nodes/{node['id']}/allocations/{a['id']}/status"
    await api.ok("POST", report, token=AGENT, json={"client_status": "failed", "exit_code": 3})
    async with asyncio.timeout(15):
        while len(allocs := await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")) < 2:
            await asyncio.sleep(0.1)
    replacement = next(x for x in allocs if x["id"] != a["id"])
    assert replacement["previous_allocation"] == a["id"]
    assert replacement["reschedule_attempts"] == 1


async def test_system_job_runs_one_per_node_including_nodes_that_join_later(api: Api) -> None:
    await api.register("n1")
    await api.register("n2")
    j, ev = await submit(api, job("sys", type_="system"))
    assert ev["status"] == "complete"
    assert len(await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")) == 2
    n3 = await api.register("n3")
    async with asyncio.timeout(15):
        while len(allocs := await api.ok("GET", f"/api/v1/jobs/{j['id']}/allocations")) < 3:
            await asyncio.sleep(0.1)
    assert n3["id"] in {a["node_id"] for a in allocs}


async def test_cluster_status_shows_leader_and_counts(api: Api) -> None:
    await api.register("n1")
    await submit(api, job("x"))
    st = await api.ok("GET", "/api/v1/cluster/status")
    assert st["is_leader"] is True and st["epoch"] >= 1
    assert st["leader"] == api.coord.settings.coordinator_id
    assert st["nodes"]["total"] == 1 and st["jobs"]["total"] == 1
    ready = await api.ok("GET", "/ready")
    assert ready == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}
