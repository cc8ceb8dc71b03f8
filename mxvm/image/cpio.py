"""A cpio "newc" archive writer for the initramfs (deterministic: uid/gid 0, mtime 0).

Written here rather than piping `find | cpio` so the build needs no shell, no cpio binary,
no root (device nodes such as /dev/console are just archive entries), and so two builds
from the same inputs are byte-identical.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    name: str  # archive path without a leading slash, e.g. "usr/bin/python3"
    mode: int  # including the file type bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""  # file contents, or a symlink's target
    rdev: tuple[int, int] = (0, 0)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_entry(out: BinaryIO, entry: Entry, ino: int) -> None:
    name = entry.name.encode() + b"\0"
    fields = (
        ino, entry.mode, 0, 0, 2 if stat.S_ISDIR(entry.mode) else 1, 0, len(entry.data),
        0, 0, entry.rdev[0], entry.rdev[1], len(name), 0,
    )  # fmt: skip
    header = MAGIC + b"".join(b"%08X" % f for f in fields)
    out.write(header + name + _pad(len(header) + len(name)))
    out.write(entry.data + _pad(len(entry.data)))


def write_archive(out: BinaryIO, entries: Iterable[Entry]) -> None:
    ino = 1
    for ino, entry in enumerate(entries, start=1):
        write_entry(out, entry, ino)
    write_entry(out, Entry(TRAILER, 0), ino + 1)


def tree_entries(root: Path) -> list[Entry]:
    """Every file, directory and symlink under `root`, parents before children, in a
    stable (sorted, walk) order."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in [*dirnames, *sorted(filenames)]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries.append(Entry(rel, stat.S_IFLNK | 0o777, str(path.readlink()).encode()))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(Entry(rel, stat.S_IFDIR | (st.st_mode & 0o7777)))
            elif stat.S_ISREG(st.st_mode):
                entries.append(Entry(rel, stat.S_IFREG | (st.st_mode & 0o7777), path.read_bytes()))
    return entries
