"""rename_column: a new name for a column, both names working while the rollout runs.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import ColumnName, Seq, TableName
from .. import names
from ..base import CONTRACT, EXPAND, Compiled, Operation, Part
from ..column_sql import (add_column, as_described, drop_column, fill_job, fits, in_phase, restore_not_null,
                          set_default, sync_body, table_fits, trigger_statements)
from ..constraint_sql import set_not_null
from ..rebuilt_indexes import RebuiltIndex, goes_with_the_column, index_renames, indexes_fit, new_indexes, old_indexes
from ..restores import column_back
from ..sql import expr, ident, type_name


class RenameColumn(Operation):
    """A column under a new name, readable and writable under both names during the rollout, for
    applications that never set search_path (no view in front of the table).

    SQL: expand adds the column `to` (`type`, no default: a value in it was written by the new
    application), a BEFORE INSERT OR UPDATE trigger, `_rollout_sync_<table>_<column>`, that keeps
    the two in step both ways (on UPDATE it compares OLD and NEW to tell which side wrote; on
    INSERT a value in `to` wins, else `to` gets the old column's value), and the column's
    `indexes` on `to` (CONCURRENTLY, under temporary names); a backfill copies the existing rows
    (`set: {to: column}`, where they differ). Contract: `to` gets NOT NULL (CHECK NOT VALID,
    validated, SET NOT NULL) when the column has it; then one short transaction drops the
    trigger, its function and the old column (rollout backs the table up first), gives `to` the
    default and the indexes their names. A precondition refuses to start while the column has
    constraints (they would go with it) or indexes `indexes` does not list.

    Locks: ACCESS EXCLUSIVE for the catalog changes only; SHARE ROW EXCLUSIVE for the trigger;
    SHARE UPDATE EXCLUSIVE for the validation and the index builds (reads and writes go on).

    Both versions: the old application reads and writes `column`, the new one `to`; each sees the
    other's writes in its own column.

    Rollback: before the contract, the indexes, the trigger, its function and `to` are dropped.
    After the contract (the flag stays on meanwhile, so the application keeps writing `to`), the
    old column is rebuilt under `_rollout_old_<column>`, kept current by a trigger and filled from
    `to` by a job of the backfill engine (`restore_<table>_<column>`, in batches, each committed
    with its checkpoint); then one short transaction gives it its name and default and brings
    the sync trigger back; NOT NULL returns through the validated CHECK and the indexes are
    built again, concurrently.
    """

    op: Literal["rename_column"]
    table: TableName
    column: ColumnName
    to: ColumnName
    type: str = Field(description="the column's type (the new column is created with it)")
    default: str | None = Field(None, description="the column's DEFAULT today: `to` takes it at the contract")
    not_null: bool = Field(False, description="whether the column is NOT NULL today: `to` becomes so at the contract")
    indexes: Seq(RebuiltIndex) = Field((), description="the column's indexes, built again on `to`")

    @model_validator(mode="after")
    def _valid(self) -> "RenameColumn":
        table_fits(self.table)
        fits(self.column, "the column name")
        fits(self.to, "the new column name")
        type_name(self.type)
        if self.default is not None:
            expr(self.default)
        if self.to == self.column:
            raise ValueError("to names the column itself")
        names.sync_trigger(self.table, self.column)
        names.old_column(self.column), names.back_trigger(self.table, self.column)
        indexes_fit(self.indexes)
        if self.not_null:
            names.not_null_check(self.table, self.column)
            names.not_null_check(self.table, self.to)
        return self

    def compile(self) -> Compiled:
        table, column, to = self.table, ident(self.column), ident(self.to)
        body = sync_body(self.column, self.to, sql.SQL("NEW.{}").format(column), sql.SQL("NEW.{}").format(to))
        create, drop = trigger_statements(table, self.column, body)
        expand = (Part("add_column", EXPAND, add_column(table, self.to, self.type, None), (drop_column(table, self.to),)),
                  Part("sync_trigger", EXPAND, create, drop),
                  *new_indexes(table, self.column, self.to, self.indexes))
        contract = (*old_indexes(table, self.indexes),)
        if self.not_null:
            contract += (*in_phase(set_not_null(table, self.to).parts, CONTRACT),
                         *restore_not_null(table, self.column, CONTRACT))
        rebuilt = column_back(table, self.column, self.type, lambda row: sql.SQL("{}.{}").format(row, to), None,
                              self.to)
        default = (set_default(table, self.to, self.default),) if self.default is not None else ()
        swap = Part("drop_old_column", CONTRACT,
                    (*drop, sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(ident(table), column), *default,
                     *index_renames(table, self.indexes)),
                    (*index_renames(table, self.indexes, back=True),
                     *((set_default(table, self.to, None),) if default else ()), *rebuilt.swap_in,
                     *((set_default(table, self.column, self.default),) if default else ()), *create),
                    restore=rebuilt.restore, allows=rebuilt.allows)
        return Compiled(
            (*expand, *contract, swap),
            backfills=(fill_job("copy", table, self.to, column, sql.SQL("{} IS DISTINCT FROM {}").format(to, column)),),
            preconditions=(as_described(table, self.column, self.type, self.not_null, self.default),
                           goes_with_the_column(table, self.column, self.indexes)))
