"""An allocation's output log on the node, bounded in size.

An AI agent that prints for days must not fill the node's disk, so the log is kept in
segments: `alloc.log` (the name agents before the bound wrote, holding the output from its
start) and then `alloc.log.<offset>`, each named by the offset of its first byte in the whole
output. A segment ends at half the bound and the newest two are kept, so the node holds
between half the bound and the bound of the most recent output. Readers address the output by
that whole-output offset, so following across a new segment neither repeats nor skips; a
reader whose offset was dropped resumes at the oldest byte kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

LOG = "alloc.log"
KEEP_SEGMENTS = 2


def segments(run_dir: Path) -> list[tuple[int, Path]]:
    """The log's segments, oldest first, each with the offset its first byte has."""
    out: list[tuple[int, Path]] = []
    for path in run_dir.glob(f"{LOG}*"):
        suffix = path.name[len(LOG) + 1 :]
        if path.name == LOG:
            out.append((0, path))
        elif path.name[len(LOG)] == "." and suffix.isdigit():
            out.append((int(suffix), path))
    return sorted(out)


def exists(run_dir: Path) -> bool:
    return bool(segments(run_dir))


class LogWriter:
    """Appends to the newest segment (an adopted allocation's log goes on where it was)."""

    def __init__(self, run_dir: Path, max_bytes: int) -> None:
        self.run_dir = run_dir
        self.segment_bytes = max(1, max_bytes // KEEP_SEGMENTS)
        existing = segments(run_dir)
        self.start, path = existing[-1] if existing else (0, run_dir / LOG)
        self._file: BinaryIO = path.open("ab", buffering=0)
        self.size = self._file.tell()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)
        if self.size >= self.segment_bytes:
            self._next_segment()

    def _next_segment(self) -> None:
        self._file.close()
        self.start += self.size
        self.size = 0
        self._file = (self.run_dir / f"{LOG}.{self.start}").open("ab", buffering=0)
        for _, old in segments(self.run_dir)[:-KEEP_SEGMENTS]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read(run_dir: Path, offset: int, limit: int) -> tuple[int, bytes]:
    """Up to `limit` bytes of the output from `offset` on: (where they start, the bytes). They
    start past `offset` when the output there was dropped."""
    for _ in range(3):  # a segment may go while we look: look again
        kept = segments(run_dir)
        if not kept:
            return offset, b""
        offset = max(offset, kept[0][0])
        start, path = next((s, p) for s, p in reversed(kept) if s <= offset)
        try:
            with path.open("rb") as f:
                f.seek(offset - start)
                return offset, f.read(limit)
        except FileNotFoundError:
            continue
    return offset, b""


def trim_console(path: Path, max_bytes: int) -> bool:
    """Bound a VM's console log, which the VMM itself writes: once it takes more than
    `max_bytes` of disk, its last half of that goes to `<name>.1` and the log is emptied. The
    VMM's writes go on at the new end (QEMU appends) or past a hole that takes no disk (a
    writer with its own offset), so the size on disk is what is checked. Whether it trimmed."""
    try:
        if path.stat().st_blocks * 512 <= max_bytes:
            return False
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes // 2))
            tail = f.read()
    except FileNotFoundError:
        return False
    kept = path.with_name(path.name + ".1")
    kept.write_bytes(tail.lstrip(b"\0"))  # a hole reads as zeros
    os.truncate(path, 0)  # what the VMM wrote since the read is lost: a console line or two
    return True


def trim_consoles(paths: list[Path], max_bytes: int) -> list[Path]:
    """`trim_console` each; those it trimmed."""
    return [p for p in paths if trim_console(p, max_bytes)]
