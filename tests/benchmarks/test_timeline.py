"""bench/timeline.py: its stage names resolve, its wrappers note each call, its report reads
the notes."""

from __future__ import annotations

import inspect

import pytest

from bench.timeline import AGENT_STAGES, COORDINATOR_STAGES, Phase, _wrapped, report, resolve


@pytest.mark.parametrize(("label", "target"), COORDINATOR_STAGES + AGENT_STAGES)
def test_every_stage_names_a_coroutine_method_that_exists(label: str, target: str) -> None:
    # A renamed method would otherwise break the benchmark only when someone runs it.
    owner, attr = resolve(target)
    assert inspect.iscoroutinefunction(getattr(owner, attr)), label


async def test_a_wrapped_coroutine_notes_entry_and_exit_even_when_it_raises() -> None:
    notes: list[tuple[float, str, str]] = []

    async def ok(x: int) -> int:
        return x + 1

    async def boom() -> None:
        raise ValueError("no")

    assert await _wrapped(ok, "m:C.ok", notes)(1) == 2
    with pytest.raises(ValueError):
        await _wrapped(boom, "m:C.boom", notes)()
    assert [(kind, target) for _, kind, target in notes] == [
        (">", "m:C.ok"), ("<", "m:C.ok"), (">", "m:C.boom"), ("<", "m:C.boom"),
    ]  # fmt: skip
    times = [t for t, _, _ in notes]
    assert times == sorted(times)


def test_report_counts_the_calls_within_the_phase(capsys: pytest.CaptureFixture[str]) -> None:
    submit = "mxvm.coordinator.service:Coordinator.submit_job"
    start = "mxvm.hypervisors.fake:FakeDriver.start"
    poll = "mxvm.agent.agent:Agent._poll"
    notes = [
        (9.0, ">", poll),  # under way when the phase began
        (10.001, ">", submit), (10.002, ">", submit), (10.003, "<", submit),
        (10.004, "<", submit), (10.005, "<", poll), (10.006, ">", start), (10.006, "<", start),
        (10.5, ">", submit),  # after the phase
    ]  # fmt: skip
    report(Phase("burst", t0=10.0, last_start=10.006), notes)
    rows = {
        line.split("  ")[1].strip(): line.split()
        for line in capsys.readouterr().out.splitlines()[2:]
    }
    assert rows["submit request"][-3:] == ["2", "1.0", "4.0"]
    assert rows["agent long-poll"][-3:] == ["0", "(before)", "5.0"]
    assert rows["VM start (driver)"][-3:] == ["1", "6.0", "6.0"]
    assert "evaluator round" not in rows  # nothing of it ran in the phase
