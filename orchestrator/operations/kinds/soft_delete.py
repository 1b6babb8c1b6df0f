"""soft_delete: rows deleted by marking them, and a view of the live ones for every read.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import ColumnName, Seq, TableName
from .. import names
from ..base import EXPAND, Compiled, Operation, Part, check, merged
from ..sql import ident, in_schema, literal_name
from .add_column import AddColumn


class SoftDelete(Operation):
    """Rows are deleted by marking them: a deletion time `column` (timestamptz) and, with `by`,
    who deleted the row (text) on each table, and a view of each table's live rows that every
    read goes through.

    SQL, expand: `ALTER TABLE t ADD COLUMN deleted_at timestamptz` on each table, then
    `deleted_by text` (nullable, no default: catalog only); then, for each table,
    `CREATE VIEW <view_prefix><table> WITH (security_invoker = true) AS SELECT * FROM t WHERE
    deleted_at IS NULL`, in the table's schema: the view runs with the caller's rights, so
    row-level security still applies to whoever reads it (PostgreSQL 15+). Nothing happens at
    the contract.

    Locks: ACCESS EXCLUSIVE for a moment per ADD COLUMN (catalog only); the views take ACCESS
    SHARE on their tables.

    Both versions: the old application deletes rows and reads the tables, and never sees the
    columns; the new one sets `column` (and `by`) instead of deleting, and reads the views (or
    adds `deleted_at IS NULL`). A view is `SELECT *` as of the expand: a column added to the
    table later is not in it until the view is made again. ON DELETE CASCADE does not fire for
    a row that is only marked.

    Checks: after the expand, each view exists and hides marked rows; with `by`, every stage of
    the step's rollout holds only while every marked row names who marked it.

    Rollback: the views, then the columns, are dropped (rollout backs the tables up first: the
    marks are data).
    """

    op: Literal["soft_delete"]
    tables: Seq(TableName) = Field(description="the tables whose rows are deleted by marking them, in order")
    column: ColumnName = Field("deleted_at", description="when the row was deleted (timestamptz)")
    by: ColumnName | None = Field("deleted_by", description="who deleted it (text); null: no such column")
    view_prefix: str | None = Field("active_", pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$",
                                    description="each table's view of its live rows is named this plus the table's "
                                                "name; null: no views")

    @model_validator(mode="after")
    def _valid(self) -> "SoftDelete":
        if not self.tables:
            raise ValueError("tables needs at least one table")
        if self.by == self.column:
            raise ValueError(f"by and column are both {self.column!r}: name two columns")
        self._columns()  # each AddColumn checks its names
        if self.view_prefix is not None:
            for table in self.tables:
                names.fit(self._view(table))
        return self

    def _columns(self) -> list[AddColumn]:
        return [AddColumn(op="add_column", tables=self.tables, column=column, type=type_)
                for column, type_ in ((self.column, "timestamptz"), (self.by, "text")) if column is not None]

    def _view(self, table: str) -> str:
        return f"{self.view_prefix}{names.bare(table)}"

    def compile(self) -> Compiled:
        marked = sql.SQL("{} IS NOT NULL").format(ident(self.column))
        gates = [] if self.by is None else [check(
            f"{names.bare(t)}_deletions_name_who", f"rows of {literal_name(t)} marked deleted without who did it",
            sql.SQL("SELECT * FROM {} WHERE {} AND {} IS NULL").format(ident(t), marked, ident(self.by)))
            for t in self.tables]
        views = Compiled(gates=tuple(gates))
        if self.view_prefix is not None:
            made = [(in_schema(t, self._view(t)), t) for t in self.tables]
            views = Compiled((Part("live_views", EXPAND, tuple(
                sql.SQL("CREATE VIEW {} WITH (security_invoker = true) AS SELECT * FROM {} WHERE {} IS NULL").format(
                    view, ident(t), ident(self.column)) for view, t in made),
                tuple(sql.SQL("DROP VIEW IF EXISTS {}").format(view) for view, _ in reversed(made))),),
                verify=tuple(check(f"{self._view(t)}_hides_deleted_rows", f"rows {literal_name(self._view(t))} shows "
                                   "that are marked deleted", sql.SQL("SELECT * FROM {} WHERE {}").format(view, marked))
                             for view, t in made), gates=tuple(gates))
        return merged([*(c.compile() for c in self._columns()), views])
