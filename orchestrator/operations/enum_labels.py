"""Enum labels as PostgreSQL bounds them: not empty, at most 63 bytes.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from . import names


# PostgreSQL's limit: an enum label is at most 63 bytes (NAMEDATALEN - 1), and not empty
Label = Annotated[str, StringConstraints(min_length=1, max_length=63)]


def label_fits(label: str) -> str:
    if len(label.encode()) > names.MAX:
        raise ValueError(f"enum label {label!r} is longer than PostgreSQL's 63 bytes")
    return label
