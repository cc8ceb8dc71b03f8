"""GPU passthrough through the agent's allocation lifecycle, against a real coordinator, with
a fake sysfs tree and its kernel simulator (the VFIO writes), a fake NVML (health) and the
fake driver (which records the VmSpec it is given)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from mxvm.agent.agent import Agent
from mxvm.agent.context import AgentContext
from mxvm.agent.passthrough import bind_devices, release_devices
from mxvm.config import AgentSettings
from mxvm.devices import NvmlGpu, NvmlStatus, bind_group
from mxvm.hypervisors.base import VmHandle, VmSpec
from mxvm.hypervisors.fake import FakeDriver
from mxvm.models import AllocStatusUpdate
from tests.agent.conftest import agent_settings, fake_image, running_agent
from tests.api import test_device_health as device_health
from tests.devices.fake_sysfs import FakeKernel, FakePci, gpu, gpu_audio
from tests.harness import Api

GPU, AUDIO, GPU2 = "0000:65:00.0", "0000:65:00.1", "0000:b3:00.0"


class RecordingDriver(FakeDriver):
    """The fake driver, remembering the PCI devices each allocation's VM was given."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.pci: dict[str, list[str]] = {}

    async def start(self, spec: VmSpec) -> VmHandle:
        self.pci[spec.alloc_id] = list(spec.pci_devices)
        return await super().start(spec)


class FakeNvml:
    """NVML's view, changed by the test between the agent's scans."""

    def __init__(self, *addresses: str) -> None:
        self.gpus = {
            a: NvmlGpu(pci_address=a, index=i, name="NVIDIA H100 80GB HBM3", memory_mb=81559)
            for i, a in enumerate(addresses)
        }

    def query(self) -> NvmlStatus:
        return NvmlStatus(available=True, driver_version="550.54", gpus=dict(self.gpus))

    def break_gpu(self, address: str, reason: str) -> None:
        self.gpus[address] = self.gpus[address].model_copy(
            update={"healthy": False, "health_reason": reason}
        )


def gpu_job(name: str, **kw: Any) -> dict[str, Any]:
    """The device-health tests' GPU job, not rescheduled unless asked."""
    return device_health.gpu_job(name, **{"reschedule": {"attempts": 0}, **kw})


def host(tmp_path: Path, functions: list[FakePci]) -> FakeKernel:
    return FakeKernel(tmp_path / "host", functions)


def settings_for(api: Api, tmp_path: Path, kernel: FakeKernel, **kw: object) -> AgentSettings:
    return agent_settings(
        api,
        tmp_path / "state",
        sysfs_root=kernel.root,
        dev_root=kernel.dev_root,
        node_name="gpu-node",
        **kw,
    )


@contextlib.asynccontextmanager
async def gpu_agent(
    settings: AgentSettings, driver: FakeDriver, kernel: FakeKernel, nvml: FakeNvml, images: Path
) -> AsyncIterator[Agent]:
    fake_image(images)
    seams = {"nvml": nvml, "sysfs_writer": kernel.write}
    async with running_agent(settings, {"fake": driver}, images, None, **seams) as agent:
        yield agent


async def allocs_where(
    api: Api, job_id: str, check: Callable[[dict[str, Any]], bool], limit_s: float = 20
) -> list[dict[str, Any]]:
    async with asyncio.timeout(limit_s):
        while True:
            allocs = await api.ok("GET", f"/api/v1/jobs/{job_id}/allocations")
            found = [a for a in allocs if check(a)]
            if found:
                return found
            await asyncio.sleep(0.05)


def status_is(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda a: bool(a["client_status"] == status)


async def until(check: Callable[[], bool], limit_s: float = 10) -> None:
    async with asyncio.timeout(limit_s):
        while not check():
            await asyncio.sleep(0.05)


async def test_gpu_group_is_bound_for_the_vm_and_given_back_after(api: Api, tmp_path: Path) -> None:
    kernel = host(tmp_path, [gpu(GPU, 12), gpu_audio(AUDIO, 12)])
    driver = RecordingDriver()
    settings = settings_for(api, tmp_path, kernel)
    async with gpu_agent(settings, driver, kernel, FakeNvml(GPU), tmp_path / "images") as agent:
        out = await api.ok("POST", "/api/v1/jobs", json=gpu_job("train"))
        job_id = out["job"]["id"]
        (alloc,) = await allocs_where(api, job_id, status_is("running"))
        assert alloc["device_ids"] == [GPU]
        assert driver.pci[alloc["id"]] == [GPU]
        # The whole group, the audio function too, went to vfio-pci through sysfs writes.
        assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("vfio-pci", "vfio-pci")
        assert ("bus/pci/devices/0000:65:00.1/driver_override", "vfio-pci") in kernel.writes
        assert ("bus/pci/drivers_probe", GPU) in kernel.writes
        assert kernel.vfio_dev(12).exists()
        runner = agent.runner(alloc["id"])
        assert runner is not None
        env = runner._env()
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        assert env["MXVM_ALLOCATED_DEVICE_IDS"] == GPU

        await api.ok("POST", f"/api/v1/jobs/{job_id}/stop")
        await allocs_where(api, job_id, status_is("complete"))
    # Released before the final report: the original drivers are back, the override cleared.
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")
    assert (kernel.override(GPU), kernel.override(AUDIO)) == ("(null)", "(null)")
    assert not kernel.vfio_dev(12).exists()
    assert ("bus/pci/devices/0000:65:00.0/driver_override", "\n") in kernel.writes


async def test_iommu_off_fails_the_allocation_with_the_reason(api: Api, tmp_path: Path) -> None:
    kernel = host(tmp_path, [gpu(GPU, 12), gpu_audio(AUDIO, 12)])
    driver = RecordingDriver()
    settings = settings_for(api, tmp_path, kernel)
    async with gpu_agent(settings, driver, kernel, FakeNvml(GPU), tmp_path / "images"):
        # The node registered a passthrough-ready GPU; then the IOMMU is gone (the
        # coordinator's view is stale until the next health scan, 30 s away).
        shutil.rmtree(kernel.root / "kernel" / "iommu_groups")
        shutil.rmtree(kernel.root / "class" / "iommu" / "dmar0")
        for address in (GPU, AUDIO):
            (kernel.device_dir(address) / "iommu_group").unlink()
        spec = gpu_job("train", restart={"attempts": 3, "delay_s": 0})
        out = await api.ok("POST", "/api/v1/jobs", json=spec)
        (failed,) = await allocs_where(api, out["job"]["id"], status_is("failed"))
    assert failed["client_description"] == f"cannot pass through {GPU}: iommu disabled"
    assert "restarting" not in [e["type"] for e in failed["events"]]  # fatal: no restart
    assert driver.starts == 0
    assert kernel.writes == []
    assert kernel.driver(GPU) == "nvidia"


async def test_unhealthy_gpu_fails_its_allocation_and_the_replacement_gets_the_other(
    api: Api, tmp_path: Path
) -> None:
    kernel = host(tmp_path, [gpu(GPU, 12), gpu_audio(AUDIO, 12), gpu(GPU2, 40)])
    nvml = FakeNvml(GPU, GPU2)
    driver = RecordingDriver()
    settings = settings_for(api, tmp_path, kernel, health_interval_s=0.1)
    async with gpu_agent(settings, driver, kernel, nvml, tmp_path / "images") as agent:
        assert agent.node is not None
        spec = gpu_job("train", reschedule={"attempts": 1, "delay_s": 0, "interval_s": 600})
        out = await api.ok("POST", "/api/v1/jobs", json=spec)
        job_id = out["job"]["id"]
        (first,) = await allocs_where(api, job_id, status_is("running"))
        (bad,) = first["device_ids"]
        good = GPU2 if bad == GPU else GPU
        assert kernel.driver(bad) == "vfio-pci"

        nvml.break_gpu(bad, "XID 79: GPU has fallen off the bus")

        (failed,) = await allocs_where(api, job_id, status_is("failed"))
        assert failed["id"] == first["id"]
        reason = f"GPU {bad} unhealthy: XID 79: GPU has fallen off the bus"
        assert failed["client_description"] == reason
        (second,) = await allocs_where(api, job_id, status_is("running"))
        assert second["device_ids"] == [good]
        assert second["previous_allocation"] == first["id"]
        assert second["reschedule_attempts"] == 1
        assert driver.pci[second["id"]] == [good]
        node = await api.ok("GET", f"/api/v1/nodes/{agent.node.id}")
        health = {d["id"]: (d["healthy"], d["health_reason"]) for d in node["devices"]}
        assert health == {bad: (False, "XID 79: GPU has fallen off the bus"), good: (True, "")}
        # The failed allocation's VM is torn down and its GPU given back to the host driver.
        await until(lambda: kernel.driver(bad) == "nvidia")
        assert first["id"] not in driver._vms
        assert kernel.driver(good) == "vfio-pci"


async def test_restarted_agent_readopts_without_rebinding_and_releases_at_the_end(
    api: Api, tmp_path: Path
) -> None:
    kernel = host(tmp_path, [gpu(GPU, 12), gpu_audio(AUDIO, 12)])
    settings = settings_for(api, tmp_path, kernel)
    first = RecordingDriver(persist=True)
    async with gpu_agent(settings, first, kernel, FakeNvml(GPU), tmp_path / "images"):
        out = await api.ok("POST", "/api/v1/jobs", json=gpu_job("train"))
        job_id = out["job"]["id"]
        (alloc,) = await allocs_where(api, job_id, status_is("running"))
    writes = len(kernel.writes)
    assert kernel.driver(GPU) == "vfio-pci"  # the VM outlives the agent, and keeps its GPU
    second = RecordingDriver(persist=True)
    async with gpu_agent(settings, second, kernel, FakeNvml(GPU), tmp_path / "images"):
        await until(lambda: alloc["id"] in second._vms)
        assert second.starts == 0 and len(kernel.writes) == writes  # adopted, nothing rebound
        await api.ok("POST", f"/api/v1/jobs/{job_id}/stop")
        await allocs_where(api, job_id, status_is("complete"))
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")


async def test_agent_start_releases_groups_no_allocation_holds(api: Api, tmp_path: Path) -> None:
    kernel = host(tmp_path, [gpu(GPU, 12), gpu_audio(AUDIO, 12)])
    settings = settings_for(api, tmp_path, kernel)
    # An earlier agent bound the group and died before its allocation record existed.
    await bind_group(
        kernel.root,
        GPU,
        state_dir=settings.state_dir,
        dev_root=kernel.dev_root,
        writer=kernel.write,
    )
    assert kernel.driver(AUDIO) == "vfio-pci"
    async with gpu_agent(settings, FakeDriver(), kernel, FakeNvml(GPU), tmp_path / "images"):
        assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")


async def test_release_leaves_a_group_another_allocation_has_bound_since(tmp_path: Path) -> None:
    kernel = host(tmp_path, [gpu(GPU, 12)])
    settings = AgentSettings(
        state_dir=tmp_path / "state", sysfs_root=kernel.root, dev_root=kernel.dev_root
    )
    ctx = AgentContext(settings, {}, _no_report, tmp_path / "images", sysfs_writer=kernel.write)
    assert await bind_devices(ctx, "old", [GPU]) == [GPU]
    assert await bind_devices(ctx, "new", [GPU]) == [GPU]  # idempotent: no second bind
    assert len([w for w in kernel.writes if w[1] == "vfio-pci"]) == 1
    await release_devices(ctx, "old", [GPU])  # the old VM's late teardown
    assert kernel.driver(GPU) == "vfio-pci"
    await release_devices(ctx, "new", [GPU])
    assert kernel.driver(GPU) == "nvidia"


async def _no_report(alloc_id: str, update: AllocStatusUpdate) -> None:
    raise AssertionError("nothing is reported here")


async def test_gpu_that_broke_while_the_agent_was_away_fails_its_allocation(
    api: Api, tmp_path: Path
) -> None:
    kernel = host(tmp_path, [gpu(GPU, 12)])
    nvml = FakeNvml(GPU)
    settings = settings_for(api, tmp_path, kernel, health_interval_s=0.1)
    first = RecordingDriver(persist=True)
    async with gpu_agent(settings, first, kernel, nvml, tmp_path / "images"):
        out = await api.ok("POST", "/api/v1/jobs", json=gpu_job("train"))
        job_id = out["job"]["id"]
        (alloc,) = await allocs_where(api, job_id, status_is("running"))
    nvml.break_gpu(GPU, "row remapping failed")
    second = RecordingDriver(persist=True)
    async with gpu_agent(settings, second, kernel, nvml, tmp_path / "images"):
        (failed,) = await allocs_where(api, job_id, status_is("failed"))
        assert failed["id"] == alloc["id"]
        assert failed["client_description"] == f"GPU {GPU} unhealthy: row remapping failed"
        await until(lambda: kernel.driver(GPU) == "nvidia")  # the adopted VM is torn down
        assert alloc["id"] not in second._vms
