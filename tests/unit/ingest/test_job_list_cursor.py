"""The job list's cursor: opaque to callers, exact to the microsecond, refused when not ours."""

from __future__ import annotations

import string
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.ingest.api.views import decode_cursor, encode_cursor
from services.ingest.params import InvalidParams


def test_a_cursor_names_exactly_the_last_job_of_a_page() -> None:
    job_id = uuid.uuid4()
    at = datetime(2026, 11, 30, 21, 5, 7, 123456, tzinfo=timezone(timedelta(hours=2)))
    cursor = encode_cursor(at, job_id)
    assert set(cursor) <= set(string.ascii_letters + string.digits + "-_"), "safe in a query string"
    assert decode_cursor(cursor) == (at.astimezone(UTC), job_id)


@pytest.mark.parametrize(
    "cursor", ["", "not-a-cursor", "bm90fGEtdXVpZA", encode_cursor(datetime.now(UTC), uuid.uuid4())[:-6]]
)
def test_anything_else_is_refused_with_a_stable_code(cursor: str) -> None:
    with pytest.raises(InvalidParams) as refused:
        decode_cursor(cursor)
    assert refused.value.code == "E_CURSOR_INVALID"
