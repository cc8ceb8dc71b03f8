"""The initramfs tree apart from Python: layout, busybox, /init, the guest agent package."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

from mxvm.image.cpio import Entry
from mxvm.image.elf import read_elf
from mxvm.image.errors import ImageBuildError

GUEST_PKG_DIR = "usr/lib/mxvm"
# What the agent imports (stdlib only); the host-side client and errors stay out.
GUEST_FILES = (
    "__init__.py", "__main__.py", "agent.py", "netconf.py", "port.py", "power.py",
    "protocol.py",
)  # fmt: skip

INIT = """#!/bin/sh
# mxvm dev guest /init (PID 1): mount, load modules, run the guest agent, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
hostname mxvm
read -r up _ < /proc/uptime; echo "mxvm-init: uptime $up: loading modules"
while read -r ko; do insmod "$ko" || echo "mxvm-init: insmod $ko failed"; done < /etc/mxvm/modules
# A console on virtio (console=hvc0, as cloud-hypervisor's driver sets) exists only now.
case " $(cat /proc/cmdline) " in
  *" console=hvc0 "*) [ -c /dev/hvc0 ] && exec </dev/null >/dev/hvc0 2>&1 ;;
esac
read -r up _ < /proc/uptime; echo "mxvm-init: uptime $up: starting the guest agent"
# A fixed hash seed: no getrandom() before the CRNG is ready on an entropy-poor TCG guest.
PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/usr/lib/mxvm \\
  /usr/bin/python3 -s -m mxvm.guest
echo "mxvm-init: guest agent exited with status $?; powering off"
sync
poweroff -f
sleep 2
reboot -f
"""

ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/resolv.conf": "",
    "etc/os-release": 'NAME="mxvm dev guest"\nID=mxvm\n',
}


def busybox_path() -> Path:
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file():
            if read_elf(candidate).interpreter is not None:
                raise ImageBuildError(f"{candidate} is not static: install busybox-static")
            return candidate
    raise ImageBuildError("busybox is missing: install busybox-static")


def install_busybox(busybox: Path, root: Path) -> int:
    """busybox plus one symlink per applet; returns the applet count."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    listing = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in listing:
        link = root / applet
        if link.name == "busybox" or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    return len(listing)


def install_layout(root: Path, module_paths: list[str]) -> None:
    for d in ("proc", "sys", "tmp", "run", "root", "etc/mxvm", "usr/sbin", "sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for rel, text in ETC_FILES.items():
        (root / rel).write_text(text)
    (root / "etc/mxvm/modules").write_text("".join(p + "\n" for p in module_paths))
    init = root / "init"
    init.write_text(INIT)
    init.chmod(0o755)


def install_guest_agent(src_pkg: Path, root: Path) -> None:
    dest = root / GUEST_PKG_DIR / "mxvm"
    (dest / "guest").mkdir(parents=True, exist_ok=True)
    (dest / "__init__.py").write_text('"""mxvm guest side (only the guest agent is shipped)."""\n')
    for name in GUEST_FILES:
        shutil.copyfile(src_pkg / name, dest / "guest" / name)


def device_entries() -> list[Entry]:
    """Nodes the kernel needs before /init mounts devtmpfs (stdin/stdout of PID 1)."""
    return [
        Entry("dev", stat.S_IFDIR | 0o755),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)),
    ]
