"""Booting and tearing down the microVM of one allocation: image, tap, VmSpec, driver."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from mxvm.agent import record as rec
from mxvm.agent.context import AgentContext
from mxvm.agent.images import resolve_image
from mxvm.agent.passthrough import bind_devices, release_devices
from mxvm.errors import InvalidSpec, MxvmError
from mxvm.hypervisors.base import VmHandle, VmSpec
from mxvm.image.cmdline import identity_args
from mxvm.models import AssignedAllocation
from mxvm.net.names import tap_name

log = logging.getLogger(__name__)


async def vm_spec(ctx: AgentContext, assigned: AssignedAllocation, run_dir: Path) -> VmSpec:
    """Everything the driver needs; ImageError / InvalidSpec / PassthroughError name what is
    wrong. The allocation's devices are bound to vfio-pci here (undone by `teardown`)."""
    a, task = assigned.allocation, assigned.task
    image = resolve_image(ctx.image_dir, task.image)
    if task.memory_mb < image.min_memory_mb:
        raise InvalidSpec(
            f"task.memory_mb {task.memory_mb} is below image {image.name!r}'s minimum "
            f"of {image.min_memory_mb} MiB"
        )
    tap = mac = None
    if ctx.net is not None and a.ip is not None:
        info = await ctx.net.create_tap(a.id)
        tap, mac = info.name, info.mac
    hostname = a.name.replace("[", "-").replace("]", "")
    if a.device_ids and not ctx.driver(task.driver).capabilities().device_passthrough:
        raise InvalidSpec(f"driver {task.driver!r} cannot pass devices through on this node")
    pci_devices = await bind_devices(ctx, a.id, a.device_ids)
    return VmSpec(
        alloc_id=a.id,
        name=a.name,
        vcpus=task.vcpus,
        memory_mb=task.memory_mb,
        kernel=image.kernel,
        initrd=image.initrd,
        root_disk=image.root_disk,
        kernel_args=[
            *image.cmdline,
            *identity_args(
                ip=f"{a.ip}/{ctx.prefixlen}" if a.ip else None,
                gateway=ctx.gateway if a.ip else None,
                mac=mac,
                hostname=hostname,
            ),
        ],
        tap=tap,
        mac=mac,
        pci_devices=pci_devices,
        run_dir=run_dir,
    )


async def teardown(ctx: AgentContext, driver_name: str, handle: VmHandle | None,
                   alloc_id: str, devices: Sequence[str] = (),
                   grace_s: float | None = None) -> None:  # fmt: skip
    """Stop (gracefully for `grace_s`, by default the agent's stop_grace_s, then hard) and
    forget the VM, remove its tap, and give `devices` back to their drivers (only once the
    VM no longer holds them). Never raises."""
    if handle is not None:
        driver = ctx.driver(driver_name)
        try:
            await driver.stop(handle, ctx.settings.stop_grace_s if grace_s is None else grace_s)
        except MxvmError as exc:
            log.warning("vm.stop_failed %s %s", alloc_id, exc.detail)
        with contextlib.suppress(MxvmError):
            await driver.destroy(handle)
    if ctx.net is not None:
        try:
            await ctx.net.delete_tap(tap_name(alloc_id))
        except MxvmError as exc:
            log.warning("net.tap_delete_failed %s %s", alloc_id, exc.detail)
    await release_devices(ctx, alloc_id, devices)


async def destroy_leftover_vm(ctx: AgentContext, record: rec.AllocRecord, run_dir: Path) -> None:
    """Destroy the VM an earlier agent process left for this allocation, if one still runs:
    an orphan (its allocation ended while no agent was here), or one whose start that agent
    began but died before noting its handle. Such a VM's command never ran (the handle is
    noted before the command is sent), so nothing is lost; left running, it would hold the
    allocation's tap and resources, and keep a new VM from starting."""
    driver = ctx.drivers.get(record.driver)
    if driver is None:
        return
    handle = await driver.recover(record.alloc_id, rec.vm_dir(run_dir))
    if handle is not None:
        log.warning("alloc.leftover_vm_destroyed %s pid=%d", record.alloc_id, handle.pid)
        await driver.destroy(handle)
