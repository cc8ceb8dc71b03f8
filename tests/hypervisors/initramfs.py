"""A throwaway busybox initramfs for driver tests: init runs a given shell script.

Written directly as a newc cpio (so it can hold /dev/console without mknod), gzip'd.
"""

from __future__ import annotations

import gzip
import shutil
import stat
from pathlib import Path

BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))


def find_busybox() -> Path | None:
    for path in BUSYBOX_CANDIDATES:
        if path.is_file():
            return path
    found = shutil.which("busybox")
    return Path(found) if found else None


def _entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [
        0, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0,
    ]  # fmt: skip
    header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def init_script(body: str) -> str:
    """PID 1: mount the basics, say so on the console, then run `body`."""
    return (
        "#!/bin/busybox sh\n"
        "/bin/busybox --install -s /bin\n"
        "/bin/busybox mount -t proc proc /proc\n"
        "/bin/busybox mount -t devtmpfs dev /dev\n"
        "echo mxvm-test-guest: userspace up\n"
        f"{body}\n"
    )


def build_initramfs(dest: Path, busybox: Path, body: str) -> Path:
    """Write a gzip'd cpio whose /init runs `body` with busybox applets on PATH."""
    entries = [
        _entry("dev", stat.S_IFDIR | 0o755),
        _entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        _entry("proc", stat.S_IFDIR | 0o755),
        _entry("bin", stat.S_IFDIR | 0o755),
        _entry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        _entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        _entry("init", stat.S_IFREG | 0o755, init_script(body).encode()),
        _entry("TRAILER!!!", 0),
    ]
    dest.write_bytes(gzip.compress(b"".join(entries), compresslevel=1))
    return dest
