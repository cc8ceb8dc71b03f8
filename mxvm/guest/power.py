"""The ACPI power button as a graceful-stop request (QEMU `system_powerdown`).

With `-M microvm,acpi=on` the kernel's button driver exposes the power button as an evdev
device; a daemon thread blocks on it and calls `on_press` for each KEY_POWER press.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

SYS_INPUT = Path("/sys/class/input")
EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit: timeval, type, code, value
EV_KEY = 1
KEY_POWER = 116


def find_power_buttons(sys_input: Path = SYS_INPUT) -> list[Path]:
    found = []
    for entry in sorted(sys_input.glob("event*")):
        with contextlib.suppress(OSError):
            if "power button" in (entry / "device" / "name").read_text().lower():
                found.append(Path("/dev/input") / entry.name)
    return found


def is_power_press(record: bytes) -> bool:
    _, _, ev_type, code, value = EVENT.unpack(record)
    return bool(ev_type == EV_KEY and code == KEY_POWER and value == 1)


def watch(devices: list[Path], on_press: Callable[[], None]) -> list[threading.Thread]:
    threads = []
    for dev in devices:
        thread = threading.Thread(
            target=_watch_one, args=(dev, on_press), name=f"power:{dev.name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads


def _watch_one(dev: Path, on_press: Callable[[], None]) -> None:
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    while True:
        data = os.read(fd, EVENT.size * 16)
        if not data:
            return
        for off in range(0, len(data) - EVENT.size + 1, EVENT.size):
            if is_power_press(data[off : off + EVENT.size]):
                on_press()
