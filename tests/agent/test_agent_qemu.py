"""The agent running real TCG microVMs: exit codes and logs, stop and crash clean-up (VM
process, tap, IP lease), networking on a bridge the test creates, and re-adoption after an
agent restart. The bridge lives in the host namespace because QEMU opens the tap there; it
and its taps are the test's own and are removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg
import psutil
import pytest

from mxvm.agent import agent as agent_module
from mxvm.agent.agent import Agent
from mxvm.agent.record import AllocRecord, alloc_dir
from mxvm.config import AgentSettings
from mxvm.hypervisors.base import VmHandle
from mxvm.hypervisors.qemu.driver import QemuDriver
from mxvm.image import build_dev_image, default_image_dir
from mxvm.net import NodeNetwork, tap_name
from tests.agent.conftest import agent_settings, dies_after_starting, running_agent
from tests.harness import Api, free_port, running, settings_for

pytestmark = [pytest.mark.vm, pytest.mark.privileged]
POOL = "10.213.0.0/16"


@pytest.fixture(scope="session")
def images() -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 (scripts/bootstrap installs it)")
    if os.geteuid() != 0:
        pytest.skip("needs root for the bridge and taps")
    build_dev_image(default_image_dir())
    return default_image_dir().parent


_ACCEL: list[Literal["kvm", "tcg"]] = []


async def qemu() -> QemuDriver:
    """A fresh driver (as after an agent restart), probing KVM only once per session."""
    if not _ACCEL:
        kernel = default_image_dir() / "vmlinuz"
        _ACCEL.append(await QemuDriver().select_accel(kernel))
    return QemuDriver(accel=_ACCEL[0])


@pytest.fixture
async def vmapi(pg_dsn: str, redis_url: str) -> AsyncIterator[Api]:
    # A heartbeat TTL longer than an agent restart: these tests restart agents on purpose.
    settings = settings_for(pg_dsn, redis_url, node_subnet_pool=POOL, heartbeat_ttl_s=30.0)
    async with running(settings) as a:
        yield a


@pytest.fixture(autouse=True)
def reap_vms(tmp_path: Path) -> Iterator[None]:
    """VMs outlive their agent by design: end this test's own ones when the test ends."""
    yield
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "qemu-system" in (proc.info["name"] or "") and str(tmp_path) in cmdline:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


@pytest.fixture
async def bridge() -> AsyncIterator[NodeNetwork]:
    net = NodeNetwork(f"mxvmt{secrets.token_hex(3)}")
    try:
        yield net
    finally:
        await net.teardown()
        await net.close()


def vm_job(name: str, argv: list[str], **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "type": "batch",
        "task": {"driver": "qemu", "argv": argv, "memory_mb": 192},
        "restart": {"attempts": 0},
        "reschedule": {"attempts": 0},
    }
    spec.update(kw)
    return spec


async def allocs_of(api: Api, job_id: str) -> list[dict[str, Any]]:
    return await api.ok("GET", f"/api/v1/jobs/{job_id}/allocations")  # type: ignore[no-any-return]


async def until(
    api: Api, job_id: str, status: str, n: int = 1, limit_s: float = 120
) -> list[dict[str, Any]]:
    async with asyncio.timeout(limit_s):
        while True:
            got = [a for a in await allocs_of(api, job_id) if a["client_status"] == status]
            if len(got) >= n:
                return got
            await asyncio.sleep(0.2)


async def logs(api: Api, alloc_id: str) -> str:
    async with api.session.get(
        f"{api.url}/api/v1/allocations/{alloc_id}/logs",
        headers={"Authorization": "Bearer admin-secret"},
    ) as resp:
        assert resp.status == 200
        return (await resp.read()).decode()


def tap_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def vm_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def ip_leases(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [str(r[0]) for r in await conn.fetch("SELECT host(ip) FROM allocation_ips")]
    finally:
        await conn.close()


def vm_of(agent: Agent, alloc_id: str) -> tuple[int, str]:
    runner = agent.runners[alloc_id]
    assert runner.attempt.handle is not None
    return runner.attempt.handle.pid, tap_name(alloc_id)


async def test_exit_code_logs_and_command_not_found(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path
) -> None:
    # Logs bounded to 10 KiB on the node.
    settings = agent_settings(
        vmapi, tmp_path / "state", bridge=bridge.bridge, alloc_log_max_mb=10 / 1024
    )
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge):
        out = await vmapi.ok(
            "POST", "/api/v1/jobs", json=vm_job("hello", ["sh", "-c", "echo hello; exit 3"])
        )
        [failed] = await until(vmapi, out["job"]["id"], "failed")
        assert failed["exit_code"] == 3
        assert "hello" in await logs(vmapi, failed["id"])
        out = await vmapi.ok("POST", "/api/v1/jobs", json=vm_job("nocmd", ["no-such-command"]))
        [failed] = await until(vmapi, out["job"]["id"], "failed")
        assert failed["exit_code"] == 127
        assert "no-such-command" in failed["client_description"]
        # ~19 KB of output: the node keeps the most recent 5-10 KiB, and says what it dropped.
        loop = 'i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done'
        out = await vmapi.ok("POST", "/api/v1/jobs", json=vm_job("chatty", ["sh", "-c", loop]))
        [done] = await until(vmapi, out["job"]["id"], "complete")
        text = await logs(vmapi, done["id"])
        note, _, kept = text.partition("\n")
        assert note.startswith("[mxvm: ") and note.endswith(" bytes of older output dropped]")
        assert kept.endswith("line 1998\nline 1999\n") and 5 * 1024 <= len(kept) <= 11 * 1024


async def test_a_command_past_its_max_runtime_is_stopped_and_fails(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path
) -> None:
    settings = agent_settings(vmapi, tmp_path / "state", bridge=bridge.bridge, stop_grace_s=2.0)
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge):
        spec = vm_job("runaway", ["sh", "-c", "echo started; sleep 600"])
        spec["task"]["max_runtime_s"] = 8.0  # a TCG boot takes ~2-5 s of it
        out = await vmapi.ok("POST", "/api/v1/jobs", json=spec)
        await until(vmapi, out["job"]["id"], "running")
        [failed] = await until(vmapi, out["job"]["id"], "failed", limit_s=60)
        assert failed["client_description"] == "exceeded its max runtime of 8s: stopped"
        assert failed["exit_code"] is None
        assert "started" in await logs(vmapi, failed["id"])
        assert qemus_of(failed["id"]) == [] and not tap_exists(tap_name(failed["id"]))


async def test_stop_and_crash_leave_no_vm_tap_or_ip_behind(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path, pg_dsn: str
) -> None:
    settings = agent_settings(vmapi, tmp_path / "state", bridge=bridge.bridge)
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge) as agent:
        spec = vm_job("svc", ["sleep", "600"], type="service", count=2)
        out = await vmapi.ok("POST", "/api/v1/jobs", json=spec)
        a, b = await until(vmapi, out["job"]["id"], "running", n=2)
        (pid_a, tap_a), (pid_b, tap_b) = vm_of(agent, a["id"]), vm_of(agent, b["id"])
        assert vm_alive(pid_a) and tap_exists(tap_a)
        assert sorted(await ip_leases(pg_dsn)) == sorted([a["ip"], b["ip"]])

        os.kill(pid_b, signal.SIGKILL)  # the hypervisor dies mid-run
        async with asyncio.timeout(60):
            while (got := await vmapi.ok("GET", f"/api/v1/allocations/{b['id']}"))[
                "client_status"
            ] != "failed":
                await asyncio.sleep(0.2)
        assert "VM ended" in got["client_description"]
        assert not tap_exists(tap_b)

        await vmapi.ok("POST", f"/api/v1/jobs/{out['job']['id']}/stop")
        async with asyncio.timeout(60):
            while (got := await vmapi.ok("GET", f"/api/v1/allocations/{a['id']}"))[
                "client_status"
            ] != "complete":
                await asyncio.sleep(0.2)
        assert not vm_alive(pid_a) and not tap_exists(tap_a)
    assert await ip_leases(pg_dsn) == []


async def test_host_reaches_guests_but_guests_not_each_other(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path
) -> None:
    settings = agent_settings(vmapi, tmp_path / "state", bridge=bridge.bridge)
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge):
        spec = vm_job("pair", ["sleep", "600"], type="service", count=2)
        out = await vmapi.ok("POST", "/api/v1/jobs", json=spec)
        a, b = await until(vmapi, out["job"]["id"], "running", n=2)
        for ip in (a["ip"], b["ip"]):
            ping = await asyncio.create_subprocess_exec("ping", "-c1", "-W3", ip)
            assert await ping.wait() == 0, f"host cannot reach guest {ip}"
        exec_ = f"/api/v1/allocations/{a['id']}/exec"
        gw = await vmapi.ok(
            "POST", exec_, json={"argv": ["ping", "-c1", "-W3", a["ip"].rsplit(".", 1)[0] + ".1"]}
        )
        assert gw["exit_code"] == 0, gw
        other = await vmapi.ok("POST", exec_, json={"argv": ["ping", "-c1", "-W3", b["ip"]]})
        assert other["exit_code"] != 0, other


async def test_agent_restart_readopts_the_running_vm(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path
) -> None:
    settings = agent_settings(vmapi, tmp_path / "state", bridge=bridge.bridge)
    tick = ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge) as agent:
        out = await vmapi.ok("POST", "/api/v1/jobs", json=vm_job("ticker", tick, type="service"))
        [a] = await until(vmapi, out["job"]["id"], "running")
        pid, _ = vm_of(agent, a["id"])
        await asyncio.sleep(2)
    assert vm_alive(pid)  # the agent is gone; its VM is not
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge) as agent2:
        async with asyncio.timeout(60):
            while a["id"] not in agent2.runners or agent2.runners[a["id"]].attempt.handle is None:
                await asyncio.sleep(0.1)
        assert vm_of(agent2, a["id"])[0] == pid
        first = await logs(vmapi, a["id"])
        await asyncio.sleep(3)
        later = await logs(vmapi, a["id"])
        assert len(later) > len(first) and "tick" in later  # output keeps flowing
        got = await vmapi.ok("GET", f"/api/v1/allocations/{a['id']}")
        assert got["client_status"] == "running"
        await vmapi.ok("POST", f"/api/v1/jobs/{out['job']['id']}/stop")
        await until(vmapi, out["job"]["id"], "complete")
    assert not vm_alive(pid)


async def test_corrupt_kernel_fails_naming_the_file(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path
) -> None:
    bad = tmp_path / "images" / "broken"
    bad.mkdir(parents=True)
    (bad / "vmlinuz").write_bytes(secrets.token_bytes(4096))
    (bad / "initrd.img").write_bytes((images / "default" / "initrd.img").read_bytes()[:1024])
    (bad / "manifest.json").write_text('{"kernel": "vmlinuz", "initrd": "initrd.img"}')
    settings = agent_settings(vmapi, tmp_path / "state", bridge=bridge.bridge)
    async with running_agent(
        settings, {"qemu": QemuDriver(accel="tcg")}, tmp_path / "images", bridge
    ):
        spec = vm_job("broken", ["true"])
        spec["task"]["image"] = "broken"
        out = await vmapi.ok("POST", "/api/v1/jobs", json=spec)
        [failed] = await until(vmapi, out["job"]["id"], "failed")
    assert str(bad / "vmlinuz") in failed["client_description"]


async def _agent_process(env: dict[str, str]) -> asyncio.subprocess.Process:
    argv = [sys.executable, "-m", "mxvm", "--log-level", "WARNING", "agent"]
    return await asyncio.create_subprocess_exec(*argv, env=env)


async def test_agent_killed_with_sigkill_readopts_its_vms(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {
        **os.environ,
        "MXVM_URL": vmapi.url,
        "MXVM_AGENT_TOKEN": "agent-secret",
        "MXVM_STATE_DIR": str(state),
        "MXVM_IMAGES_DIR": str(images),
        "MXVM_BRIDGE": bridge.bridge,
        "MXVM_API_LISTEN": f"127.0.0.1:{free_port()}",
        "MXVM_NODE_NAME": "sigkill-node",
        "MXVM_SYSFS_ROOT": str(tmp_path / "no-sysfs"),
    }
    tick = ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]
    agent = await _agent_process(env)
    try:
        out = await vmapi.ok("POST", "/api/v1/jobs", json=vm_job("tick9", tick, type="service"))
        [a] = await until(vmapi, out["job"]["id"], "running", limit_s=180)
        record = AllocRecord.model_validate_json(
            (alloc_dir(state, a["id"]) / "record.json").read_text()
        )
        assert record.handle is not None
        pid = record.handle.pid
        agent.kill()  # kill -9: no clean-up of any kind
        await agent.wait()
        await asyncio.sleep(2)
        assert vm_alive(pid)
        agent = await _agent_process(env)
        async with asyncio.timeout(90):
            while True:  # the restarted agent serves the log again and it keeps growing
                with contextlib.suppress(AssertionError, aiohttp.ClientError):
                    first = await logs(vmapi, a["id"])
                    await asyncio.sleep(3)
                    if len(await logs(vmapi, a["id"])) > len(first):
                        break
                await asyncio.sleep(0.5)
        assert vm_alive(pid)
        again = AllocRecord.model_validate_json(
            (alloc_dir(state, a["id"]) / "record.json").read_text()
        )
        assert again.handle is not None and again.handle.pid == pid  # same VM, not a new one
        got = await vmapi.ok("GET", f"/api/v1/allocations/{a['id']}")
        assert got["client_status"] == "running"
        await vmapi.ok("POST", f"/api/v1/jobs/{out['job']['id']}/stop")
        await until(vmapi, out["job"]["id"], "complete", limit_s=90)
        assert not vm_alive(pid)
    finally:
        if agent.returncode is None:
            agent.terminate()
            await agent.wait()


def qemus_of(alloc_id: str) -> list[int]:
    """The QEMU processes running for this allocation (its run dir is in their argv)."""
    return [
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if "qemu-system" in (p.info["name"] or "")
        and any(alloc_id[:18] in arg for arg in p.info["cmdline"] or [])
        and vm_alive(p.pid)
    ]


async def left_by_a_dying_agent(
    vmapi: Api, settings: AgentSettings, images: Path, bridge: NodeNetwork, argv: list[str]
) -> tuple[dict[str, Any], dict[str, Any], VmHandle]:
    """A service job whose VM an agent started and then died (dies_after_starting): the
    submitted job, its allocation, and the VM left running."""
    await qemu()  # the session's accelerator
    dying = QemuDriver(accel=_ACCEL[0])
    spawned = dies_after_starting(dying)
    async with running_agent(settings, {"qemu": dying}, images, bridge):
        out = await vmapi.ok("POST", "/api/v1/jobs", json=vm_job("left", argv, type="service"))
        async with asyncio.timeout(60):
            vm = await spawned
    [a] = await allocs_of(vmapi, out["job"]["id"])
    return out, a, vm


@pytest.mark.parametrize("left", ["recorded by the driver", "its pid not yet noted"])
async def test_a_vm_whose_start_the_agent_never_saw_finish_is_replaced_not_doubled(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path, left: str
) -> None:
    # The agent died between spawning QEMU and noting the VM: the next agent finds a VM it
    # has no handle for. Its command never started, so that VM is destroyed and the
    # allocation booted afresh: one VM per allocation, none leaked, the tap usable again.
    # "its pid not yet noted": it died while QEMU was still daemonizing.
    settings = agent_settings(vmapi, tmp_path / "state", bridge=bridge.bridge)
    tick = ["sh", "-c", "while true; do echo tick; sleep 1; done"]
    out, a, orphan = await left_by_a_dying_agent(vmapi, settings, images, bridge, tick)
    assert qemus_of(a["id"]) == [orphan.pid]  # the agent is gone; the VM it started is not
    if left == "its pid not yet noted":  # as the driver writes it before QEMU runs
        state = orphan.run_dir / "vm.json"
        state.write_text(json.dumps({**json.loads(state.read_text()), "pid": 0}))
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge) as agent:
        [running] = await until(vmapi, out["job"]["id"], "running")
        pid, _ = vm_of(agent, a["id"])
        assert running["id"] == a["id"] and pid != orphan.pid
        assert not vm_alive(orphan.pid)
        assert qemus_of(a["id"]) == [pid]
        await vmapi.ok("POST", f"/api/v1/jobs/{out['job']['id']}/stop")
        await until(vmapi, out["job"]["id"], "complete")
    assert qemus_of(a["id"]) == []


async def test_a_vm_whose_command_was_never_sent_gets_it_from_the_next_agent(
    vmapi: Api, images: Path, bridge: NodeNetwork, tmp_path: Path
) -> None:
    # The agent died after noting its VM but before sending the guest its command: the next
    # agent adopts that VM (same pid), asks the guest, and sends the command, once.
    settings = agent_settings(vmapi, tmp_path / "state", bridge=bridge.bridge)
    tick = ["sh", "-c", "echo started once; while true; do sleep 1; done"]
    out, a, vm = await left_by_a_dying_agent(vmapi, settings, images, bridge, tick)
    path = alloc_dir(tmp_path / "state", a["id"]) / "record.json"
    record = AllocRecord.model_validate_json(path.read_text())
    path.write_text(record.model_copy(update={"handle": vm}).model_dump_json())  # as noted
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge) as agent:
        await until(vmapi, out["job"]["id"], "running")
        assert vm_of(agent, a["id"])[0] == vm.pid and qemus_of(a["id"]) == [vm.pid]
        async with asyncio.timeout(60):
            while "started once" not in await logs(vmapi, a["id"]):
                await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        assert (await logs(vmapi, a["id"])).count("started once") == 1
        await vmapi.ok("POST", f"/api/v1/jobs/{out['job']['id']}/stop")
        await until(vmapi, out["job"]["id"], "complete")
    assert qemus_of(a["id"]) == []


async def test_a_flooded_console_log_is_trimmed_while_qemu_writes_on(
    vmapi: Api,
    images: Path,
    bridge: NodeNetwork,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QEMU writes the kernel console itself; a guest flooding it must not fill the disk."""
    monkeypatch.setattr(agent_module, "CONSOLE_TRIM_S", 0.3)
    settings = agent_settings(
        vmapi, tmp_path / "state", bridge=bridge.bridge, console_log_max_mb=16 / 1024
    )
    flood = (
        'i=0; while [ $i -lt 2000 ]; do echo "console flood $i" > /dev/console; i=$((i+1)); '
        "done; sleep 1; echo console-marker > /dev/console; sleep 600"
    )
    async with running_agent(settings, {"qemu": await qemu()}, images, bridge) as agent:
        out = await vmapi.ok(
            "POST", "/api/v1/jobs", json=vm_job("flood", ["sh", "-c", flood], type="service")
        )
        [alloc] = await until(vmapi, out["job"]["id"], "running")
        vm_dir = agent.run_dir(alloc["id"]) / "vm"
        console = vm_dir / "console.log"
        async with asyncio.timeout(60):
            while b"console-marker" not in console.read_bytes():
                await asyncio.sleep(0.2)
        # ~40 KB went to the console: trimmed to its last 8 KiB at least once, and QEMU's
        # later lines land at the start of the emptied log, not past a hole.
        assert (vm_dir / "console.log.1").exists()
        assert console.stat().st_size <= 16 * 1024
        assert not console.read_bytes().startswith(b"\0")
        await vmapi.ok("POST", f"/api/v1/jobs/{out['job']['id']}/stop")
        await until(vmapi, out["job"]["id"], "complete")
