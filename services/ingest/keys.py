"""Object keys our code chooses for API uploads (pure).

A user's file name is data, not a path: only its last component survives, reduced to letters, digits
and `._-`, never starting with a dot or dash, bounded in length, so the key can be shown, logged and used
anywhere without quoting. The uuid in front makes each key unique.
"""

from __future__ import annotations

import re
import unicodedata
import uuid

API_PREFIX = "api/"
MAX_NAME = 100
_UNSAFE = re.compile(r"[^\w.\-]+")
_REPEATS = re.compile(r"([_.\-])\1+")


def sanitise_filename(name: str | None, fallback: str = "upload") -> str:
    """A safe, readable file name from whatever the client sent (`../x.mp4` → `x.mp4`)."""
    text = unicodedata.normalize("NFKC", name or "")
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = _UNSAFE.sub("_", text)
    text = _REPEATS.sub(r"\1", text).strip("._- ")
    if len(text) > MAX_NAME:
        stem, dot, ext = text.rpartition(".")
        ext = ext[:10] if dot and stem else ""
        text = text[: MAX_NAME - len(ext) - 1].rstrip("._-") + ("." + ext if ext else "")
    return text or fallback


def upload_key(filename: str | None, upload_id: uuid.UUID | None = None) -> str:
    """`api/{uuid}/{sanitised name}`: the key of an API upload in the incoming bucket."""
    return f"{API_PREFIX}{upload_id or uuid.uuid4()}/{sanitise_filename(filename)}"
