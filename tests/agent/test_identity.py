"""One agent per state dir, and one agent per node name: two agents never run one node's
allocations."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mxvm.agent.agent import Agent
from mxvm.agent.identity import LOCK, NODE_KEY, hold_state_dir, node_key
from mxvm.errors import Conflict
from mxvm.hypervisors.fake import FakeDriver
from tests.agent.conftest import agent_settings, fake_image, running_agent
from tests.agent.test_agent_fake_driver import job, wait_alloc
from tests.harness import Api


def test_a_held_state_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    refused = rf"in use by another mxvm agent \(pid {os.getpid()}\)"
    with hold_state_dir(tmp_path / "state"):  # noqa: SIM117 (the order is the point)
        with pytest.raises(Conflict, match=refused), hold_state_dir(tmp_path / "state"):
            pass
    with hold_state_dir(tmp_path / "state"):  # released when the block ended
        pass


def test_a_killed_holder_leaves_the_state_dir_free(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code = (
        "import sys, time; from pathlib import Path; "
        "from mxvm.agent.identity import hold_state_dir\n"
        "with hold_state_dir(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Conflict, match=f"pid {holder.pid}"), hold_state_dir(state):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with hold_state_dir(state):
        assert (state / LOCK).read_text().strip() == str(os.getpid())


def test_the_node_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    key = node_key(tmp_path)
    assert len(key) == 32 and int(key, 16) >= 0
    assert node_key(tmp_path) == key
    assert stat.S_IMODE((tmp_path / NODE_KEY).stat().st_mode) == 0o600
    (tmp_path / NODE_KEY).write_text("")  # torn or emptied: a new key, not an empty one
    assert node_key(tmp_path) not in ("", key)


async def test_a_second_agent_on_the_same_state_dir_refuses_to_run(
    api: Api, tmp_path: Path
) -> None:
    fake_image(tmp_path / "images")
    settings = agent_settings(api, tmp_path / "state")
    async with running_agent(settings, {"fake": FakeDriver()}, tmp_path / "images"):
        second = Agent(
            agent_settings(api, tmp_path / "state"),
            {"fake": FakeDriver()},
            image_dir=tmp_path / "images",
            network=None,
        )
        with pytest.raises(Conflict, match="in use by another mxvm agent"):
            await second.run(asyncio.Event())
        nodes = await api.ok("GET", "/api/v1/nodes")
        assert len(nodes) == 1


async def test_a_second_host_under_the_same_name_runs_nothing_until_the_first_is_gone(
    api: Api, tmp_path: Path
) -> None:
    """Two agents (own state dirs, so own keys) both named "agent-test": the second is
    refused while the first heartbeats, so the job runs once; when the first is gone, the
    second gets the name as a new node, and the first's allocation is replaced there."""
    fake_image(tmp_path / "images")
    first_driver, second_driver = FakeDriver(), FakeDriver()
    first = agent_settings(api, tmp_path / "one")
    async with running_agent(first, {"fake": first_driver}, tmp_path / "images") as one:
        assert one.node is not None
        out = await api.ok("POST", "/api/v1/jobs", json=job("svc", type="service"))
        old = await wait_alloc(api, out["job"]["id"], "running")
        second = Agent(
            agent_settings(api, tmp_path / "two"),
            {"fake": second_driver},
            image_dir=tmp_path / "images",
            network=None,
        )
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(second.run(stop, ready=ready))
        try:
            await asyncio.sleep(3.0)  # more than a heartbeat TTL (2 s): the first is live
            assert not ready.is_set() and second_driver.starts == 0
            node = await api.ok("GET", f"/api/v1/nodes/{one.node.id}")
            assert node["agent_url"] == f"http://{first.api_listen}"
        except BaseException:
            stop.set()
            await task
            raise
    try:
        # The first agent stopped (its lease runs out within a TTL): the second gets in.
        await asyncio.wait_for(ready.wait(), 15)
        assert second.node is not None and second.node.name == "agent-test"
        assert second.node.id != one.node.id  # a node of its own; the old one renamed
        retired = await api.ok("GET", f"/api/v1/nodes/{one.node.id}")
        assert retired["name"] == f"agent-test.old-{one.node.id[:8]}"
        assert retired["status"] == "down"
        assert (await api.ok("GET", f"/api/v1/allocations/{old['id']}"))["client_status"] == "lost"
        replacement = await wait_alloc(api, out["job"]["id"], "running")
        assert replacement["id"] != old["id"] and second_driver.starts == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
