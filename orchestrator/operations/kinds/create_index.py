"""create_index: always CONCURRENTLY, outside a transaction, idempotent (an INVALID leftover of a
killed build is dropped by the runner before the build is retried).
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field

from ...plan_parts import ColumnName, Seq, TableName
from ..base import EXPAND, Compiled, Operation, Part
from ..sql import expr, ident, in_schema


class CreateIndex(Operation):
    """An index built without blocking writes (CREATE INDEX CONCURRENTLY); the rollback drops it
    the same way."""

    op: Literal["create_index"]
    name: ColumnName
    table: TableName
    columns: Seq(ColumnName) = Field(description="the indexed columns, in order")
    unique: bool = False
    where: str | None = Field(None, description="a partial index's condition (SQL)")
    using: Literal["btree", "hash", "gist", "gin", "brin"] = "btree"

    def compile(self) -> Compiled:
        where = sql.SQL(" WHERE {}").format(expr(self.where)) if self.where else sql.SQL("")
        build = sql.SQL("CREATE {}INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING {} ({}){}").format(
            sql.SQL("UNIQUE " if self.unique else ""), ident(self.name), ident(self.table), sql.SQL(self.using),
            sql.SQL(", ").join(ident(c) for c in self.columns), where)
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(in_schema(self.table, self.name))
        return Compiled((Part("index", EXPAND, (build,), (drop,), transactional=False),))
