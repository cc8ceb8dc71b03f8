"""The bounded allocation log: segments by whole-output offset, the newest two kept, read
by offset across segments, and served by the agent's API with a note for what was dropped."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from mxvm.agent import alloclog
from mxvm.agent.alloclog import LogWriter
from mxvm.agent.runner import AllocRunner
from mxvm.agent.server import create_agent_app


def read_all(run_dir: Path, offset: int, limit: int = 7) -> tuple[int, bytes]:
    """Everything from `offset` in small reads, as a follower would: (start, bytes)."""
    start, out = None, b""
    while True:
        at, data = alloclog.read(run_dir, offset, limit)
        start = at if start is None else start
        assert at == offset or not out, "a skip in the middle of kept output"
        if not data:
            return start, out
        out += data
        offset = at + len(data)


def test_the_log_keeps_the_most_recent_output_within_its_bound(tmp_path: Path) -> None:
    output = b"".join(b"line %03d\n" % i for i in range(100))  # 900 bytes
    with LogWriter(tmp_path, max_bytes=200) as log:
        for i in range(0, len(output), 30):
            log.write(output[i : i + 30])
    kept = alloclog.segments(tmp_path)
    assert len(kept) == 2 and [p.name for _, p in kept] == [f"alloc.log.{s}" for s, _ in kept]
    held = sum(p.stat().st_size for _, p in kept)
    assert 100 <= held <= 200 + 30
    start, data = read_all(tmp_path, 0)
    assert start == len(output) - held and data == output[start:]
    # From inside the kept output: exactly the rest.
    assert read_all(tmp_path, len(output) - 5) == (len(output) - 5, output[-5:])


def test_a_follower_reads_on_across_new_segments_and_an_adopter_appends(tmp_path: Path) -> None:
    written, got, offset = b"", b"", 0
    log = LogWriter(tmp_path, max_bytes=64)
    for i in range(20):
        chunk = b"%02d-abcdefgh\n" % i
        log.write(chunk)
        written += chunk
        at, data = alloclog.read(tmp_path, offset, 1000)
        assert at == offset  # kept up: nothing dropped under the follower
        got, offset = got + data, offset + len(data)
    log.close()
    assert got == written
    # A restarted agent re-adopting the allocation goes on in the newest segment.
    again = LogWriter(tmp_path, max_bytes=64)
    assert again.start + again.size == len(written)
    again.write(b"more\n")
    again.close()
    assert alloclog.read(tmp_path, len(written), 100) == (len(written), b"more\n")


def test_a_log_from_before_the_bound_reads_as_before(tmp_path: Path) -> None:
    (tmp_path / "alloc.log").write_bytes(b"hello\n")
    (tmp_path / "alloc.log.tmp").write_bytes(b"not a segment")
    assert alloclog.read(tmp_path, 0, 100) == (0, b"hello\n")
    assert alloclog.read(tmp_path / "none", 0, 100) == (0, b"")


class _View:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir

    def runner(self, alloc_id: str) -> AllocRunner | None:
        return None

    def run_dir(self, alloc_id: str) -> Path:
        return self.dir


async def test_the_agent_api_notes_what_was_dropped(tmp_path: Path) -> None:
    with LogWriter(tmp_path, max_bytes=20) as log:
        for i in range(10):
            log.write(b"%d23456789\n" % i)  # 100 bytes, 10 at a time
    start = alloclog.segments(tmp_path)[0][0]
    async with TestServer(create_agent_app(_View(tmp_path), "s3cret")) as server:
        headers = {"Authorization": "Bearer s3cret"}
        async with aiohttp.ClientSession(headers=headers) as s:
            async with s.get(server.make_url("/v1/allocations/x/logs")) as resp:
                body = await resp.read()
            async with s.get(server.make_url(f"/v1/allocations/x/logs?offset={start}")) as r2:
                rest = await r2.read()
    note = f"[mxvm: {start} bytes of older output dropped]\n".encode()
    assert body == note + rest and rest == b"".join(b"%d23456789\n" % i for i in range(10))[start:]


def test_a_console_log_is_trimmed_to_its_tail_and_the_vmm_writes_on(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    # A writer like QEMU with append=on, and one with its own offset (a hole follows).
    appender = console.open("ab", buffering=0)
    appender.write(b"boot line\n" * 10_000)  # 100 KB
    assert not alloclog.trim_console(console, 200_000)  # within the bound: untouched
    assert alloclog.trim_console(console, 64 * 1024)
    kept = (tmp_path / "console.log.1").read_bytes()
    assert len(kept) == 32 * 1024 and kept.endswith(b"boot line\n")
    assert console.stat().st_size == 0
    appender.write(b"after the trim\n")
    assert console.read_bytes() == b"after the trim\n"
    appender.close()

    other = tmp_path / "other.log"
    with other.open("wb", buffering=0) as writer:  # no O_APPEND: keeps its offset
        writer.write(b"x" * 200_000)
        assert alloclog.trim_console(other, 64 * 1024)
        writer.write(b"panic\n")  # lands at 200,000, past a hole
    assert other.stat().st_size == 200_006 and other.stat().st_blocks * 512 < 64 * 1024
    assert not alloclog.trim_console(other, 64 * 1024)  # the hole takes no disk
    assert alloclog.trim_consoles([other, tmp_path / "gone.log"], 100) == [other]
    assert (tmp_path / "other.log.1").read_bytes() == b"panic\n"
