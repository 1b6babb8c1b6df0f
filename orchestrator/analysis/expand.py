"""Questions the static analysis leaves to the catalog: which other relations a statement
locks because of what the database holds (partitions, foreign keys, views, dependents)."""

from __future__ import annotations

from dataclasses import dataclass

from .lockmode import Lock


@dataclass(frozen=True)
class Expand:
    what: str  # a question catalog.py knows how to answer (its QUESTIONS table)
    relation: str  # the object asked about, as the statement names it
    lock: Lock  # the lock the answers get
    columns: tuple[str, ...] | None = None  # narrows some questions (an UPDATE's SET columns)
    since: int = 0  # the first PostgreSQL major version where it happens
    set_columns: tuple[str, ...] | None = None  # triggers: the columns an UPDATE sets (UPDATE OF triggers)
    before_only: bool = False  # triggers: only BEFORE triggers fire (an INSERT whose row conflicts)
