"""`mxvm agent` (run the host agent) and `mxvm agent inventory` (what it sees)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from mxvm.agent.process import run_agent
from mxvm.cli.output import emit_json
from mxvm.config import AgentSettings
from mxvm.devices import PynvmlBackend, scan_inventory


async def run(_args: argparse.Namespace) -> int:
    settings = AgentSettings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_agent(settings, stop)
    return 0


async def inventory(args: argparse.Namespace) -> int:
    settings = AgentSettings()
    root = Path(args.sysfs_root) if args.sysfs_root else settings.sysfs_root
    report = await asyncio.to_thread(
        scan_inventory, root, nvml=PynvmlBackend(), state_dir=settings.state_dir
    )
    if args.json:
        emit_json(report.model_dump(mode="json"))
    else:
        print(report.render_table())
    return 0
