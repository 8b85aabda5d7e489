"""API upload keys are ours: the user's file name survives only as a harmless last component."""

from __future__ import annotations

import uuid

import pytest

from services.ingest.keys import MAX_NAME, sanitise_filename, upload_key


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip.mp4", "clip.mp4"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("-rf --output=x.mp4", "rf_-output_x.mp4"),
        ("$(rm -rf ~).mp4", "rm_-rf_.mp4"),
        ("a\nb\r\x00c.mp4", "abc.mp4"),
        ("with spaces + plus.mp4", "with_spaces_plus.mp4"),
        ("視頻 €.mov", "視頻_.mov"),
        (".hidden", "hidden"),
        ("...", "upload"),
        ("", "upload"),
        (None, "upload"),
    ],
)
def test_file_names_are_reduced_to_safe_characters(name: str | None, expected: str) -> None:
    assert sanitise_filename(name) == expected


def test_long_names_are_cut_but_keep_their_extension() -> None:
    name = sanitise_filename("x" * 500 + ".mp4")
    assert len(name) <= MAX_NAME
    assert name.endswith(".mp4")


@pytest.mark.parametrize("name", ["../../x", "-x", "$(id)", "a/b/c", "\n", "x" * 1000])
def test_keys_stay_under_their_own_unique_prefix(name: str) -> None:
    upload_id = uuid.uuid4()
    key = upload_key(name, upload_id)
    prefix = f"api/{upload_id}/"
    assert key.startswith(prefix)
    rest = key.removeprefix(prefix)
    assert rest
    assert "/" not in rest
    assert ".." not in rest
    assert not rest.startswith(("-", "."))
    assert all(ch.isprintable() and not ch.isspace() for ch in rest)
