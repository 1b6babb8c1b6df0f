"""add_column: a new column, filled for the rows the table holds (backfill) and for writers that do
not know it (trigger), tightened to NOT NULL or a foreign key at the contract.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import Allowance, ColumnName, Seq, TableName
from .. import names
from ..base import CONTRACT, EXPAND, Compiled, Operation, Part, merged
from ..column_sql import (Statements, add_column, calls, constant, drop_column, fill_job, fits, in_phase, over_row,
                          row_trigger, table_fits, trigger_statements)
from ..constraint_sql import Reference, set_not_null
from ..sql import expr, ident, type_name


def _fill_body(column: str, up_new: sql.Composable, up_old: sql.Composable) -> sql.Composable:
    """One new column computed from the row for writers that do not set it: on INSERT when it is
    NULL; on UPDATE when the writer left it unchanged and it still holds what `up` computed from
    the row before (so it follows the old application's changes, while a value the new
    application wrote, NULL included, stays)."""
    return sql.SQL(
        "    IF TG_OP = 'INSERT' THEN\n"
        "        IF NEW.{c} IS NULL THEN\n"
        "            NEW.{c} := {up_new};\n"
        "        END IF;\n"
        "    ELSIF NEW.{c} IS NOT DISTINCT FROM OLD.{c} AND OLD.{c} IS NOT DISTINCT FROM {up_old} THEN\n"
        "        NEW.{c} := {up_new};\n"
        "    END IF;").format(c=ident(column), up_new=up_new, up_old=up_old)


def _on_update(table: str, column: str, value: sql.Composable) -> tuple[Statements, Statements]:
    """The function and BEFORE UPDATE trigger that set `column` to `value` (over the row being
    written) on every update an application makes, and the statements that drop them. rollout's
    own batches (backfills, restores: orchestrator/backfill.py sets `rollout.backfill`) are not
    such updates: a later step's backfill must not stamp every row as updated."""
    return row_trigger(table, f"{names.bare(table)}_set_{column}", "BEFORE UPDATE",
                       sql.SQL("    NEW.{} := {};").format(ident(column), over_row(value, "NEW", table)),
                       when=sql.SQL("coalesce(current_setting('rollout.backfill', true), '') = ''"))


def _named_after(compiled: Compiled, table: str) -> Compiled:
    """One table's share of an operation over several: its migrations named after the table."""
    return replace(compiled, parts=tuple(replace(p, name=f"{names.bare(table)}_{p.name}") for p in compiled.parts))


class AddColumn(Operation):
    """A new column on a table that holds rows.

    SQL: `ALTER TABLE t ADD COLUMN c type [DEFAULT d]` with a constant default (stored in the
    catalog: no rewrite); a volatile default (gen_random_uuid(), clock_timestamp(), any function
    rollout does not know to be stable) is set after the column (`SET DEFAULT`), and a backfill
    gives the existing rows their own values. `references` adds the foreign key NOT VALID and
    validates it in a transaction of its own. `up` (an expression over the row's other columns)
    adds a BEFORE INSERT OR UPDATE trigger, `_rollout_sync_<table>_<column>`, that fills the
    column for the old application's writes (on INSERT when it is NULL; on UPDATE when the writer
    left it unchanged and it still holds `up` of the row before: a value the new application wrote
    stays, a deliberate NULL included), and a backfill that fills the existing rows. `not_null`
    goes through a CHECK NOT VALID, its validation, then SET NOT NULL (no scan under ACCESS
    EXCLUSIVE); when a backfill fills the column, that happens in the contract phase, after the
    backfill and once the old application (which does not write the column) is gone.
    `on_update` (an expression over the row being written, this column holding what the writer
    left in it) adds a BEFORE UPDATE trigger, `<table>_set_<column>`, that sets the column on
    every update from either application, for good: `updated_at` with `now()`, `updated_by`
    with who acts; rollout's own backfills and restores leave it alone. `tables` instead of `table` adds the same column to each table listed, in
    that order (migrations named after each table).

    Locks: ACCESS EXCLUSIVE for the catalog changes only; SHARE ROW EXCLUSIVE for the triggers and
    the foreign key (both tables); validations take SHARE UPDATE EXCLUSIVE (reads and writes go on).

    Both versions: the old application does not name the column, and its writes get the default
    or `up`; the new one reads and writes it from the expand phase on.

    Rollback: before the contract, the triggers, their functions and the column are dropped (the
    foreign key and the check go with it); after the contract, NOT NULL is dropped and the
    trigger comes back first.
    """

    op: Literal["add_column"]
    table: TableName | None = Field(None, description="the table (or tables)")
    tables: Seq(TableName) = Field((), description="the same column on each of these tables, in order")
    column: ColumnName
    type: str = Field(description="the column's type, as SQL writes it (bigint, varchar(64), uuid[])")
    default: str | None = Field(None, description="a DEFAULT expression; a volatile one is backfilled")
    not_null: bool = Field(False, description="NOT NULL once the rows have values (needs a default or up)")
    references: Reference | None = Field(None, description="a foreign key: {table, column, on_delete}")
    up: str | None = Field(None, description="an SQL expression over the row's other columns: fills existing "
                                             "rows and the old application's writes")
    on_update: str | None = Field(None, description="an SQL expression over the row being updated: the column's "
                                                    "value after every UPDATE (now(), who acts)")

    @model_validator(mode="after")
    def _valid(self) -> "AddColumn":
        if (self.table is None) == (not self.tables):
            raise ValueError("give table or tables (a list of at least one), and not both")
        if len(set(self.tables)) < len(self.tables):
            raise ValueError("a table is listed twice in tables")
        if self.up is not None and self.on_update is not None:
            raise ValueError("give up or on_update, not both: on_update sets the column on every update, up "
                             "only where the writer left it")
        if self.tables:
            for table in self.tables:
                self.model_copy(update={"table": table, "tables": ()})._valid()
            return self
        table_fits(self.table)
        fits(self.column, "the column name")
        type_name(self.type)
        if self.default is not None and self.up is not None:
            raise ValueError("give default or up, not both: up fills the rows, a default would fill them first")
        if self.not_null and self.default is None and self.up is None:
            raise ValueError("not_null needs a default or up: the rows the table holds, and those the old "
                             "application inserts, would have no value")
        for text in (self.default, self.up, self.on_update):
            if text is not None:
                expr(text)
        if self.on_update is not None:
            names.fit(f"{names.bare(self.table)}_set_{self.column}")
        if self.references is not None:
            table_fits(self.references.table)
            fits(self.references.column, "the referenced column")
            self._foreign_key()
        if self.up is not None:
            names.sync_trigger(self.table, self.column)
        if self.not_null:
            names.not_null_check(self.table, self.column)
        return self

    def _foreign_key(self) -> str:
        return names.fit(f"{names.bare(self.table)}_{self.column}_fkey")

    def compile(self) -> Compiled:
        if self.tables:
            return merged([_named_after(self.model_copy(update={"table": t, "tables": ()}).compile(), t)
                           for t in self.tables])
        table, column = ident(self.table), ident(self.column)
        stored = self.default is not None and constant(self.default) and calls(self.default)
        expand = [Part("add_column", EXPAND, add_column(self.table, self.column, self.type, self.default),
                       (drop_column(self.table, self.column),), allows=(Allowance(
                           rule="adding-field-with-default", reason=f"the DEFAULT calls only {', '.join(calls(self.default))}, "
                           "which are not volatile: PostgreSQL 11+ keeps its one value in the catalog for the rows the "
                           "table holds, without a rewrite"),) if stored else ())]
        contract: list[Part] = []
        backfills = []
        if self.default is not None and not constant(self.default):
            backfills.append(fill_job("fill", self.table, self.column, expr(self.default),
                                      sql.SQL("{} IS NULL").format(column)))
        if self.up is not None:
            up = expr(self.up)
            create, drop = trigger_statements(self.table, self.column, _fill_body(
                self.column, over_row(up, "NEW", self.table), over_row(up, "OLD", self.table)))
            expand.append(Part("fill_trigger", EXPAND, create, drop))
            contract.append(Part("drop_fill_trigger", CONTRACT, drop, create))
            backfills.append(fill_job("fill", self.table, self.column, up, sql.SQL("{} IS NULL").format(column)))
        if self.on_update is not None:
            create, drop = _on_update(self.table, self.column, expr(self.on_update))
            expand.append(Part("on_update_trigger", EXPAND, create, drop))
        if self.references is not None:
            key, ref = ident(self._foreign_key()), self.references
            add = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {} "
                          "NOT VALID").format(table, key, column, ident(ref.table), ident(ref.column),
                                              sql.SQL(ref.on_delete.upper()))
            expand += [Part("foreign_key", EXPAND, (add,),
                            (sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(table, key),)),
                       Part("validate_foreign_key", EXPAND,
                            (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(table, key),))]
        if self.not_null:
            # after the backfill when there is one: apply runs backfills after every expand migration
            phase = CONTRACT if backfills else EXPAND
            parts = in_phase(set_not_null(self.table, self.column).parts, phase)
            if phase == CONTRACT:
                contract = [*parts, *contract]
            else:
                expand += parts
        return Compiled(tuple(expand + contract), backfills=tuple(backfills))
