"""The agent's control loop against a real coordinator, with the fake driver at the seam."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from mxvm.agent.record import AllocRecord, alloc_dir
from mxvm.hypervisors.fake import STATE_FILE, FakeDriver
from mxvm.models import AllocStatusUpdate, ClientStatus, DesiredStatus, NodeChanges
from tests.agent.conftest import agent_settings, dies_after_starting, fake_image, running_agent
from tests.harness import Api, running, settings_for


def job(name: str, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "type": "batch",
        "task": {"driver": "fake", "argv": ["agent"], "memory_mb": 128},
        "restart": {"attempts": 0},
        "reschedule": {"attempts": 0},
    }
    spec.update(kw)
    return spec


async def wait_alloc(api: Api, job_id: str, status: str, limit_s: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(limit_s):
        while True:
            allocs = await api.ok("GET", f"/api/v1/jobs/{job_id}/allocations")
            done = [a for a in allocs if a["client_status"] == status]
            if done:
                return done[0]  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)


async def test_agent_registers_runs_and_reports_exit_code(api: Api, tmp_path: Path) -> None:
    fake_image(tmp_path / "images")
    driver = FakeDriver(exit_code=3, run_time_s=0.3)
    settings = agent_settings(api, tmp_path / "state")
    async with running_agent(settings, {"fake": driver}, tmp_path / "images") as agent:
        assert agent.node is not None
        node = await api.ok("GET", f"/api/v1/nodes/{agent.node.id}")
        assert node["drivers"] == ["fake"] and node["agent_url"].startswith("http://127.0.0.1:")
        assert node["attributes"]["image.default.min_memory_mb"] == "128"
        assert "agent_secret" not in node
        out = await api.ok("POST", "/api/v1/jobs", json=job("exit3"))
        failed = await wait_alloc(api, out["job"]["id"], "failed")
    assert failed["exit_code"] == 3
    assert [e["type"] for e in failed["events"]][:3] == ["placed", "starting", "running"]
    assert driver.starts == 1


async def test_stopping_a_service_job_stops_its_vm(api: Api, tmp_path: Path) -> None:
    fake_image(tmp_path / "images")
    driver = FakeDriver()  # runs until stopped
    settings = agent_settings(api, tmp_path / "state")
    async with running_agent(settings, {"fake": driver}, tmp_path / "images"):
        out = await api.ok("POST", "/api/v1/jobs", json=job("svc", type="service"))
        alloc = await wait_alloc(api, out["job"]["id"], "running")
        await api.ok("POST", f"/api/v1/jobs/{out['job']['id']}/stop")
        done = await wait_alloc(api, out["job"]["id"], "complete")
        assert done["id"] == alloc["id"]
        assert done["client_description"].startswith("stopped")
        assert not driver._vms  # destroyed
        async with asyncio.timeout(10):
            while (await api.ok("GET", f"/api/v1/jobs/{out['job']['id']}"))["status"] != "dead":
                await asyncio.sleep(0.1)


async def test_bad_image_and_start_errors_fail_the_allocation_with_the_reason(
    api: Api, tmp_path: Path
) -> None:
    settings = agent_settings(api, tmp_path / "state")
    driver = FakeDriver(start_error="boom: no such VMM")
    fake_image(tmp_path / "images")
    async with running_agent(settings, {"fake": driver}, tmp_path / "images"):
        spec = job("noimage")
        spec["task"]["image"] = "missing"
        out = await api.ok("POST", "/api/v1/jobs", json=spec)
        failed = await wait_alloc(api, out["job"]["id"], "failed")
        assert "missing/manifest.json" in failed["client_description"]
        out = await api.ok("POST", "/api/v1/jobs", json=job("starterr"))
        failed = await wait_alloc(api, out["job"]["id"], "failed")
        assert "boom: no such VMM" in failed["client_description"]


async def test_restart_policy_restarts_on_the_same_node(api: Api, tmp_path: Path) -> None:
    fake_image(tmp_path / "images")
    driver = FakeDriver(exit_code=1, run_time_s=0.1)
    settings = agent_settings(api, tmp_path / "state")
    async with running_agent(settings, {"fake": driver}, tmp_path / "images"):
        spec = job("flaky", restart={"attempts": 2, "delay_s": 0, "interval_s": 600})
        out = await api.ok("POST", "/api/v1/jobs", json=spec)
        failed = await wait_alloc(api, out["job"]["id"], "failed")
    assert driver.starts == 3
    assert [e["type"] for e in failed["events"]].count("restarting") == 2


async def test_agent_restart_readopts_the_running_vm(api: Api, tmp_path: Path) -> None:
    fake_image(tmp_path / "images")
    settings = agent_settings(api, tmp_path / "state")
    first = FakeDriver(persist=True)
    async with running_agent(settings, {"fake": first}, tmp_path / "images"):
        out = await api.ok("POST", "/api/v1/jobs", json=job("long", type="service"))
        alloc = await wait_alloc(api, out["job"]["id"], "running")
        pid = first._vms[alloc["id"]].pid
    # The agent process is gone; its VM is not. A new agent (new driver instance) adopts it.
    second = FakeDriver(persist=True)
    async with running_agent(settings, {"fake": second}, tmp_path / "images"):
        async with asyncio.timeout(10):
            while alloc["id"] not in second._vms:
                await asyncio.sleep(0.05)
        assert second._vms[alloc["id"]].pid == pid
        assert second.starts == 0  # re-adopted, not restarted
        got = await api.ok("GET", f"/api/v1/allocations/{alloc['id']}")
        assert got["client_status"] == "running"


async def test_memory_below_the_images_minimum_is_422(api: Api, tmp_path: Path) -> None:
    fake_image(tmp_path / "images", min_memory_mb=512)
    settings = agent_settings(api, tmp_path / "state")
    async with running_agent(settings, {"fake": FakeDriver()}, tmp_path / "images"):
        spec = job("small")
        status, body, _ = await api.call("POST", "/api/v1/jobs", json=spec)
        assert status == 422
        assert body["errors"] == [{"field": "task.memory_mb", "message": "must be >= 512"}]
        assert "minimum of 512 MiB" in body["detail"]
        spec["task"]["memory_mb"] = 512
        assert (await api.call("POST", "/api/v1/jobs", json=spec))[0] == 201


async def test_an_answer_naming_a_live_allocation_the_agent_never_got_asks_for_all(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long-poll answers carry only what changed: a live allocation the agent has neither a
    runner nor the details of means it missed a change, and converge names it (the watch
    loop then asks from index 0, which carries everything). One told to stop before it ever
    had a runner is reported once, not on every answer."""
    fake_image(tmp_path / "images")
    settings = agent_settings(api, tmp_path / "state")
    async with running_agent(settings, {"fake": FakeDriver()}, tmp_path / "images") as agent:
        out = await api.ok("POST", "/api/v1/jobs", json=job("svc", type="service"))
        alloc = await wait_alloc(api, out["job"]["id"], "running")
        missed = NodeChanges(index=1, changed=[], live=[alloc["id"], "ghost"])
        assert await agent.converge(missed) == {"ghost"}
        assert agent.runner(alloc["id"]) is not None  # what it knows is left alone

        [assigned] = (await agent._poll(0, 0)).changed
        ghost = assigned.model_copy(
            update={
                "allocation": assigned.allocation.model_copy(
                    update={"id": "ghost", "desired_status": DesiredStatus.STOP}
                )
            }
        )
        reported: list[str] = []
        real_report = agent.reporter.report

        async def counting(alloc_id: str, update: AllocStatusUpdate) -> None:
            reported.append(alloc_id)
            await real_report(alloc_id, update)

        monkeypatch.setattr(agent.reporter, "report", counting)
        stopped = NodeChanges(index=1, changed=[ghost], live=[alloc["id"], "ghost"])
        assert await agent.converge(stopped) == set()
        assert await agent.converge(stopped) == set()
        assert reported == ["ghost"]
        assert agent.runner("ghost") is None


async def test_a_vm_started_unnoted_and_stopped_meanwhile_is_destroyed_not_booted_again(
    api: Api, tmp_path: Path
) -> None:
    fake_image(tmp_path / "images")
    settings = agent_settings(api, tmp_path / "state")
    dying = FakeDriver(persist=True)
    spawned = dies_after_starting(dying)
    async with running_agent(settings, {"fake": dying}, tmp_path / "images"):
        out = await api.ok("POST", "/api/v1/jobs", json=job("unnoted", type="service"))
        await asyncio.wait_for(spawned, 10)
    [alloc] = await api.ok("GET", f"/api/v1/jobs/{out['job']['id']}/allocations")
    [vm_state] = (tmp_path / "state").rglob(STATE_FILE)  # the VM the dead agent left
    await api.ok("POST", f"/api/v1/jobs/{out['job']['id']}/stop")  # while no agent runs
    async with asyncio.timeout(10):
        while (await api.ok("GET", f"/api/v1/allocations/{alloc['id']}"))[
            "desired_status"
        ] != "stop":
            await asyncio.sleep(0.05)
    second = FakeDriver(persist=True)
    async with running_agent(settings, {"fake": second}, tmp_path / "images"):
        done = await wait_alloc(api, out["job"]["id"], "complete")
    assert done["id"] == alloc["id"]
    assert not vm_state.exists()  # destroyed
    assert second.starts == 0  # and no VM booted for a stopped allocation


async def test_on_disconnect_stop_fences_the_vm_before_the_node_can_be_declared_lost(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    # The coordinator goes away while the agent runs (as in a partition): heartbeats fail.
    # The job that asked for on_disconnect=stop has its VM stopped before the coordinator
    # could declare the node lost (a heartbeat TTL, 2 s here) and place a replacement; the
    # job that did not keeps running.
    fake_image(tmp_path / "images")
    driver = FakeDriver()
    settings = settings_for(pg_dsn, redis_url)
    coordinator = contextlib.AsyncExitStack()
    api = await coordinator.enter_async_context(running(settings))
    try:
        cfg = agent_settings(api, tmp_path / "state")
        async with running_agent(cfg, {"fake": driver}, tmp_path / "images") as agent:
            spec = job("fenced", type="service", on_disconnect="stop")
            fenced = (await api.ok("POST", "/api/v1/jobs", json=spec))["job"]["id"]
            kept = await api.ok("POST", "/api/v1/jobs", json=job("kept", type="service"))
            a_fenced = (await wait_alloc(api, fenced, "running"))["id"]
            a_kept = (await wait_alloc(api, kept["job"]["id"], "running"))["id"]
            await asyncio.sleep(0.5)  # a heartbeat got through just now
            await coordinator.aclose()  # the coordinator is gone; the agent is not
            loop = asyncio.get_running_loop()
            cut_at = loop.time()
            runner = agent.runners[a_fenced]
            async with asyncio.timeout(10):
                while a_fenced in driver._vms:  # until destroyed (its report waits for the
                    await asyncio.sleep(0.02)  # coordinator: `finished` comes later)
            assert loop.time() - cut_at < settings.heartbeat_ttl_s
            assert runner.status == ClientStatus.FAILED
            assert runner.record.final is not None
            assert "lost contact with the coordinator" in runner.record.final.description
            await asyncio.sleep(1.0)
            assert driver._vms[a_kept].ended is None  # still running
    finally:
        await coordinator.aclose()


async def test_a_paced_drain_moves_a_service_between_real_agents_without_taking_it_down(
    api: Api, tmp_path: Path
) -> None:
    """Two agents; a service of 3 on the first, drained: the drainer stops one, the second
    agent boots its replacement (0.5 s), and only then is the next stopped. Sampled all the
    way, the service never has fewer than count - max_parallel = 2 VMs running."""
    fake_image(tmp_path / "images")
    old = agent_settings(api, tmp_path / "old", node_name="old", cpu_overcommit=4)
    new = agent_settings(api, tmp_path / "new", node_name="new", cpu_overcommit=4)
    first = FakeDriver()
    async with running_agent(old, {"fake": first}, tmp_path / "images") as agent_old:
        out = await api.ok("POST", "/api/v1/jobs", json=job("web", type="service", count=3))
        job_id = out["job"]["id"]

        async def running() -> list[dict[str, Any]]:
            allocs = await api.ok("GET", f"/api/v1/jobs/{job_id}/allocations")
            return [a for a in allocs if a["client_status"] == "running"]

        async with asyncio.timeout(20):
            while len(await running()) < 3:
                await asyncio.sleep(0.05)
        slow = FakeDriver(boot_delay_s=0.5)
        async with running_agent(new, {"fake": slow}, tmp_path / "images") as agent_new:
            assert agent_old.node is not None and agent_new.node is not None
            await api.ok("POST", f"/api/v1/nodes/{agent_old.node.id}/drain", json={"enable": True})
            fewest = 3
            async with asyncio.timeout(30):
                while (await api.ok("GET", f"/api/v1/nodes/{agent_old.node.id}"))["drain"]:
                    fewest = min(fewest, len(await running()))
                    await asyncio.sleep(0.02)
                # Drained once nothing is left on it; the last replacement may still boot.
                while len(now := await running()) < 3:
                    fewest = min(fewest, len(now))
                    await asyncio.sleep(0.02)
            assert {a["node_id"] for a in now} == {agent_new.node.id} and len(now) == 3
            assert fewest >= 2, fewest
            assert slow.starts == 3 and not first._vms  # the old ones destroyed


async def test_the_node_keeps_the_run_dirs_of_only_the_newest_finished_allocations(
    api: Api, tmp_path: Path
) -> None:
    """A node that runs job after job would otherwise keep every run dir and log forever."""
    fake_image(tmp_path / "images")
    settings = agent_settings(api, tmp_path / "state", keep_finished=2)
    runs = tmp_path / "state" / "a"
    for age in (3, 2, 1):  # finished under an earlier agent: the oldest pruned at start
        d = runs / f"before-{age}"
        d.mkdir(parents=True)
        (d / "alloc.log").write_text("old output\n")
        os.utime(d, (time.time() - age * 60,) * 2)
    driver = FakeDriver(run_time_s=0.05)
    async with running_agent(settings, {"fake": driver}, tmp_path / "images") as agent:
        assert sorted(p.name for p in runs.iterdir()) == ["before-1", "before-2"]
        ids: list[str] = []
        for i in range(4):
            out = await api.ok("POST", "/api/v1/jobs", json=job(f"j{i}"))
            ids.append((await wait_alloc(api, out["job"]["id"], "complete"))["id"])
            runner = agent.runners.get(ids[-1])  # it ends just after its report
            if runner is not None and runner.task is not None:
                await asyncio.wait_for(asyncio.shield(runner.task), 10)
        kept = sorted(p.name for p in runs.iterdir())
        assert kept == sorted(agent.run_dir(i).name for i in ids[2:]), kept
        status, body, _ = await api.call("GET", f"/api/v1/allocations/{ids[0]}/logs")
        assert status == 404 and "no log" in body["detail"], body


async def test_max_runtime_stops_the_vm_and_fails_without_a_restart(
    api: Api, tmp_path: Path
) -> None:
    fake_image(tmp_path / "images")
    driver = FakeDriver()  # runs until stopped
    settings = agent_settings(api, tmp_path / "state")
    task = {"driver": "fake", "argv": ["agent"], "memory_mb": 128, "max_runtime_s": 1.0}
    async with running_agent(settings, {"fake": driver}, tmp_path / "images"):
        spec = job("runaway", type="service", task=task, restart={"attempts": 3})
        out = await api.ok("POST", "/api/v1/jobs", json=spec)
        await wait_alloc(api, out["job"]["id"], "running")
        failed = await wait_alloc(api, out["job"]["id"], "failed")
    assert failed["client_description"] == "exceeded its max runtime of 1s: stopped"
    assert driver.starts == 1 and not driver._vms  # stopped, and not restarted


async def test_max_runtime_counts_from_the_first_start_across_agent_restarts(
    api: Api, tmp_path: Path
) -> None:
    fake_image(tmp_path / "images")
    settings = agent_settings(api, tmp_path / "state")
    task = {"driver": "fake", "argv": ["agent"], "memory_mb": 128, "max_runtime_s": 3600.0}
    async with running_agent(settings, {"fake": FakeDriver(persist=True)}, tmp_path / "images"):
        out = await api.ok("POST", "/api/v1/jobs", json=job("long", type="service", task=task))
        alloc = await wait_alloc(api, out["job"]["id"], "running")
    # The agent is gone and its VM runs on. As if that had gone on for an hour and more:
    path = alloc_dir(settings.state_dir, alloc["id"]) / "record.json"
    record = AllocRecord.model_validate_json(path.read_text())
    assert record.started_at is not None and record.started_at <= time.time()
    path.write_text(record.model_copy(update={"started_at": time.time() - 3700}).model_dump_json())
    second = FakeDriver(persist=True)
    async with running_agent(settings, {"fake": second}, tmp_path / "images"):
        failed = await wait_alloc(api, out["job"]["id"], "failed")
    assert failed["client_description"] == "exceeded its max runtime of 3600s: stopped"
    assert second.starts == 0 and not second._vms  # the adopted VM, stopped
