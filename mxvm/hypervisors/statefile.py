"""The small JSON state file each driver keeps in a VM's run dir (and the agent per
allocation), written atomically so a crash mid-write never leaves half a file."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def save_model(path: Path, model: BaseModel) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(model.model_dump_json())
    tmp.replace(path)


def load_model(path: Path, cls: type[M]) -> M | None:
    """The model in `path`, or None when it is missing or unreadable."""
    try:
        return cls.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
