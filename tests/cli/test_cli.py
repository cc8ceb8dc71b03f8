"""The `mxvm` command as a user runs it: `mxvm up` in the background, then the client verbs."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mxvm.embedded import find_postgres_binaries, find_redis_server
from mxvm.net.names import is_pool_name
from tests.harness import free_port


def _parked_taps() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir() if is_pool_name(p.name)}


def _up(*extra: str) -> Iterator[dict[str, str]]:
    try:
        find_postgres_binaries()
        find_redis_server()
    except Exception as exc:  # the fixture's reason says what is missing
        pytest.skip(f"mxvm up needs Postgres and Redis: {exc}")
    state = Path(tempfile.mkdtemp(prefix="mxvm-up-"))
    state.chmod(0o755)
    url = f"http://127.0.0.1:{free_port()}"
    bridge = f"mxvmt{secrets.token_hex(3)}"  # our own bridge, removed afterwards
    parked_before = _parked_taps()  # idle taps the agent parks for reuse: ours are removed too
    env = {**os.environ, "MXVM_STATE_DIR": str(state), "MXVM_URL": url, "MXVM_BRIDGE": bridge}
    env.pop("MXVM_TOKEN", None)
    env.pop("MXVM_ADMIN_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mxvm", "up", "--listen", url.removeprefix("http://"), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        deadline = time.monotonic() + 240  # the first run may build the guest image
        while "mxvm is up" not in banner and time.monotonic() < deadline:
            banner = proc.stdout.readline()
            if proc.poll() is not None:
                pytest.fail("mxvm up exited early")
        assert "mxvm is up" in banner
        yield env
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(state, ignore_errors=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        for tap in _parked_taps() - parked_before:
            subprocess.run(["ip", "link", "del", tap], capture_output=True, check=False)


@pytest.fixture(scope="module")
def up() -> Iterator[dict[str, str]]:
    """`mxvm up` with the control plane only: nodes are registered by the tests."""
    yield from _up("--no-agent")


def mxvm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxvm", "--log-level", "WARNING", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def json_of(env: dict[str, str], *args: str) -> Any:
    out = mxvm(env, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def _register_and_heartbeat(env: dict[str, str], name: str) -> None:
    """Play a host agent: register, then heartbeat until cancelled (so the node stays ready)."""
    token = (Path(env["MXVM_STATE_DIR"]) / "agent-token").read_text().strip()
    resources = {"cpu_millicores": 4000, "memory_mb": 4096}
    reg = {"name": name, "resources": resources, "drivers": ["fake"]}
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(env["MXVM_URL"] + "/api/v1/agent/register", json=reg) as resp:
            assert resp.status == 200
            node_id = (await resp.json())["node"]["id"]
        while True:
            await asyncio.sleep(2)
            async with s.post(f"{env['MXVM_URL']}/api/v1/agent/nodes/{node_id}/heartbeat"):
                pass


def test_up_generates_and_keeps_an_admin_token(up: dict[str, str]) -> None:
    token_file = Path(up["MXVM_STATE_DIR"]) / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert len(token_file.read_text().strip()) >= 32
    # The CLI finds the token in the state dir; a wrong MXVM_TOKEN is refused.
    assert mxvm(up, "job", "ls").returncode == 0
    bad = mxvm({**up, "MXVM_TOKEN": "wrong"}, "job", "ls")
    assert bad.returncode == 1 and "invalid token" in bad.stderr


async def test_job_lifecycle_through_the_cli(up: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "hello.toml"
    spec.write_text(
        'name = "hello"\n[task]\ndriver = "fake"\nargv = ["echo", "hi"]\nmemory_mb = 128\n'
    )
    blocked = mxvm(up, "job", "run", str(spec))
    assert blocked.returncode == 2 and "no ready nodes" in blocked.stdout
    mxvm(up, "job", "stop", "hello")

    agent = asyncio.create_task(_register_and_heartbeat(up, "cli-node"))
    async with asyncio.timeout(30):
        while not json_of(up, "node", "ls"):
            await asyncio.sleep(0.2)
    nodes = json_of(up, "node", "ls")
    assert [n["name"] for n in nodes] == ["cli-node"]
    placed = mxvm(up, "job", "run", str(spec))
    assert placed.returncode == 0, placed.stdout + placed.stderr
    assert "placed hello[0]" in placed.stdout

    table = mxvm(up, "job", "ls")
    assert table.stdout.splitlines()[0].split() == [
        "ID", "NAME", "TYPE", "PRIORITY", "STATUS", "SUBMITTED"
    ]  # fmt: skip
    status = json_of(up, "job", "status", "hello")
    [alloc] = status["allocations"]
    assert alloc["name"] == "hello[0]" and alloc["client_status"] == "pending"
    shown = mxvm(up, "alloc", "show", alloc["id"][:8])
    assert "placed on node" in shown.stdout
    assert [a["id"] for a in json_of(up, "alloc", "ls", "--job", "hello")] == [alloc["id"]]
    assert "cli-node" in mxvm(up, "node", "show", "cli-node").stdout
    assert (
        json_of(up, "node", "eligibility", "cli-node", "ineligible")["eligibility"] == "ineligible"
    )
    assert mxvm(up, "job", "stop", "hello").returncode == 0

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "task": {"argv": [], "memory_mb": 1}}))
    out = mxvm(up, "job", "run", str(bad))
    assert out.returncode == 1
    assert "task.argv" in out.stderr and "task.memory_mb" in out.stderr
    assert "no job matches" in mxvm(up, "job", "status", "nope").stderr
    agent.cancel()


async def test_node_drain_through_the_cli(up: dict[str, str], tmp_path: Path) -> None:
    agent = asyncio.create_task(_register_and_heartbeat(up, "drain-node"))
    try:
        async with asyncio.timeout(30):
            while not [n for n in json_of(up, "node", "ls") if n["name"] == "drain-node"]:
                await asyncio.sleep(0.2)
        out = json_of(up, "node", "drain", "drain-node", "--ignore-system")
        # Nothing runs there: drained at once, and ineligible.
        assert out["node"]["eligibility"] == "ineligible" and out["node"]["drain"] is False
        assert out["stopped"] == [] and out["evaluations"] == []
        cancelled = mxvm(up, "node", "drain", out["node"]["id"][:8], "--disable")
        assert cancelled.returncode == 0, cancelled.stderr
        assert "drain cancelled; it stays ineligible" in cancelled.stdout
        shown = mxvm(up, "node", "show", "drain-node").stdout
        assert "Drain" in shown and "ineligible" in shown
        assert "no node matches" in mxvm(up, "node", "drain", "nope").stderr
        bad = mxvm(up, "node", "drain", "drain-node", "--deadline", "soon")
        assert bad.returncode == 2 and "not a duration: 'soon'" in bad.stderr

        # A pending batch job there: moved at once; the drain lasts until the agent has
        # stopped it, with its deadline shown.
        mxvm(up, "node", "eligibility", "drain-node", "eligible")
        spec = tmp_path / "pinned.json"
        spec.write_text(json.dumps({
            "name": "pinned", "task": {"driver": "fake", "argv": ["true"], "memory_mb": 128},
            "constraints": [{"attribute": "node.name", "value": "drain-node"}],
        }))  # fmt: skip
        assert mxvm(up, "job", "run", str(spec)).returncode == 0
        out = mxvm(up, "node", "drain", "drain-node", "--deadline", "90s")
        assert out.returncode == 0, out.stderr
        assert "is draining until " in out.stdout and "stopped 1 allocation(s)" in out.stdout
        node = json_of(up, "node", "show", "drain-node")["node"]
        assert node["drain"] is True and node["drain_strategy"]["deadline"]
        assert "draining until " in mxvm(up, "node", "show", "drain-node").stdout
    finally:
        agent.cancel()
