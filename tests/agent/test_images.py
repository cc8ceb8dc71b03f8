"""Resolving a guest image by name: its manifest read again whenever it changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mxvm.agent.images import resolve_image
from mxvm.hypervisors.base import ImageError


def _manifest(images: Path, **fields: object) -> Path:
    path = images / "default" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kernel": "vmlinuz", **fields}))
    return path


def test_a_changed_manifest_is_read_again_and_a_removed_one_is_an_error(tmp_path: Path) -> None:
    path = _manifest(tmp_path, min_memory_mb=128)
    first = resolve_image(tmp_path, "default")
    assert first.min_memory_mb == 128 and first.kernel == tmp_path / "default" / "vmlinuz"
    assert resolve_image(tmp_path, "default") == first
    before = path.stat().st_mtime_ns
    _manifest(tmp_path, min_memory_mb=256, cmdline="quiet")
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))  # even within one clock tick
    again = resolve_image(tmp_path, "default")
    assert (again.min_memory_mb, again.cmdline) == (256, ["quiet"])
    path.write_text("{not json")
    with pytest.raises(ImageError, match="is not a valid image manifest"):
        resolve_image(tmp_path, "default")
    path.unlink()
    with pytest.raises(ImageError, match="does not exist"):
        resolve_image(tmp_path, "default")
