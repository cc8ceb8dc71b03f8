"""The KVM probe: the ioctl check, the boot check, the per-process cache."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mxvm.hypervisors import VmSpec, VmState
from mxvm.hypervisors.qemu import QemuDriver, kvm_probe
from mxvm.hypervisors.qemu.kvm_probe import KvmProbe, probe_boot, probe_ioctl, probe_kvm
from mxvm.image.cmdline import host_tsc_khz

from .initramfs import build_initramfs


def test_ioctl_probe_names_the_missing_device(tmp_path: Path) -> None:
    result = probe_ioctl(tmp_path / "kvm")
    assert not result.usable
    assert str(tmp_path / "kvm") in result.reason


async def test_probe_is_cached_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    async def fake_boot(binary: str, kernel: Path, *, timeout_s: float) -> KvmProbe:
        calls.append(kernel)
        return KvmProbe(usable=True, reason="fake")

    monkeypatch.setattr(kvm_probe, "_cache", {})
    monkeypatch.setattr(kvm_probe, "probe_ioctl", lambda: KvmProbe(usable=True, reason="ok"))
    monkeypatch.setattr(kvm_probe, "probe_boot", fake_boot)
    first = await probe_kvm("qemu", Path("/k"))
    second = await probe_kvm("qemu", Path("/k"))
    assert first is second
    assert calls == [Path("/k")]


async def test_configured_accel_skips_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    async def must_not_probe(*args: object, **kwargs: object) -> KvmProbe:
        raise AssertionError("probed although accel was configured")

    monkeypatch.setattr("mxvm.hypervisors.qemu.driver.probe_kvm", must_not_probe)
    assert await QemuDriver(accel="tcg").select_accel(Path("/k")) == "tcg"
    assert await QemuDriver(accel="kvm").select_accel(Path("/k")) == "kvm"
    assert QemuDriver(accel="kvm").capabilities().kvm is True


@pytest.mark.vm
async def test_boot_probe_rejects_a_kernel_that_cannot_boot(
    qemu_binary: str, short_dir: Path
) -> None:
    junk = short_dir / "vmlinuz"
    junk.write_bytes(os.urandom(1 << 16))
    result = await probe_boot(qemu_binary, junk, timeout_s=3)
    assert not result.usable
    assert result.reason


@pytest.mark.vm
async def test_boot_probe_verdict_holds_for_a_real_guest(
    qemu_binary: str, guest_kernel: Path, busybox: Path, short_dir: Path
) -> None:
    """Where the probe says KVM works, a KVM guest reaches userspace; else it explains."""
    result = await probe_kvm(qemu_binary, guest_kernel, timeout_s=8)  # cached per process
    if not result.usable:
        assert "KVM" in result.reason
        return
    initrd = build_initramfs(short_dir / "i.gz", busybox, "while true; do sleep 1; done")
    spec = VmSpec(
        alloc_id="kvm1",
        name="kvm",
        vcpus=1,
        memory_mb=128,
        kernel=guest_kernel,
        initrd=initrd,
        run_dir=short_dir / "run",
    )
    driver = QemuDriver(accel="kvm")
    handle = await driver.start(spec)
    try:
        async with asyncio.timeout(30):
            while "userspace up" not in spec.console_log.read_text(errors="replace"):
                await asyncio.sleep(0.1)
        assert (await driver.inspect(handle)).state is VmState.RUNNING
    finally:
        await driver.destroy(handle)


def _fake_qemu(path: Path, script: str) -> str:
    """A stand-in for QEMU at the process seam: prints what a guest console would."""
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


async def test_boot_probe_reads_the_console_it_gets(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"")
    boots = _fake_qemu(
        tmp_path / "boots", "echo 'Linux version 6.1'; sleep 0.3; echo 'Kernel panic - not syncing'"
    )
    assert (await probe_boot(boots, kernel, timeout_s=5, first_output_s=2)).usable
    # Silence from the start: a stalled KVM, said so before the whole timeout.
    silent = _fake_qemu(tmp_path / "silent", "exec sleep 30")
    result = await probe_boot(silent, kernel, timeout_s=30, first_output_s=0.5)
    assert not result.usable and "no console output under KVM within 0.5s" in result.reason
    # Output, then a stall before the panic: the whole timeout, then TCG.
    stalls = _fake_qemu(tmp_path / "stalls", "echo 'Linux version 6.1'; exec sleep 30")
    result = await probe_boot(stalls, kernel, timeout_s=1, first_output_s=0.5)
    assert not result.usable and result.reason == "guest kernel stalled under KVM (1s)"
    # QEMU refusing to start says why.
    fails = _fake_qemu(tmp_path / "fails", "echo 'qemu: could not access KVM kernel module'")
    result = await probe_boot(fails, kernel, timeout_s=5)
    assert not result.usable and "could not access KVM" in result.reason


@pytest.mark.vm
async def test_boot_probe_says_usable_where_the_accelerator_works(
    qemu_binary: str, guest_kernel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's own command line (earlyprintk, no root, panic=-1) on the real kernel,
    under TCG standing in for a KVM that works (this host's KVM stalls guests): the console
    speaks at once, the kernel panics for want of a root, QEMU exits, and the verdict is
    usable."""
    real_argv = kvm_probe.probe_argv

    def under_tcg(binary: str, kernel: Path) -> list[str]:
        argv = real_argv(binary, kernel)
        argv[argv.index("kvm")] = "tcg"
        cpu = argv.index("-cpu")
        del argv[cpu : cpu + 2]
        argv[-1] += f" tsc_early_khz={host_tsc_khz()}"  # TCG boots hang without it
        return argv

    monkeypatch.setattr(kvm_probe, "probe_argv", under_tcg)
    # The console speaks within 1.5 s, though the panic may take longer.
    result = await probe_boot(qemu_binary, guest_kernel, timeout_s=60, first_output_s=1.5)
    assert result.usable, result.reason
