"""drop_column: a column the new application no longer uses, kept for the old application until
the contract drops it, its values kept for the rollback.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import ColumnName, Seq, TableName
from .. import names
from ..base import CONTRACT, EXPAND, Compiled, Operation, Part
from ..column_sql import (add_column, as_described, constant, fits, relax_not_null, restore_not_null, set_default,
                          table_fits)
from ..constraint_sql import key_is_unique, schema_of
from ..restores import restore_job
from ..sql import expr, ident, type_name


class DropColumn(Operation):
    """A column the new application no longer uses, dropped in the contract phase.

    SQL: expand, only for a NOT NULL column without a default (the new application's inserts do
    not name it): `ALTER COLUMN c DROP NOT NULL`. Contract: `ALTER TABLE t DROP COLUMN c`
    (ACCESS EXCLUSIVE for a moment, catalog only; rollout backs the table up with pg_dump first,
    because the statement loses data). Indexes and constraints on the column go with it.

    Both versions: the old application keeps reading and writing the column until the contract;
    the new one ignores it (its inserts get the default, or NULL once NOT NULL is dropped).

    Values: in the drop's transaction, right before it, each row's value (where neither it nor
    its key is NULL) is copied by `key` into `_rollout_dropped_<table>_<column>`, unique on the
    key (CREATE TABLE AS: a read of the table, which blocks no writer), and rollout backs the
    table up with pg_dump as for any drop. That table holds the column's data
    until you drop it (once no rollback is wanted: for a column dropped to forget personal data,
    drop it with the step's last contract).

    Rollback: before the contract, NOT NULL comes back through a CHECK NOT VALID, its validation
    and SET NOT NULL (rows the new application inserted without a value make the validation
    fail: give them one). After the contract the column comes back with `type`, `default` and
    `not_null`: rows get `fill` (a constant, stored in the catalog: no rewrite) or the default,
    else NULL (the restore job's prepare adds it, IF NOT EXISTS); then a job of the backfill
    engine (`restore_rollout_dropped_<table>_<column>`) puts every kept value back in key-range
    batches, each committed with its checkpoint, before the kept table is dropped; rows inserted since keep `fill`. The step's flag stays on until
    then, so the application goes back to the old shape once its values are there. Indexes and
    constraints that went with the column are not rebuilt.
    """

    op: Literal["drop_column"]
    table: TableName
    column: ColumnName
    type: str = Field(description="the column's type, to re-create it on rollback")
    default: str | None = Field(None, description="the column's DEFAULT today, to re-create it on rollback")
    not_null: bool = Field(False, description="whether the column is NOT NULL today")
    fill: str | None = Field(None, description="a constant the existing rows get if the drop is rolled back after "
                                               "the contract (needed for a NOT NULL column without a constant default)")
    key: Seq(ColumnName) = Field(("id",), description="a unique key of the table, by which the values are kept for "
                                                      "a rollback after the contract")

    @model_validator(mode="after")
    def _valid(self) -> "DropColumn":
        table_fits(self.table)
        fits(self.column, "the column name")
        type_name(self.type)
        for text in (self.default, self.fill):
            if text is not None:
                expr(text)
        if self.fill is not None and not constant(self.fill):
            raise ValueError(f"fill {self.fill!r} must be a constant: a volatile value would rewrite the table")
        if self.not_null and self.fill is None and (self.default is None or not constant(self.default)):
            raise ValueError("a NOT NULL column without a constant default needs `fill`: the value its rows get "
                             "if the drop is rolled back after the contract (their values are gone by then; "
                             "the backup holds them)")
        if self.not_null:
            names.not_null_check(self.table, self.column)
        if not self.key or self.column in self.key:
            raise ValueError(f"key needs at least one column, and not {self.column!r} itself")
        names.fit(f"_rollout_dropped_{names.bare(self.table)}_{self.column}")
        return self

    def compile(self) -> Compiled:
        table, column = ident(self.table), ident(self.column)
        kept_name = names.fit(f"_rollout_dropped_{names.bare(self.table)}_{self.column}")
        kept = ident(schema_of(self.table) + kept_name)
        keys = sql.SQL(", ").join(ident(c) for c in self.key)
        relaxed = self.not_null and self.default is None
        expand = relax_not_null(self.table, self.column, EXPAND) if relaxed else ()
        value = self.fill if self.fill is not None else (self.default if self.default and constant(self.default)
                                                         else None)
        # the rollback: the column comes back first (rows read `fill` or the default from the
        # catalog), the kept values go back in batches, then the default and the kept table
        added = add_column(self.table, self.column, self.type, value, again=True)
        index = ident(names.fit(f"{kept_name}_key"))
        restore = restore_job(kept_name, schema_of(self.table) + kept_name, sql.SQL(
            "UPDATE {t} SET {c} = k.value FROM {kept} AS k JOIN batch USING ({keys}) "
            "WHERE ({t_keys}) = ({k_keys})").format(
            t=table, c=column, kept=kept, keys=keys, t_keys=sql.SQL(", ").join(
                sql.SQL("{}.{}").format(table, ident(c)) for c in self.key),
            k_keys=sql.SQL(", ").join(sql.SQL("k.{}").format(ident(c)) for c in self.key)),
            self.key, f"the values of {self.column} kept in {kept_name} put back on {self.table}",
            prepare=(*added, sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(index, kept, keys)))
        back = [*added, *((set_default(self.table, self.column, self.default),) if value != self.default else ()),
                sql.SQL("DROP TABLE {}").format(kept)]
        not_null = restore_not_null(self.table, self.column, CONTRACT) if self.not_null and not relaxed else ()
        # one transaction: the values are copied (a read: writers go on) and the column dropped at once
        drop = Part("drop_column", CONTRACT, (
            # a row with a NULL in its key could not be found again: it keeps `fill` on rollback
            sql.SQL("CREATE TABLE {} AS SELECT {}, {} AS value FROM {} WHERE {}").format(
                kept, keys, column, table, sql.SQL(" AND ").join(
                    sql.SQL("{} IS NOT NULL").format(ident(c)) for c in (self.column, *self.key))),
            sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(index, kept, keys),
            sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(table, column)), tuple(back), restore=restore)
        return Compiled((*expand, *not_null, drop), preconditions=(
            as_described(self.table, self.column, self.type, self.not_null, self.default),
            key_is_unique(self.table, self.key, f"{names.bare(self.table)}_{self.column}")))
