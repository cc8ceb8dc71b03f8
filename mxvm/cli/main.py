"""The `mxvm` command: argument parsing and dispatch. Each verb lives in its own module.

A verb's module is imported only when that verb runs: `mxvm agent` must not load the
coordinator, store and embedded servers behind `mxvm up` (9 MiB of the agent's RSS), and a
client verb need not load the agent's networking stack.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeAlias

from mxvm import __version__
from mxvm.errors import MxvmError
from mxvm.logs import configure

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command(target: str) -> Command:
    """'module:function' under mxvm.cli -> the verb's coroutine function (imports the module)."""
    module, _, name = target.partition(":")
    fn: Command = getattr(importlib.import_module(f"mxvm.cli.{module}"), name)
    return fn


def _reads(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """`90`, `90s`, `30m`, `2h` → seconds (argparse type)."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 30m, 2h)") from None
    if not seconds >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"a duration must not be negative: {text!r}")
    return seconds


def _sub(parent: Sub, name: str, target: str, help: str) -> argparse.ArgumentParser:
    """A verb whose coroutine is `target` ('module:function', imported when it runs)."""
    p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
    p.set_defaults(target=target)
    return p


def _server_verbs(sub: Sub) -> None:
    p = _sub(sub, "up", "server:up", "run a standalone mxvm: own Postgres and Redis, coordinator")
    p.add_argument("--listen", help="host:port for the API (default 127.0.0.1:8470)")
    p.add_argument("--no-agent", action="store_true", help="control plane only, no local agent")
    p = _sub(sub, "coordinator", "server:coordinator", "run a coordinator (needs Postgres, Redis)")
    p.add_argument("--listen", help="host:port for the API")
    _sub(sub, "migrate", "server:migrate", "apply database migrations")
    ag = sub.add_parser("agent", help="run the host agent, or show what it sees")
    ag.set_defaults(target="agent:run")
    inv = _reads(_sub(ag.add_subparsers(), "inventory", "agent:inventory", "devices and readiness"))
    inv.add_argument("--sysfs-root", help="read PCI from this sysfs tree (default /sys)")


def _job_verbs(sub: Sub) -> None:
    job = sub.add_parser("job", help="submit and inspect jobs").add_subparsers(required=True)
    p = _reads(_sub(job, "run", "jobs:run", "submit a job spec (.json, .toml or - for stdin)"))
    p.add_argument("file")
    p.add_argument("--detach", action="store_true", help="do not wait for the evaluation")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for placement")
    _reads(_sub(job, "ls", "jobs:ls", "list jobs"))
    _reads(_sub(job, "status", "jobs:status", "show a job and its allocations")).add_argument("id")
    _reads(_sub(job, "stop", "jobs:stop", "stop a job")).add_argument("id")


def _node_alloc_verbs(sub: Sub) -> None:
    node = sub.add_parser("node", help="inspect nodes").add_subparsers(required=True)
    _reads(_sub(node, "ls", "nodes:ls", "list nodes"))
    _reads(_sub(node, "show", "nodes:show", "show a node")).add_argument("id")
    p = _reads(_sub(node, "eligibility", "nodes:eligibility", "set a node's eligibility"))
    p.add_argument("id")
    p.add_argument("eligibility", choices=["eligible", "ineligible"])
    p = _reads(_sub(node, "drain", "nodes:drain", "drain a node: move its allocations elsewhere"))
    p.add_argument("id")
    p.add_argument("--disable", action="store_true", help="cancel draining (stays ineligible)")
    p.add_argument("--ignore-system", action="store_true", help="keep system jobs' allocations")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--deadline",
        type=duration,
        default=3600.0,
        help="stop whatever still runs after this long, e.g. 90s, 30m, 2h (default 1h)",
    )
    when.add_argument(
        "--force", dest="deadline", action="store_const", const=0.0, help="stop everything now"
    )
    when.add_argument(
        "--no-deadline",
        dest="deadline",
        action="store_const",
        const=None,
        help="never force: batch jobs run to their end",
    )
    alloc = sub.add_parser("alloc", help="inspect allocations").add_subparsers(required=True)
    _reads(_sub(alloc, "ls", "allocs:ls", "list allocations")).add_argument("--job")
    _reads(_sub(alloc, "show", "allocs:show", "show an allocation")).add_argument("id")
    p = _sub(alloc, "logs", "allocs:logs", "print an allocation's output")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing while it runs")
    p = _reads(_sub(alloc, "exec", "allocs:exec_", "run a command in an allocation's guest"))
    p.add_argument("id")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- command [args...]")


def _run_verbs(sub: Sub) -> None:
    p = _sub(sub, "run", "run:run", "run a command in a fresh microVM; exit with its code")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--memory", type=int, default=256, help="MiB (default 256)")
    p.add_argument("--image", default="default")
    p.add_argument("--driver", default="qemu")
    p.add_argument("--name", help="job name (default run-<random>)")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a start")
    p.add_argument(
        "--max-runtime",
        type=duration,
        help="stop the VM and fail after this long, e.g. 90s, 30m, 2h (default: no limit)",
    )
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- command [args...]")
    img = sub.add_parser("image", help="guest images").add_subparsers(required=True)
    p = _sub(img, "build", "run:image_build", "build the dev guest image (cached)")
    p.add_argument("--dest", help="image directory (default <images dir>/default)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mxvm", description="microVM orchestrator for AI agents")
    p.add_argument("--version", action="version", version=f"mxvm {__version__}")
    p.add_argument("--log-level", default=os.environ.get("MXVM_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    _server_verbs(sub)
    _job_verbs(sub)
    _node_alloc_verbs(sub)
    _run_verbs(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_level)
    try:
        return asyncio.run(command(args.target)(args))
    except MxvmError as exc:
        print(f"mxvm: {exc.title}: {exc.detail}", file=sys.stderr)
        for e in exc.extra.get("errors", []) or []:
            print(f"  {e.get('field')}: {e.get('message')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `mxvm job ls --json | head`
        return 0
