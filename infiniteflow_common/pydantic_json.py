"""A JSONB column holding one pydantic model: validated once when read, dumped in JSON mode when written.

Rows written before a column was typed keep their stored shape; `upgrade` rewrites such a shape into the
model's before validation, so older rows stay readable without a data migration. SQL NULL stays SQL NULL
(`none_as_null`), never the JSON `null`. A column whose rows hold one of a few shapes names the others as
`alternatives`: a stored value is read as the first of `model, *alternatives` it validates as.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

M = TypeVar("M", bound=BaseModel)


def _unchanged(stored: dict[str, Any]) -> dict[str, Any]:
    return stored


class PydanticJSON(TypeDecorator[M], Generic[M]):
    """JSONB storing `model` (or one of `alternatives`); `upgrade` maps a stored older shape onto theirs."""

    impl = JSONB(none_as_null=True)
    cache_ok = True

    def __init__(
        self,
        model: type[M],
        upgrade: Callable[[dict[str, Any]], dict[str, Any]] = _unchanged,
        alternatives: tuple[type[BaseModel], ...] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.upgrade = upgrade
        self.alternatives = alternatives

    def _validate(self, value: dict[str, Any]) -> BaseModel:
        try:
            return self.model.model_validate(value)
        except ValidationError:
            for other in self.alternatives:
                with contextlib.suppress(ValidationError):
                    return other.model_validate(value)
            raise

    def process_bind_param(self, value: BaseModel | dict[str, Any] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        # A dict is validated too, so a column never stores what it could not read back.
        if isinstance(value, BaseModel) and isinstance(value, (self.model, *self.alternatives)):
            return value.model_dump(mode="json")
        return self._validate(dict(value)).model_dump(mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> M | None:
        if value is None:
            return None
        return self._validate(self.upgrade(value))  # type: ignore[return-value]
