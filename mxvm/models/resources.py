"""Resource amounts: what a node has and what an allocation takes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Resources(BaseModel):
    """CPU in millicores (1000 = one core / one vCPU), memory and disk in MiB."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_millicores: int = Field(default=0, ge=0)
    memory_mb: int = Field(default=0, ge=0)
    disk_mb: int = Field(default=0, ge=0)

    def __add__(self, other: Resources) -> Resources:
        return Resources.model_construct(
            cpu_millicores=self.cpu_millicores + other.cpu_millicores,
            memory_mb=self.memory_mb + other.memory_mb,
            disk_mb=self.disk_mb + other.disk_mb,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources.model_construct(
            cpu_millicores=self.cpu_millicores - other.cpu_millicores,
            memory_mb=self.memory_mb - other.memory_mb,
            disk_mb=self.disk_mb - other.disk_mb,
        )

    def shortfall(self, need: Resources) -> str | None:
        """The first dimension in which `need` does not fit into `self`, or None."""
        if need.cpu_millicores > self.cpu_millicores:
            return "cpu"
        if need.memory_mb > self.memory_mb:
            return "memory"
        if need.disk_mb > self.disk_mb:
            return "disk"
        return None


ZERO = Resources()
