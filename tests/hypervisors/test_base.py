"""VmSpec validation (kernel limits), errors and the driver registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mxvm.errors import MxvmError, NotFound
from mxvm.hypervisors import (
    Driver,
    DriverError,
    ImageError,
    VmSpec,
    get_driver,
    known_drivers,
    register,
    registry,
)
from mxvm.hypervisors.fake import FakeDriver
from mxvm.hypervisors.qemu import QemuDriver


def make(**overrides: Any) -> VmSpec:
    fields: dict[str, Any] = {
        "alloc_id": "a1",
        "name": "n",
        "vcpus": 1,
        "memory_mb": 128,
        "kernel": Path("/k"),
        "run_dir": Path("/run/a1"),
    }
    fields.update(overrides)
    return VmSpec(**fields)


def test_derived_paths_live_in_run_dir() -> None:
    s = make()
    assert s.qmp_socket == Path("/run/a1/qmp.sock")
    assert s.guest_socket == Path("/run/a1/guest.sock")
    assert s.console_log == Path("/run/a1/console.log")


def test_socket_path_limit_is_107_bytes() -> None:
    # "/" + d + "/guest.sock" (11 bytes): d of 95 bytes makes exactly 107.
    make(run_dir=Path("/" + "d" * 95))
    with pytest.raises(ValidationError, match="exceeds 107 bytes"):
        make(run_dir=Path("/" + "d" * 96))


@pytest.mark.parametrize("tap", ["", "a" * 16, "a/b", "a b"])
def test_bad_tap_names(tap: str) -> None:
    with pytest.raises(ValidationError, match="tap"):
        make(tap=tap)


def test_tap_of_15_bytes_is_fine() -> None:
    assert make(tap="t" * 15).tap == "t" * 15


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kernel", Path("relative/vmlinuz")),
        ("run_dir", Path("run")),
        ("mac", "52:54:00:12:34"),
        ("pci_devices", ["3b:00.0"]),
        ("kernel_args", ["two words"]),
        ("memory_mb", 64),
        ("vcpus", 0),
        ("alloc_id", "../etc"),
    ],
)
def test_invalid_fields_are_named(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        make(**{field: value})
    assert field in str(info.value)


def test_errors_are_mxvm_errors_that_name_the_file() -> None:
    err = ImageError(Path("/img/vmlinuz"), "is empty")
    assert isinstance(err, DriverError)
    assert isinstance(err, MxvmError)
    assert "/img/vmlinuz" in str(err)
    assert err.extra == {"path": "/img/vmlinuz"}


def test_registry_builds_known_drivers() -> None:
    assert {"qemu", "fake"} <= set(known_drivers())
    fake = get_driver("fake", exit_code=3)
    assert isinstance(fake, FakeDriver)
    assert fake.exit_code == 3
    qemu = get_driver("qemu", accel="tcg")
    assert isinstance(qemu, QemuDriver)
    assert isinstance(qemu, Driver)
    assert qemu.capabilities().kvm is False


def test_registry_is_open_and_rejects_unknown_names() -> None:
    with pytest.raises(NotFound, match="no-such-vmm"):
        get_driver("no-such-vmm")
    register("test-only", FakeDriver)
    try:
        assert get_driver("test-only").name == "fake"
        assert "test-only" in known_drivers()
    finally:
        registry._registered.pop("test-only")
