"""sql: the escape hatch, SQL written by hand inside a step of operations, with its rollback."""

from __future__ import annotations

from typing import Literal

import pglast
from psycopg import sql
from pydantic import Field, model_validator

from .base import CONTRACT, EXPAND, Compiled, Operation, Part


def statements(text: str, what: str) -> tuple[sql.Composable, ...]:
    """The statements of `text` as PostgreSQL's parser splits them (comments dropped), or a
    ValueError naming `what` and the parser's complaint."""
    try:
        pglast.parse_sql(text)
        split = pglast.split(text, with_parser=True)
    except pglast.parser.ParseError as exc:
        raise ValueError(f"{what} is not SQL PostgreSQL can parse: {exc}") from None
    return tuple(sql.SQL(part) for part in split)  # noqa: S608 - the plan's own SQL, parsed above


class Sql(Operation):
    """SQL written by hand, for what no other operation says: `up` runs as a migration of its
    own in the phase given (expand by default, or contract), `down` is its rollback, statements
    run in the order written.

    SQL: exactly `up` and `down`, split into statements by PostgreSQL's parser (which must read
    both). Locks: whatever the statements take; `rollout plan` shows each one's locks and the
    lint judges them like any migration's (a blocking finding stops apply unless the step allows
    the rule). Both versions: keeping the old application working is up to the SQL. Rollback:
    `down` ('' when there is nothing to undo). `transactional: false` runs the statements one by
    one outside a transaction (for CREATE INDEX CONCURRENTLY and the like: make them idempotent);
    BEGIN, COMMIT and the like are refused when the plan is loaded, with their line, since
    rollout commits each migration with its bookkeeping."""

    op: Literal["sql"]
    up: str = Field(description="the statements to run")
    down: str = Field(description="the statements that undo them, in the order they run ('' for nothing)")
    phase: Literal["expand", "contract"] = "expand"
    transactional: bool = True

    @model_validator(mode="after")
    def _parses(self) -> "Sql":
        if not statements(self.up, "up"):
            raise ValueError("up holds no statement")
        statements(self.down, "down")
        return self

    def compile(self) -> Compiled:
        return Compiled((Part("sql", EXPAND if self.phase == "expand" else CONTRACT, statements(self.up, "up"),
                              statements(self.down, "down"), transactional=self.transactional),))


KINDS = (Sql,)
