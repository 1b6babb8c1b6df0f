"""What a rule reads: the step's statements, analysed and resolved against the live catalog."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import psycopg

from ..analysis import Effect
from ..plan import Direction, Migration, Phase, Plan, Step

LARGE_TABLE_ROWS = 100_000


@dataclass(frozen=True)
class Finding:
    rule: str
    level: str  # error | warning
    message: str
    where: str  # file:line, or the table for findings from the live database
    statement: str = ""
    alternative: str | None = None  # SQL that does the same safely, when there is such SQL
    allowed: str | None = None  # the plan's reason for accepting it
    direction: str = "apply"  # the files it was found in: apply, or rollback

    @property
    def at(self) -> str:
        return self.where + (" (rollback)" if self.direction == "rollback" else "")

    @property
    def blocking(self) -> bool:
        return self.level == "error" and self.allowed is None

    def allow(self, reason: str | None) -> "Finding":
        return replace(self, allowed=reason)

    def as_json(self) -> dict:
        return {"rule": self.rule, "level": self.level, "message": self.message, "where": self.where,
                "statement": self.statement, "alternative": self.alternative, "allowed": self.allowed,
                "blocking": self.blocking, "direction": self.direction}


@dataclass(frozen=True)
class Table:
    name: str
    rows: int | None  # pg_class.reltuples; None before the first ANALYZE
    bytes: int

    @property
    def large(self) -> bool:
        return self.rows is not None and self.rows >= LARGE_TABLE_ROWS

    def describe(self) -> str:
        rows = f"~{self.rows:,} rows" if self.rows is not None else "rows unknown (never analysed)"
        return f"{self.name}: {rows}, {size(self.bytes)}"


@dataclass(frozen=True)
class Statement:
    """One statement of one of the step's files, as apply (or rollback) would run it."""

    phase: Phase
    direction: Direction
    file: str  # relative to the plan
    migration: Migration
    effect: Effect  # resolved by the catalog
    table: Table | None = None  # size of the table it locks first
    estimate: str | None = None
    rows_touched: int | None = None  # DML: PostgreSQL's estimate of the rows it changes

    @property
    def where(self) -> str:
        return f"{self.file}:{self.effect.line}"

    @property
    def backup(self) -> bool:
        return self.effect.loses_data and self.table is not None

    def as_json(self) -> dict:
        table = None if self.table is None else {"name": self.table.name, "rows": self.table.rows,
                                                  "bytes": self.table.bytes}
        return {"phase": self.phase.value, "direction": self.direction.value, "file": self.file,
                "generated_from": self.migration.origin,
                **self.effect.as_json(), "table_size": table, "estimate": self.estimate,
                "rows_touched": self.rows_touched, "backup_before": self.backup}


@dataclass
class Context:
    plan: Plan
    step: Step
    conn: psycopg.Connection
    pg_version: str  # major
    statements: list[Statement] = field(default_factory=list)
    tables: dict[str, Table | None] = field(default_factory=dict)  # every relation's size, by name

    @property
    def lock_timeout(self) -> int:
        return self.plan.timeouts(self.step).lock


def size(count: float) -> str:
    """Bytes for people: 128.0 kB."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"
