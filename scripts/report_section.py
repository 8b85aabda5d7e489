"""A generated section of a Markdown document: the text between two marker comments, rewritten in place."""

from __future__ import annotations

from pathlib import Path


def write_section(document: Path, start: str, end: str, section: str) -> None:
    """Replace what lies between `start` and `end` (markers included) by `section`, or append it.

    `section` must begin with `start` and end with `end`, so the next run finds it again.
    """
    text = document.read_text()
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    document.write_text(text)
