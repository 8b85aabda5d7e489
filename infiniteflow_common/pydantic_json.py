"""A JSONB column holding one pydantic model: validated once when read, dumped in JSON mode when written.

Rows written before a column was typed keep their stored shape; `upgrade` rewrites such a shape into the
model's before validation, so older rows stay readable without a data migration. SQL NULL stays SQL NULL
(`none_as_null`), never the JSON `null`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

M = TypeVar("M", bound=BaseModel)


def _unchanged(stored: dict[str, Any]) -> dict[str, Any]:
    return stored


class PydanticJSON(TypeDecorator[M], Generic[M]):
    """JSONB storing `model`; `upgrade` maps a stored older shape onto the model's fields."""

    impl = JSONB(none_as_null=True)
    cache_ok = True

    def __init__(
        self, model: type[M], upgrade: Callable[[dict[str, Any]], dict[str, Any]] = _unchanged
    ) -> None:
        super().__init__()
        self.model = model
        self.upgrade = upgrade

    def process_bind_param(self, value: M | dict[str, Any] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        # A dict is validated too, so a column never stores what it could not read back.
        model = value if isinstance(value, self.model) else self.model.model_validate(value)
        return model.model_dump(mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> M | None:
        if value is None:
            return None
        return self.model.model_validate(self.upgrade(value))
