"""create_index and drop_index: always CONCURRENTLY, outside a transaction, idempotent (an
INVALID leftover of a killed build is dropped by the runner before the build is retried)."""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field

from ..plan_parts import ColumnName, Seq, TableName
from .base import CONTRACT, EXPAND, Compiled, Operation, Part
from .sql import expr, ident


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
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(_qualified(self.table, self.name))
        return Compiled((Part("index", EXPAND, (build,), (drop,), transactional=False),))


class DropIndex(Operation):
    """An index dropped without blocking reads, in the contract phase (the old application may
    still rely on it until then). Its definition is needed to rebuild it on rollback."""

    op: Literal["drop_index"]
    name: ColumnName
    table: TableName
    columns: Seq(ColumnName) = Field(description="the indexed columns, to rebuild it on rollback")
    unique: bool = False
    where: str | None = None
    using: Literal["btree", "hash", "gist", "gin", "brin"] = "btree"

    def compile(self) -> Compiled:
        rebuild = CreateIndex(op="create_index", name=self.name, table=self.table, columns=self.columns,
                              unique=self.unique, where=self.where, using=self.using).compile().parts[0]
        return Compiled((Part("drop_index", CONTRACT, rebuild.rollback, rebuild.apply, transactional=False),))


def _qualified(table: str, name: str) -> sql.Identifier:
    """An index lives in its table's schema."""
    return ident(f"{table.split('.')[0]}.{name}" if "." in table else name)


KINDS = (CreateIndex, DropIndex)
