"""`mxvm run`: submit a one-off batch job, stream its output, exit with the guest's code;
and `mxvm image build`: build the dev guest image."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path
from typing import Any

from mxvm.agent.process import image_dir_of
from mxvm.cli.context import client_from
from mxvm.client import ApiClient
from mxvm.config import AgentSettings
from mxvm.image import build_dev_image

PLACEMENT_POLL_S = 0.2


def run_spec(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    env = dict(kv.split("=", 1) for kv in args.env)
    task: dict[str, Any] = {"argv": argv, "driver": args.driver, "image": args.image,
                            "vcpus": args.vcpus, "memory_mb": args.memory, "env": env}  # fmt: skip
    if args.max_runtime is not None:
        task["max_runtime_s"] = args.max_runtime
    return {
        "name": args.name or f"run-{secrets.token_hex(4)}",
        "type": "batch",
        "task": task,
        "restart": {"attempts": 0},
        "reschedule": {"attempts": 0},
    }


async def _started(
    client: ApiClient, job_id: str, eval_id: str, timeout_s: float
) -> dict[str, Any] | str:
    """The allocation once its agent has it (or is done), or why it was not placed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        allocs = await client.get(f"/api/v1/jobs/{job_id}/allocations")
        if allocs and allocs[0]["client_status"] != "pending":
            return allocs[0]  # type: ignore[no-any-return]
        if not allocs:
            ev = await client.get(f"/api/v1/evaluations/{eval_id}")
            if ev["status"] == "blocked":
                why = str(ev["status_description"])
                return why + (f" {ev['failures']}" if ev["failures"] else "")
        await asyncio.sleep(PLACEMENT_POLL_S)
    return f"not started within {timeout_s:g}s"


async def run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("mxvm run: give the command after --, e.g. mxvm run -- echo hi", file=sys.stderr)
        return 2
    async with client_from(args) as client:
        out = await client.post("/api/v1/jobs", json=run_spec(args, argv))
        job_id = out["job"]["id"]
        try:
            got = await _started(client, job_id, out["evaluation"]["id"], args.timeout)
            if isinstance(got, str):
                print(f"mxvm run: not placed: {got}", file=sys.stderr)
                await client.post(f"/api/v1/jobs/{job_id}/stop")
                return 2
            async for chunk in client.stream(
                f"/api/v1/allocations/{got['id']}/logs", follow="true"
            ):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            alloc = await client.get(f"/api/v1/allocations/{got['id']}")
        except (KeyboardInterrupt, asyncio.CancelledError):
            await client.post(f"/api/v1/jobs/{job_id}/stop")
            raise
    if alloc["exit_code"] is None:
        print(f"mxvm run: {alloc['client_status']}: {alloc['client_description']}", file=sys.stderr)
        return 1
    return int(alloc["exit_code"])


async def image_build(args: argparse.Namespace) -> int:
    dest = Path(args.dest) if args.dest else image_dir_of(AgentSettings()) / "default"
    paths = await asyncio.to_thread(
        build_dev_image, dest, progress=lambda m: print(m, file=sys.stderr), force=args.force
    )
    print(f"image ready: kernel {paths.kernel}, initrd {paths.initrd}")
    return 0
