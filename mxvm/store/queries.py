"""Named SQL queries, loaded once from the .sql files beside this module.

A file holds blocks that start with `-- name: <query_name>`; everything up to the next such
line is the query. Names are global across files and must be unique.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in out:
            raise ValueError(f"duplicate query name {name!r}")
        out[name] = body.strip()
    return out


@cache
def load() -> dict[str, str]:
    out: dict[str, str] = {}
    folder = resources.files("mxvm.store").joinpath("queries")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, sql in parse(entry.read_text()).items():
                if name in out:
                    raise ValueError(f"query {name!r} defined twice ({entry.name})")
                out[name] = sql
    return out


def q(name: str) -> str:
    """The SQL text of a named query."""
    return load()[name]
