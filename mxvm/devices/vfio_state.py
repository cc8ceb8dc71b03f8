"""The agent's record of the PCI functions it moved to vfio-pci and where they came from.

Written before the first sysfs write of a bind, so an agent that dies mid-way knows on
restart which functions it touched and which driver each one must go back to.
File: `<state_dir>/vfio-bindings.json`, replaced atomically on every change.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mxvm.errors import InvalidState

STATE_FILE = "vfio-bindings.json"


class BoundMember(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    iommu_group: int
    original_driver: str | None = Field(description="driver before the bind; None: unbound")
    requested_for: str = Field(description="the PCI address whose bind took this function")


class VfioState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    members: dict[str, BoundMember] = Field(default_factory=dict)

    def group_members(self, group: int) -> dict[str, BoundMember]:
        return {a: m for a, m in self.members.items() if m.iommu_group == group}


def load_state(state_dir: Path) -> VfioState:
    path = state_dir / STATE_FILE
    try:
        return VfioState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return VfioState()
    except ValidationError as exc:
        # Guessing original drivers would be worse than stopping: an operator must look.
        raise InvalidState(f"corrupt VFIO state file {path}: {exc}", path=str(path)) from exc


def save_state(state_dir: Path, state: VfioState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)
