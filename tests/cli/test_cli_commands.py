"""Every CLI verb names a coroutine that exists, and `mxvm agent` loads only what it needs."""

from __future__ import annotations

import argparse
import asyncio

from mxvm.cli.main import command, parser
from tests.fresh_python import fresh_python


def _targets(p: argparse.ArgumentParser) -> list[str]:
    out = [p.get_default("target")] if p.get_default("target") else []
    for action in p._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.extend(_targets(sub))
    return out


def test_every_verb_resolves_to_a_coroutine_function() -> None:
    targets = _targets(parser())
    assert len(targets) >= 15 and "agent:run" in targets and "server:up" in targets
    for target in targets:
        assert asyncio.iscoroutinefunction(command(target)), target


def test_the_agent_does_not_import_the_control_plane() -> None:
    code = (
        "import sys; from mxvm.cli.main import command; command('agent:run'); "
        "print(sorted(m for m in ('asyncpg', 'redis', 'mxvm.store', 'mxvm.coordinator', "
        "'pynvml') if m in sys.modules))"
    )
    assert fresh_python(code) == "[]"
