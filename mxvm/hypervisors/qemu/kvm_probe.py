"""Is KVM usable for real guests here? Probed once per process, then cached.

/dev/kvm existing is not enough: nested or paravirtual KVM flavours (a Firecracker host,
for one) accept KVM_CREATE_VM and even run real-mode code, yet a Linux guest stalls during
its early boot. So after the ioctl check the probe boots the guest kernel itself under
KVM with no root device: a working KVM reaches the "cannot mount root" panic within a
second or two and, with panic=-1 and -no-reboot, QEMU exits. Anything else means TCG.
With earlyprintk the kernel's first line comes within milliseconds of the guest starting; a
stalled KVM prints nothing at all, so silence for FIRST_OUTPUT_S settles it without waiting
out the whole timeout (10 s of every agent start on such a host).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

KVM_DEVICE = Path("/dev/kvm")
_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_API_VERSION = 12
PANIC_MARKER = b"Kernel panic"
FIRST_OUTPUT_S = 5.0


class KvmProbe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    usable: bool
    reason: str


_cache: dict[tuple[str, str], KvmProbe] = {}


def probe_ioctl(device: Path = KVM_DEVICE) -> KvmProbe:
    """The kernel side: /dev/kvm opens read-write and creates a VM."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return KvmProbe(usable=False, reason=f"cannot open {device}: {exc.strerror}")
    try:
        version = fcntl.ioctl(fd, _KVM_GET_API_VERSION)
        if version != _KVM_API_VERSION:
            return KvmProbe(usable=False, reason=f"KVM API version {version}, want 12")
        vm_fd = fcntl.ioctl(fd, _KVM_CREATE_VM, 0)
        os.close(vm_fd)
    except OSError as exc:
        return KvmProbe(usable=False, reason=f"KVM ioctl failed: {exc.strerror}")
    finally:
        os.close(fd)
    return KvmProbe(usable=True, reason="KVM_CREATE_VM works")


def probe_argv(qemu_binary: str, kernel: Path) -> list[str]:
    return [
        qemu_binary, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-kernel", str(kernel),
        "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 loglevel=4",
    ]  # fmt: skip


async def probe_boot(
    qemu_binary: str,
    kernel: Path,
    *,
    timeout_s: float = 10.0,
    first_output_s: float = FIRST_OUTPUT_S,
) -> KvmProbe:
    """The guest side: `kernel` boots under KVM far enough to panic for want of a root."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *probe_argv(qemu_binary, kernel),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return KvmProbe(usable=False, reason=f"cannot run {qemu_binary}: {exc.strerror}")
    assert proc.stdout is not None
    output = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        async with asyncio.timeout_at(min(deadline, loop.time() + first_output_s)):
            output = await proc.stdout.read(4096)  # b"" at once when QEMU exits silently
        async with asyncio.timeout_at(deadline):
            output += await proc.stdout.read()
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if not output:
            why = f"no console output under KVM within {min(first_output_s, timeout_s)}s"
            return KvmProbe(usable=False, reason=f"guest kernel stalled: {why}")
        return KvmProbe(usable=False, reason=f"guest kernel stalled under KVM ({timeout_s}s)")
    if PANIC_MARKER in output:
        return KvmProbe(usable=True, reason="guest kernel boots under KVM")
    tail = output.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return KvmProbe(usable=False, reason=f"KVM boot probe failed: {tail[0][:200]}")


async def probe_kvm(qemu_binary: str, kernel: Path | None, *, timeout_s: float = 10.0) -> KvmProbe:
    """Cached per process and (binary, kernel): the answer does not change while we run."""
    key = (qemu_binary, str(kernel))
    if key not in _cache:
        result = probe_ioctl()
        if result.usable and kernel is not None:
            result = await probe_boot(qemu_binary, kernel, timeout_s=timeout_s)
        log.info("qemu.kvm_probe usable=%s reason=%s", result.usable, result.reason)
        _cache[key] = result
    return _cache[key]


def clear_cache() -> None:
    _cache.clear()
