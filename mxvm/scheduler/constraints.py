"""Constraint operators, evaluated against a node attribute (Nomad's checkConstraint)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache

from mxvm.models.job import Constraint, Operator

_NUMBER_START = frozenset("0123456789+-.")


def _number(text: str) -> float | None:
    if text.lstrip()[:1] not in _NUMBER_START:
        return None  # not a number: skip the cost of a ValueError
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _compare(left: str, right: str) -> int:
    """-1, 0 or 1: numerically when both sides are numbers, else lexically."""
    ln, rn = _number(left), _number(right)
    if ln is not None and rn is not None:
        return (ln > rn) - (ln < rn)
    return (left > right) - (left < right)


_ORDER: dict[Operator, Callable[[int], bool]] = {
    Operator.EQ: lambda c: c == 0,
    Operator.NE: lambda c: c != 0,
    Operator.LT: lambda c: c < 0,
    Operator.LE: lambda c: c <= 0,
    Operator.GT: lambda c: c > 0,
    Operator.GE: lambda c: c >= 0,
}


@lru_cache(maxsize=1024)
def compiled(expr: str) -> re.Pattern[str]:
    return re.compile(expr)


def _items(text: str) -> set[str]:
    return {part.strip() for part in text.split(",") if part.strip()}


def satisfied(constraint: Constraint, actual: str | None) -> bool:
    """Whether a node whose attribute resolves to `actual` (None: unset) meets `constraint`."""
    op = constraint.operator
    if op == Operator.IS_SET:
        return actual is not None
    if op == Operator.IS_NOT_SET:
        return actual is None
    if actual is None:
        # As in Nomad, "!=" holds for a missing attribute; every other test needs a value.
        return op == Operator.NE
    if op == Operator.REGEXP:
        return compiled(constraint.value).search(actual) is not None
    if op == Operator.SET_CONTAINS:
        return _items(constraint.value) <= _items(actual)
    return _ORDER[op](_compare(actual, constraint.value))
