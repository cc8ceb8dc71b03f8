"""Bare-QEMU boot of the dev guest image: process start -> guest agent `ready`.

    .venv/bin/python -m bench.guest_boot [--runs 5] [--memory-mb 256] [--vcpus 1]

No orchestrator in the loop: QEMU microvm under TCG with the image's own minimal command
line (mxvm.image.qemu.minimal_argv), the host client on the virtio-serial socket. Per run:
wall time from spawning QEMU to Ready, the guest's own uptime at Ready (kernel start ->
agent ready), a first exec, ping round trips, and shutdown -> QEMU exit. Last line:
`guest_ready_s: X` (median wall time from spawning QEMU to Ready).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mxvm.guest.client import GuestClient
from mxvm.image import ImagePaths, build_dev_image, default_image_dir, guest_cmdline
from mxvm.image.qemu import minimal_argv


async def one_boot(image: ImagePaths, memory_mb: int, vcpus: int) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="mxvm-bench-"))
    sock = workdir / "guest.sock"
    argv = minimal_argv(
        image, sock, cmdline=guest_cmdline(), console_log=workdir / "console.log",
        memory_mb=memory_mb, vcpus=vcpus,
    )  # fmt: skip
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
    try:
        client = await GuestClient.connect(sock, timeout=30)
        info = await client.wait_ready(timeout=300)
        ready = time.perf_counter() - started
        t = time.perf_counter()
        result = await client.exec(["true"], timeout=60)
        exec_s = time.perf_counter() - t
        assert result.exit_code == 0, result
        rtts = []
        for _ in range(10):
            t = time.perf_counter()
            await client.ping(timeout=30)
            rtts.append(time.perf_counter() - t)
        t = time.perf_counter()
        await client.shutdown(grace_s=1.0)
        await asyncio.wait_for(proc.wait(), 120)
        stop_s = time.perf_counter() - t
        await client.close()
        phases = guest_phases((workdir / "console.log").read_text(errors="replace"))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "ready_s": ready,
        "guest_uptime_at_ready_s": info.boot_s,
        **phases,
        "first_exec_s": exec_s,
        "ping_rtt_ms": statistics.median(rtts) * 1000,
        "shutdown_s": stop_s,
    }


def guest_phases(console: str) -> dict[str, float]:
    """Guest-side phases from the uptimes /init and the agent print on the console."""
    marks = {
        "modules": re.search(r"mxvm-init: uptime ([\d.]+): loading modules", console),
        "agent": re.search(r"mxvm-init: uptime ([\d.]+): starting the guest agent", console),
        "imported": re.search(r"guest.starting imported_at=([\d.]+)", console),
        "ready": re.search(r"guest.ready boot_s=([\d.]+)", console),
    }
    t = {k: float(m.group(1)) for k, m in marks.items() if m}
    if len(t) < len(marks):
        return {}
    return {
        "kernel_to_init_s": t["modules"],
        "insmod_s": t["agent"] - t["modules"],
        "python_start_and_imports_s": t["imported"] - t["agent"],
        "agent_setup_s": t["ready"] - t["imported"],
    }


def _summary(runs: list[dict[str, float]]) -> None:
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        print(
            f"{key}: p50={statistics.median(values):.3f} "
            f"min={min(values):.3f} max={max(values):.3f}"
        )


async def main_async(runs: int, memory_mb: int, vcpus: int) -> None:
    image = await asyncio.to_thread(build_dev_image, default_image_dir(), progress=print)
    manifest = json.loads(image.manifest.read_text())
    print(f"image: {image.initrd} ({manifest['initrd_bytes'] / 1e6:.1f} MB zstd initrd)")
    print(f"kernel: {manifest['kernel_release']}  cmdline: {guest_cmdline()}")
    results = []
    for i in range(runs):
        result = await one_boot(image, memory_mb, vcpus)
        print(f"run {i + 1}: " + " ".join(f"{k}={v:.3f}" for k, v in result.items()))
        results.append(result)
    _summary(results)
    print(f"guest_ready_s: {statistics.median(r['ready_s'] for r in results):.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory-mb", type=int, default=256)
    parser.add_argument("--vcpus", type=int, default=1)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.runs, args.memory_mb, args.vcpus))


if __name__ == "__main__":
    main()
