"""What a job row holds beside its events: the request that did not parse as `JobParams`.

Pure models (no SQL): the ORM module types its JSONB columns with them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RequestedParams(BaseModel):
    """The metadata a user sent when it did not parse as `JobParams` (a job rejected at ingest).

    Kept on the row so the job's status shows what was asked for; nothing downstream reads it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    requested: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        # Rows inserted without parameters hold `{}`: nothing was requested.
        return data if data else {"requested": {}}
