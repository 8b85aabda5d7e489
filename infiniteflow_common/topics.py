"""Topic names live in one enum; their settings in `schemas/topics/<topic>.yaml` (the one definition)."""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from infiniteflow_common.settings import REPO_ROOT

TOPICS_DIR = REPO_ROOT / "schemas" / "topics"


class Topic(StrEnum):
    """Every topic of the pipeline. Each has a DLQ twin named `<topic>.dlq`."""

    MINIO_EVENTS = "minio.events"
    VIDEO_UPLOADED = "video.uploaded"
    JOB_SPLIT = "job.split"
    CHUNK_READY = "chunk.ready"
    CHUNK_INTERPOLATED = "chunk.interpolated"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"

    @property
    def dlq(self) -> str:
        """The dead-letter twin of this topic."""
        return dlq_of(self.value)


def dlq_of(topic: str) -> str:
    """Name of the DLQ twin of `topic`."""
    return f"{topic}.dlq"


class TopicSpec(BaseModel):
    """One topic's manifest: what it carries, who writes and reads it, and how it is stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    key: str
    record: str | None = Field(description="Avro record carried; None for MinIO's own JSON")
    producers: list[str]
    consumers: list[str]
    partitions: int = Field(ge=1)
    retention_hours: int = Field(ge=1)
    dlq_retention_hours: int = Field(ge=1)

    @property
    def dlq(self) -> str:
        """The dead-letter twin of this topic."""
        return dlq_of(self.name)


def load_topic_specs(directory: Path = TOPICS_DIR) -> dict[str, TopicSpec]:
    """Read every topic manifest, keyed by topic name."""
    specs: dict[str, TopicSpec] = {}
    for path in sorted(directory.glob("*.yaml")):
        spec = TopicSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        specs[spec.name] = spec
    return specs


@cache
def topic_specs() -> dict[str, TopicSpec]:
    """The project's topic manifests (cached)."""
    return load_topic_specs()
