"""A real coordinator plus an in-process Agent with a chosen driver set."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mxvm.agent.agent import Agent
from mxvm.config import AgentSettings
from mxvm.hypervisors.base import Driver, VmHandle, VmSpec
from mxvm.net import NodeNetwork
from tests.harness import AGENT, Api, free_port


def dies_after_starting(driver: Driver) -> asyncio.Future[VmHandle]:
    """Make `driver.start` start the VM for real and then never return: the agent "dies"
    right after its VM was spawned, before it could note it. The future gets that VM."""
    spawned: asyncio.Future[VmHandle] = asyncio.get_running_loop().create_future()
    start = driver.start

    async def start_then_die(spec: VmSpec) -> VmHandle:
        spawned.set_result(await start(spec))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    driver.start = start_then_die  # type: ignore[method-assign]
    return spawned


def fake_image(image_dir: Path, name: str = "default", min_memory_mb: int = 128) -> None:
    d = image_dir / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(
        json.dumps({"kernel": "vmlinuz", "initrd": "initrd.img", "min_memory_mb": min_memory_mb})
    )


def agent_settings(api: Api, state_dir: Path, **kw: object) -> AgentSettings:
    base: dict[str, object] = {
        "url": api.url,
        "agent_token": SecretStr(AGENT),
        "node_name": "agent-test",
        "state_dir": state_dir,
        "api_listen": f"127.0.0.1:{free_port()}",
        "stop_grace_s": 5.0,
        "sysfs_root": state_dir / "no-sysfs",
    }
    base.update(kw)
    return AgentSettings(**base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_agent(
    settings: AgentSettings,
    drivers: dict[str, Driver],
    image_dir: Path,
    network: NodeNetwork | None = None,
    **seams: Any,
) -> AsyncIterator[Agent]:
    """The agent running until the block ends; `seams`: Agent's nvml / sysfs_writer."""
    agent = Agent(settings, drivers, image_dir=image_dir, network=network, **seams)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(agent.run(stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
