"""Hand a device's whole IOMMU group to vfio-pci for a VM, and give it back afterwards.

The kernel ABI is file writes under sysfs, per endpoint of the group:
  bind:    driver_override <- "vfio-pci"; driver/unbind <- addr; drivers_probe <- addr
  release: driver/unbind <- addr; driver_override <- "\\n"; drivers_probe <- addr
           (falling back to drivers/<original>/bind <- addr)
and every step is checked by reading the `driver` symlink back. Bridges are left alone.

The original driver of every member is saved (vfio_state) before the first write, so an
agent restarted mid-way resumes the bind, or restores the originals on release.
Both operations are idempotent. `writer` is the one seam: tests pass a fake kernel.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mxvm.devices.pci import PciFunction, read_function, scan_pci
from mxvm.devices.readiness import VFIO_DRIVER, group_endpoints, passthrough_blocker
from mxvm.devices.vfio_state import BoundMember, VfioState, load_state, save_state
from mxvm.errors import MxvmError

log = logging.getLogger(__name__)

SysfsWriter = Callable[[Path, str], None]
POLL_S = 0.02


class PassthroughError(MxvmError):
    """A device cannot be (or could not be) handed to or taken back from vfio-pci."""

    status = 409
    title = "passthrough not possible"

    def __init__(self, detail: str, *, pci_address: str) -> None:
        super().__init__(detail, pci_address=pci_address)
        self.pci_address = pci_address


class BindResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pci_address: str
    iommu_group: int
    members: list[str]
    newly_bound: list[str]
    vfio_device: str

    @property
    def already_bound(self) -> bool:
        return not self.newly_bound


class ReleaseResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pci_address: str
    iommu_group: int | None
    restored: dict[str, str | None]


def write_sysfs(path: Path, data: str) -> None:
    """One write() call, as sysfs attributes expect."""
    with path.open("w") as f:
        f.write(data)


_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _lock(state_dir: Path) -> asyncio.Lock:
    """Binds and releases of one agent are serialised: they share the state file.
    Per event loop, as an asyncio.Lock cannot be shared between loops."""
    per_loop = _locks.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(state_dir.resolve(), asyncio.Lock())


async def bind_group(
    sysfs_root: Path,
    pci_address: str,
    *,
    state_dir: Path,
    dev_root: Path = Path("/dev"),
    writer: SysfsWriter = write_sysfs,
    timeout_s: float = 10.0,
) -> BindResult:
    """Bind every endpoint of `pci_address`'s IOMMU group to vfio-pci."""
    async with _lock(state_dir):
        scan = await asyncio.to_thread(scan_pci, sysfs_root)
        blocker = passthrough_blocker(scan, pci_address)
        if blocker is not None:
            raise PassthroughError(
                f"cannot pass through {pci_address}: {blocker}", pci_address=pci_address
            )
        function = scan.functions[pci_address]
        group = function.iommu_group
        assert group is not None  # passthrough_blocker checked it
        if not (sysfs_root / "bus" / "pci" / "drivers" / VFIO_DRIVER).is_dir():
            raise PassthroughError(
                "vfio-pci driver not loaded (modprobe vfio-pci)", pci_address=pci_address
            )
        members = group_endpoints(scan, function)
        _record_originals(state_dir, members, group, pci_address)
        ops = _SysfsOps(sysfs_root, writer, timeout_s)
        newly = [m.address for m in members if m.driver != VFIO_DRIVER]
        for member in members:
            if member.driver != VFIO_DRIVER:
                await ops.bind_vfio(member)
        vfio_device = dev_root / "vfio" / str(group)
        if not await _poll_until(vfio_device.exists, timeout_s):
            raise PassthroughError(f"{vfio_device} did not appear", pci_address=pci_address)
        log.info("vfio.group_bound %s group=%d newly=%s", pci_address, group, newly)
        return BindResult(
            pci_address=pci_address,
            iommu_group=group,
            members=[m.address for m in members],
            newly_bound=newly,
            vfio_device=str(vfio_device),
        )


async def release_group(
    sysfs_root: Path,
    pci_address: str,
    *,
    state_dir: Path,
    writer: SysfsWriter = write_sysfs,
    timeout_s: float = 10.0,
) -> ReleaseResult:
    """Give every function `bind_group` took for this group back to its original driver.

    Works from the state file, not the current group, so it also finishes a release or
    undoes a bind that an agent restart interrupted. Nothing recorded: a no-op."""
    async with _lock(state_dir):
        state = load_state(state_dir)
        group = await asyncio.to_thread(_recorded_group, state, sysfs_root, pci_address)
        if group is None:
            return ReleaseResult(pci_address=pci_address, iommu_group=None, restored={})
        ops = _SysfsOps(sysfs_root, writer, timeout_s)
        restored: dict[str, str | None] = {}
        failures: list[str] = []
        for address, member in sorted(state.group_members(group).items()):
            try:
                await ops.restore(address, member.original_driver)
            except PassthroughError as exc:
                failures.append(exc.detail)  # keep its state entry: a retry picks it up
                continue
            restored[address] = member.original_driver
            del state.members[address]
            save_state(state_dir, state)
        if failures:
            raise PassthroughError("; ".join(failures), pci_address=pci_address)
        log.info("vfio.group_released %s group=%d", pci_address, group)
        return ReleaseResult(pci_address=pci_address, iommu_group=group, restored=restored)


def _recorded_group(state: VfioState, sysfs_root: Path, pci_address: str) -> int | None:
    """The group to release: from the state entry, or, when an interrupted release already
    dropped that entry, from sysfs, provided other members of the group are still recorded."""
    entry = state.members.get(pci_address)
    if entry is not None:
        return entry.iommu_group
    function = read_function(sysfs_root, pci_address)
    group = function.iommu_group if function is not None else None
    return group if group is not None and state.group_members(group) else None


def _record_originals(
    state_dir: Path, members: list[PciFunction], group: int, requested_for: str
) -> None:
    """Save each member's current driver unless a previous (interrupted) bind already did:
    after a restart the current driver may be vfio-pci or none, the saved one is the truth."""
    state: VfioState = load_state(state_dir)
    new = {
        m.address: BoundMember(
            iommu_group=group, original_driver=m.driver, requested_for=requested_for
        )
        for m in members
        if m.address not in state.members
    }
    if new:
        state.members.update(new)
        save_state(state_dir, state)


class _SysfsOps:
    """The per-function kernel writes, each checked by reading the driver link back."""

    def __init__(self, sysfs_root: Path, writer: SysfsWriter, timeout_s: float) -> None:
        self.pci = sysfs_root / "bus" / "pci"
        self.sysfs_root = sysfs_root
        self.writer = writer
        self.timeout_s = timeout_s

    async def bind_vfio(self, member: PciFunction) -> None:
        address = member.address
        device = self.pci / "devices" / address
        await self._write(address, device / "driver_override", VFIO_DRIVER)
        if member.driver is not None:
            await self._write(address, device / "driver" / "unbind", address)
        await self._write(address, self.pci / "drivers_probe", address)
        driver = await self._await_driver(address, VFIO_DRIVER)
        if driver != VFIO_DRIVER:
            raise PassthroughError(
                f"{address} is bound to {driver or 'no driver'} after probing, not vfio-pci",
                pci_address=address,
            )
        log.info("vfio.bound %s was=%s", address, member.driver)

    async def restore(self, address: str, original: str | None) -> None:
        if original == VFIO_DRIVER:
            return  # held by vfio-pci before we touched it: stays so
        device = self.pci / "devices" / address
        current = self._driver(address)
        if current == VFIO_DRIVER:
            await self._write(address, device / "driver" / "unbind", address)
        elif current not in (None, original):
            raise PassthroughError(
                f"{address} is now held by {current}, not vfio-pci; left alone",
                pci_address=address,
            )
        # Cleared even when the original driver still holds it: a bind interrupted after
        # writing the override must not send the next probe to vfio-pci.
        await self._write(address, device / "driver_override", "\n")
        if original is None or current == original:
            return
        await self._write(address, self.pci / "drivers_probe", address)
        driver = await self._await_driver(address, original)
        original_dir = self.pci / "drivers" / original
        if driver is None and original_dir.is_dir():
            await self._write(address, original_dir / "bind", address)
            driver = await self._await_driver(address, original)
        if driver != original:
            raise PassthroughError(
                f"{address} went to {driver or 'no driver'}, not back to {original}",
                pci_address=address,
            )
        log.info("vfio.restored %s driver=%s", address, original)

    async def _write(self, address: str, path: Path, data: str) -> None:
        log.debug("vfio.write %s %r -> %s", address, data, path)
        try:
            # An unbind blocks while the driver drains its users (nvidia waits for every
            # process holding the GPU); give up waiting rather than hang the agent.
            await asyncio.wait_for(asyncio.to_thread(self.writer, path, data), self.timeout_s)
        except TimeoutError as exc:
            raise PassthroughError(
                f"writing {data.strip()!r} to {path} did not finish in {self.timeout_s:g}s "
                "(is the device in use?)",
                pci_address=address,
            ) from exc
        except OSError as exc:
            raise PassthroughError(
                f"writing {data.strip()!r} to {path} failed: {exc}", pci_address=address
            ) from exc

    def _driver(self, address: str) -> str | None:
        function = read_function(self.sysfs_root, address)
        if function is None:
            raise PassthroughError(f"PCI device {address} disappeared", pci_address=address)
        return function.driver

    async def _await_driver(self, address: str, wanted: str) -> str | None:
        """The driver once it is `wanted`, or whatever it is when the timeout runs out:
        the kernel may finish a probe after the write returns."""
        await _poll_until(lambda: self._driver(address) == wanted, self.timeout_s)
        return self._driver(address)


async def _poll_until(check: Callable[[], bool], timeout_s: float) -> bool:
    """Poll a sysfs/devfs condition: the kernel offers nothing to wait on for these."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await asyncio.to_thread(check):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
