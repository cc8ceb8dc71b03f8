"""VFIO for allocations: each assigned device's whole IOMMU group goes to vfio-pci before the
VM starts, and back to its original drivers once the VM is torn down.

The device ids the scheduler assigns are the PCI addresses the agent registered. Binding is
idempotent (mxvm.devices keeps a state file of what it moved), so a restart between the
bind and the VM's start simply binds again; a re-adopted VM's groups are already bound and
are left alone. The sysfs writer is `AgentContext.sysfs_writer`: tests pass a fake kernel's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from mxvm.agent.context import AgentContext
from mxvm.devices import bind_group, release_group
from mxvm.devices.vfio_state import load_state
from mxvm.errors import MxvmError

log = logging.getLogger(__name__)


async def bind_devices(ctx: AgentContext, alloc_id: str, addresses: Sequence[str]) -> list[str]:
    """Bind every address's group to vfio-pci; the addresses for VmSpec.pci_devices.

    Raises PassthroughError (IOMMU off, group not viable, vfio-pci missing): the allocation
    cannot run here, and retrying will not change that."""
    s = ctx.settings
    for address in addresses:
        ctx.device_holders[address] = alloc_id
        result = await bind_group(
            s.sysfs_root,
            address,
            state_dir=s.state_dir,
            dev_root=s.dev_root,
            writer=ctx.sysfs_writer,
        )
        log.info(
            "alloc.devices_bound %s %s group=%d newly=%s",
            alloc_id,
            address,
            result.iommu_group,
            result.newly_bound,
        )
    return list(addresses)


async def release_devices(ctx: AgentContext, alloc_id: str, addresses: Iterable[str]) -> None:
    """Give the groups back to their original drivers. Never raises: a device that cannot be
    given back stays recorded in the state file, and the next release retries it.
    A device another allocation here has bound since (a failed allocation's replacement
    on the same GPU, once it is healthy again) is left to that allocation."""
    s = ctx.settings
    for address in addresses:
        holder = ctx.device_holders.get(address, alloc_id)
        if holder != alloc_id:
            log.info("alloc.devices_kept %s %s: held by %s", alloc_id, address, holder)
            continue
        ctx.device_holders.pop(address, None)
        try:
            result = await release_group(
                s.sysfs_root, address, state_dir=s.state_dir, writer=ctx.sysfs_writer
            )
        except MxvmError as exc:
            log.error("alloc.devices_release_failed %s %s: %s", alloc_id, address, exc.detail)
            continue
        if result.restored:
            log.info("alloc.devices_released %s %s -> %s", alloc_id, address, result.restored)


async def release_leftovers(ctx: AgentContext, keep: set[str]) -> list[str]:
    """After an agent restart: release the groups bound for devices no allocation here holds
    any more (it ended while the agent was away). Returns the addresses released."""
    try:
        state = load_state(ctx.settings.state_dir)
    except MxvmError as exc:
        log.error("vfio.state_unreadable %s", exc.detail)
        return []
    leftover = sorted({m.requested_for for m in state.members.values()} - keep)
    await release_devices(ctx, "(leftover)", leftover)
    return leftover
