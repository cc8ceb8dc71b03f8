"""Fixtures: the real guest agent served in-process on a unix socket standing in for the
virtio-serial port (UnixListenPort has the port's semantics: one host at a time)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mxvm.guest.agent import GuestAgent
from mxvm.guest.client import GuestClient
from mxvm.guest.port import UnixListenPort


@dataclass
class AgentUnderTest:
    sock: Path
    agent: GuestAgent
    task: asyncio.Task[None]
    port: UnixListenPort


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="mxg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def served(short_dir: Path) -> AsyncIterator[AgentUnderTest]:
    sock = short_dir / "port.sock"
    port = UnixListenPort(sock)
    agent = GuestAgent(port, default_cwd=str(short_dir))
    task = asyncio.get_running_loop().create_task(agent.serve())
    try:
        yield AgentUnderTest(sock, agent, task, port)
    finally:
        agent.request_shutdown(0.5)
        await asyncio.wait_for(task, 60)
        port.close()


@pytest.fixture
async def client(served: AgentUnderTest) -> AsyncIterator[GuestClient]:
    c = await GuestClient.connect(served.sock, timeout=30)
    await c.wait_ready(timeout=30)
    yield c
    await c.close()
