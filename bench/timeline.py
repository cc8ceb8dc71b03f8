"""Where a job's time goes: the control plane's stages, timestamped, for a lone job and a burst.

    .venv/bin/python -m bench.timeline [-n 50]

The latency benchmark's set-up (bench.orchestrator: its own Postgres and Redis, a coordinator
process, the fake agent in a process of its own), with a few stage functions of the
coordinator and the agent wrapped so that each notes on the system-wide monotonic clock when
it is entered and left (in memory, written out when the process exits). After 10 lone jobs
that warm every connection and statement up, it submits one more job alone and then a burst
of `n` at once, and prints for each: every stage, how often it ran, when it was first entered
and last left, in ms after the submit. That is how to tell what a latency figure is made of:
the CPU a stage costs (bench.orchestrator latency prints it per process) or the stages
waiting for each other. The wrappers cost some time of their own: compare the figures with
each other, not with the latency benchmark's. Last line: `burst_last_start_ms: X`.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.orchestrator import (
    FakeAgentProcess,
    _http_floor,
    _latency_spec,
    _one_at_a_time,
    cluster,
    fake_agent,
    fake_agent_process,
)

TRACE_DIR_ENV = "MXVM_BENCH_TRACE_DIR"

# (label, "module:Class.method"), in pipeline order. The coordinator's first, then the agent's.
COORDINATOR_STAGES = [
    ("submit request", "mxvm.coordinator.service:Coordinator.submit_job"),
    ("store jobs (group submit)", "mxvm.store.jobs:JobStore.create_jobs"),
    ("evaluator round", "mxvm.coordinator.evaluator:Evaluator.run_once"),
    ("  read ready evaluations", "mxvm.store.evaluations:EvaluationStore.ready_evaluations"),
    ("  read capacity count", "mxvm.store.evaluations:EvaluationStore.capacity_seq"),
    ("  read jobs", "mxvm.store.jobs:JobStore.get_jobs"),
    ("  read snapshot", "mxvm.store.snapshot:SnapshotStore.snapshot"),
    ("  read allocations", "mxvm.store.allocations:AllocationStore.jobs_allocations"),
    ("  commit plans", "mxvm.store.plans:PlanStore.apply_plans"),
    ("write outcomes", "mxvm.coordinator.evaluator:Evaluator._write"),
    ("answer agent long-poll", "mxvm.coordinator.service:Coordinator.node_changes"),
    ("status reports", "mxvm.coordinator.service:Coordinator.report_allocations"),
]
AGENT_STAGES = [
    ("agent long-poll", "mxvm.agent.agent:Agent._poll"),
    ("agent converge", "mxvm.agent.agent:Agent.converge"),
    ("runner: boot attempt", "mxvm.agent.runner:AllocRunner._attempt"),
    ("VM start (driver)", "mxvm.hypervisors.fake:FakeDriver.start"),
]


# --- in the traced processes -------------------------------------------------------------


def resolve(target: str) -> tuple[type, str]:
    """ "module:Class.method" -> (the class, the method's name)."""
    module, qualname = target.split(":")
    owner_name, attr = qualname.rsplit(".", 1)
    return getattr(importlib.import_module(module), owner_name), attr


def _wrapped(
    fn: Callable[..., Awaitable[Any]], target: str, notes: list[tuple[float, str, str]]
) -> Callable[..., Awaitable[Any]]:
    """`fn` (every stage is a coroutine method), noting its entry and exit."""

    @functools.wraps(fn)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        notes.append((time.monotonic(), ">", target))
        try:
            return await fn(*args, **kwargs)
        finally:
            notes.append((time.monotonic(), "<", target))

    return traced


def install(stages: list[tuple[str, str]]) -> None:
    """Wrap each stage's method on its class; the notes are written to this process's file in
    $MXVM_BENCH_TRACE_DIR when it exits."""
    notes: list[tuple[float, str, str]] = []
    for _, target in stages:
        owner, attr = resolve(target)
        setattr(owner, attr, _wrapped(getattr(owner, attr), target, notes))
    out = Path(os.environ[TRACE_DIR_ENV]) / f"{os.getpid()}.trace"

    def write() -> None:
        out.write_text("".join(f"{t:.6f} {kind} {target}\n" for t, kind, target in notes))

    atexit.register(write)


def traced_coordinator() -> None:
    install(COORDINATOR_STAGES)
    from mxvm.cli.main import main

    sys.exit(main(["coordinator"]))


def traced_agent() -> None:
    install(AGENT_STAGES)
    asyncio.run(fake_agent())


# --- in the benchmark process ------------------------------------------------------------


@dataclass
class Phase:
    name: str
    t0: float  # the first submit
    last_start: float  # the last of its VMs started


def _load(trace_dir: Path) -> list[tuple[float, str, str]]:
    notes = []
    for f in trace_dir.glob("*.trace"):
        for line in f.read_text().splitlines():
            t, kind, target = line.split()
            notes.append((float(t), kind, target))
    return sorted(notes)


def report(phase: Phase, notes: list[tuple[float, str, str]]) -> None:
    """Each stage's calls that began in the phase (from its first submit to its last VM
    start): how many, the first entry, the last exit within the phase ("(before)": it was
    under way when the phase began, "-": none ended within it)."""
    end = phase.last_start + 5e-5  # the driver's own note comes a few µs after the fake's
    print(f"\n{phase.name}: ms after the first submit (the last VM started at "
          f"{(phase.last_start - phase.t0) * 1000:.1f})")  # fmt: skip
    print(f"  {'stage':<30} {'calls':>5} {'first in':>9} {'last out':>9}")
    for label, target in COORDINATOR_STAGES + AGENT_STAGES:
        ins = [t for t, kind, tg in notes if tg == target and kind == ">" and phase.t0 <= t < end]
        outs = [t for t, kind, tg in notes if tg == target and kind == "<" and phase.t0 <= t < end]
        if not ins and not outs:
            continue
        first = f"{(min(ins) - phase.t0) * 1000:9.1f}" if ins else f"{'(before)':>9}"
        last = f"{(max(outs) - phase.t0) * 1000:9.1f}" if outs else f"{'-':>9}"
        print(f"  {label:<30} {len(ins):>5} {first} {last}")


async def _phase(name: str, fake: FakeAgentProcess, submit: Callable[[], Any], n: int) -> Phase:
    before = set(fake.started)
    t0 = time.monotonic()
    await submit()
    return Phase(name, t0, max((await fake.new_starts(before, n)).values()))


async def timeline(n: int) -> None:
    trace_dir = Path(tempfile.mkdtemp(prefix="mxvm-timeline-"))
    os.environ[TRACE_DIR_ENV] = str(trace_dir)  # the child processes inherit it
    me = ("-m", "bench.timeline")
    async with (
        cluster(18486, coordinator_argv=(*me, "traced-coordinator")) as c,
        fake_agent_process(c, 18487, agent_argv=(*me, "traced-agent")) as fake,
    ):
        await _one_at_a_time(c, fake, 10)  # warms connections and prepared statements up
        await asyncio.sleep(0.2)
        lone = await _phase(
            "one job alone", fake, lambda: c.api.post("/api/v1/jobs", json=_latency_spec("lone")), 1
        )
        await _http_floor(c, n)  # the client holds n open connections, as in the latency bench
        await asyncio.sleep(0.5)

        async def burst() -> None:
            specs = [_latency_spec(f"burst-{i}") for i in range(n)]
            await asyncio.gather(*(c.api.post("/api/v1/jobs", json=s) for s in specs))

        many = await _phase(f"{n} jobs at once", fake, burst, n)
    notes = _load(trace_dir)
    for phase in (lone, many):
        report(phase, notes)
    print(f"burst_last_start_ms: {(many.last_start - many.t0) * 1000:.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("what", nargs="?", default="run",
                   choices=["run", "traced-coordinator", "traced-agent"])  # fmt: skip
    p.add_argument("-n", type=int, default=50, help="jobs in the burst")
    args = p.parse_args(argv)
    if args.what == "traced-coordinator":
        traced_coordinator()
    elif args.what == "traced-agent":
        traced_agent()
    else:
        asyncio.run(timeline(args.n))


if __name__ == "__main__":
    main()
