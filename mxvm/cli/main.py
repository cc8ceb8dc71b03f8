"""The `mxvm` command: argument parsing and dispatch. Each verb lives in its own module."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeAlias

from mxvm import __version__
from mxvm.cli import agent, allocs, jobs, nodes, server
from mxvm.errors import MxvmError
from mxvm.logs import configure

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _reads(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _sub(parent: Sub, name: str, fn: Command, help: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
    p.set_defaults(fn=fn)
    return p


def _server_verbs(sub: Sub) -> None:
    p = _sub(sub, "up", server.up, "run a standalone mxvm: own Postgres and Redis, coordinator")
    p.add_argument("--listen", help="host:port for the API (default 127.0.0.1:8470)")
    p = _sub(sub, "coordinator", server.coordinator, "run a coordinator (needs Postgres, Redis)")
    p.add_argument("--listen", help="host:port for the API")
    _sub(sub, "migrate", server.migrate, "apply database migrations")
    ag = sub.add_parser("agent", help="run the host agent, or show what it sees")
    ag.set_defaults(fn=agent.run)
    inv = _reads(_sub(ag.add_subparsers(), "inventory", agent.inventory, "devices and readiness"))
    inv.add_argument("--sysfs-root", help="read PCI from this sysfs tree (default /sys)")


def _job_verbs(sub: Sub) -> None:
    job = sub.add_parser("job", help="submit and inspect jobs").add_subparsers(required=True)
    p = _reads(_sub(job, "run", jobs.run, "submit a job spec (.json, .toml or - for stdin)"))
    p.add_argument("file")
    p.add_argument("--detach", action="store_true", help="do not wait for the evaluation")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for placement")
    _reads(_sub(job, "ls", jobs.ls, "list jobs"))
    _reads(_sub(job, "status", jobs.status, "show a job and its allocations")).add_argument("id")
    _reads(_sub(job, "stop", jobs.stop, "stop a job")).add_argument("id")


def _node_alloc_verbs(sub: Sub) -> None:
    node = sub.add_parser("node", help="inspect nodes").add_subparsers(required=True)
    _reads(_sub(node, "ls", nodes.ls, "list nodes"))
    _reads(_sub(node, "show", nodes.show, "show a node")).add_argument("id")
    p = _reads(_sub(node, "eligibility", nodes.eligibility, "set a node's eligibility"))
    p.add_argument("id")
    p.add_argument("eligibility", choices=["eligible", "ineligible"])
    alloc = sub.add_parser("alloc", help="inspect allocations").add_subparsers(required=True)
    _reads(_sub(alloc, "ls", allocs.ls, "list allocations")).add_argument("--job")
    _reads(_sub(alloc, "show", allocs.show, "show an allocation")).add_argument("id")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mxvm", description="microVM orchestrator for AI agents")
    p.add_argument("--version", action="version", version=f"mxvm {__version__}")
    p.add_argument("--log-level", default=os.environ.get("MXVM_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    _server_verbs(sub)
    _job_verbs(sub)
    _node_alloc_verbs(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_level)
    try:
        fn: Command = args.fn
        return asyncio.run(fn(args))
    except MxvmError as exc:
        print(f"mxvm: {exc.title}: {exc.detail}", file=sys.stderr)
        for e in exc.extra.get("errors", []) or []:
            print(f"  {e.get('field')}: {e.get('message')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `mxvm job ls --json | head`
        return 0
