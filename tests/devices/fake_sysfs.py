"""A fake /sys (and /dev) tree plus a tiny kernel simulator for the VFIO sysfs ABI.

The tree has the shape the kernel gives: bus/pci/devices/<addr>/{vendor,device,class,
numa_node,driver_override,driver ->,iommu_group ->}, bus/pci/drivers/<name>/{bind,unbind},
bus/pci/drivers_probe, kernel/iommu_groups/<g>/devices/<addr> ->.

`FakeKernel.write` is passed to mxvm.devices.vfio as its `writer`: it really writes the
file (so tests check the files written) and logs it, then reacts the way the kernel would:
unbind drops the `driver` link, drivers_probe binds to driver_override (or the device's
default driver), a vfio-pci bind creates /dev/vfio/<group>.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

VFIO = "vfio-pci"
SAME = "<same as driver>"


class SimulatedCrash(RuntimeError):
    """The agent 'dies' at this write: nothing after it happens."""


@dataclass(frozen=True)
class FakePci:
    address: str
    vendor: str = "0x10de"
    device: str = "0x2330"
    klass: str = "0x030200"
    driver: str | None = "nvidia"
    group: int | None = None
    numa: int = 0
    # What drivers_probe picks with no override; SAME: the driver it starts with.
    default_driver: str | None = SAME

    @property
    def probe_driver(self) -> str | None:
        return self.driver if self.default_driver == SAME else self.default_driver


def gpu(address: str, group: int | None, *, driver: str | None = "nvidia") -> FakePci:
    return FakePci(address, group=group, driver=driver)


def gpu_audio(address: str, group: int | None) -> FakePci:
    return FakePci(address, device="0x22a3", klass="0x040300", driver="snd_hda_intel", group=group)


def bridge(address: str, group: int | None) -> FakePci:
    return FakePci(
        address, vendor="0x8086", device="0x1901", klass="0x060400", driver="pcieport", group=group
    )


@dataclass
class FakeKernel:
    base: Path
    functions: list[FakePci]
    iommu: bool = True
    vfio_loaded: bool = True
    create_vfio_dev: bool = True
    stuck: set[str] = field(default_factory=set)  # probe does nothing for these addresses
    slow_unbind: dict[str, float] = field(default_factory=dict)  # address -> seconds it blocks
    crash_at: int | None = None  # raise SimulatedCrash instead of performing write #n (0-based)
    writes: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = self.base / "sys"
        self.dev_root = self.base / "dev"
        self.pci = self.root / "bus" / "pci"
        self._by_address = {f.address: f for f in self.functions}
        self._build()

    # ---- building -------------------------------------------------------------------

    def _build(self) -> None:
        (self.dev_root / "vfio").mkdir(parents=True)
        (self.root / "kernel" / "iommu_groups").mkdir(parents=True)
        (self.root / "class" / "iommu").mkdir(parents=True)
        (self.pci / "devices").mkdir(parents=True)
        (self.pci / "drivers_probe").write_text("")
        names = {f.driver for f in self.functions} | {f.probe_driver for f in self.functions}
        names |= {VFIO} if self.vfio_loaded else set()
        for name in names - {None}:
            assert name is not None
            (self.pci / "drivers" / name).mkdir(parents=True)
            (self.pci / "drivers" / name / "bind").write_text("")
            (self.pci / "drivers" / name / "unbind").write_text("")
        if self.iommu:
            (self.root / "class" / "iommu" / "dmar0").mkdir()
        for function in self.functions:
            self._build_function(function)

    def _build_function(self, f: FakePci) -> None:
        path = self.pci / "devices" / f.address
        path.mkdir()
        (path / "vendor").write_text(f"{f.vendor}\n")
        (path / "device").write_text(f"{f.device}\n")
        (path / "class").write_text(f"{f.klass}\n")
        (path / "numa_node").write_text(f"{f.numa}\n")
        (path / "driver_override").write_text("(null)\n")
        if f.driver is not None:
            self._link_driver(f.address, f.driver)
        if self.iommu and f.group is not None:
            group_dir = self.root / "kernel" / "iommu_groups" / str(f.group)
            (group_dir / "devices").mkdir(parents=True, exist_ok=True)
            (group_dir / "devices" / f.address).symlink_to(path)
            (path / "iommu_group").symlink_to(group_dir)

    # ---- reading --------------------------------------------------------------------

    def device_dir(self, address: str) -> Path:
        return self.pci / "devices" / address

    def driver(self, address: str) -> str | None:
        link = self.device_dir(address) / "driver"
        return link.readlink().name if link.is_symlink() else None

    def override(self, address: str) -> str:
        return (self.device_dir(address) / "driver_override").read_text().strip()

    def driver_file(self, driver: str, name: str) -> str:
        return (self.pci / "drivers" / driver / name).read_text()

    def vfio_dev(self, group: int) -> Path:
        return self.dev_root / "vfio" / str(group)

    def writes_for(self, address: str) -> list[tuple[str, str]]:
        """The writes that concern one address, as (path relative to sys, data)."""
        prefix = f"bus/pci/devices/{address}/"
        return [(p, d) for p, d in self.writes if p.startswith(prefix) or d == address]

    # ---- the kernel ---------------------------------------------------------------

    def write(self, path: Path, data: str) -> None:
        """The SysfsWriter mxvm.devices.vfio is given."""
        if self.crash_at is not None and len(self.writes) == self.crash_at:
            raise SimulatedCrash(f"agent died before writing {data!r} to {path}")
        target = path.resolve()
        if target.name == "unbind" and data in self.slow_unbind:
            time.sleep(self.slow_unbind[data])  # a driver draining its users
        self.writes.append((str(path.relative_to(self.root)), data))
        with target.open("w") as f:
            f.write(data)
        self._react(target, data.strip())

    def _react(self, target: Path, value: str) -> None:
        if target.name == "driver_override":
            target.write_text(f"{value or '(null)'}\n")
        elif target.name == "unbind":
            self._unbind(value, target.parent.name)
        elif target.name == "bind":
            self._bind(value, target.parent.name)
        elif target.name == "drivers_probe":
            self._probe(value)

    def _unbind(self, address: str, driver: str) -> None:
        if self.driver(address) != driver:
            raise OSError(errno.ENODEV, f"{address} is not bound to {driver}")
        (self.device_dir(address) / "driver").unlink()
        group = self._by_address[address].group
        if driver == VFIO and group is not None and not self._vfio_members(group):
            self.vfio_dev(group).unlink(missing_ok=True)

    def _bind(self, address: str, driver: str) -> None:
        if self.driver(address) is not None:
            raise OSError(errno.EBUSY, f"{address} already has a driver")
        override = self.override(address)
        if override not in ("(null)", driver):
            raise OSError(errno.ENODEV, f"{address} driver_override is {override}")
        self._link_driver(address, driver)

    def _probe(self, address: str) -> None:
        if self.driver(address) is not None or address in self.stuck:
            return
        override = self.override(address)
        wanted = override if override != "(null)" else self._by_address[address].probe_driver
        if wanted is not None and (self.pci / "drivers" / wanted).is_dir():
            self._link_driver(address, wanted)

    def _link_driver(self, address: str, driver: str) -> None:
        (self.device_dir(address) / "driver").symlink_to(self.pci / "drivers" / driver)
        group = self._by_address[address].group
        if driver == VFIO and group is not None and self.create_vfio_dev:
            self.vfio_dev(group).touch()

    def _vfio_members(self, group: int) -> list[str]:
        return [
            f.address for f in self.functions if f.group == group and self.driver(f.address) == VFIO
        ]


MakeKernel = Callable[..., FakeKernel]
"""The `make_kernel` fixture: make_kernel([FakePci, ...], iommu=True, ...) -> FakeKernel."""
