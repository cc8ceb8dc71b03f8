"""Fixtures: a factory of fake sysfs trees, each with its kernel simulator."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.devices.fake_sysfs import FakeKernel, FakePci, MakeKernel


@pytest.fixture
def make_kernel(tmp_path: Path) -> MakeKernel:
    """make_kernel([FakePci, ...], iommu=True, ...) -> FakeKernel in a fresh directory."""
    counter = itertools.count()

    def make(functions: list[FakePci], **options: Any) -> FakeKernel:
        return FakeKernel(tmp_path / f"host{next(counter)}", functions, **options)

    return make


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
