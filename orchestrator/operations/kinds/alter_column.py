"""alter_column: a column's type, nullability, default or constraints changed through a shadow
column that both applications keep in step until the contract swaps it in.
"""

from __future__ import annotations

from typing import Literal

import pglast
from pglast.visitors import Visitor
from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import Allowance, Check, ColumnName, Seq, TableName
from .. import names
from ..base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from ..column_sql import (add_column, as_described, drop_column, fill_job, fits, in_phase, job_label, over_row,
                          relax_not_null, restore_not_null, set_default, sync_body, table_fits, trigger_statements)
from ..constraint_sql import Remediation, as_json, kept_originals, key_is_unique, schema_of, set_not_null
from ..rebuilt_indexes import RebuiltIndex, goes_with_the_column, index_renames, indexes_fit, new_indexes, old_indexes
from ..restores import column_back
from ..sql import expr, ident, literal_name, type_name


def _names_columns(expression: str) -> set[str]:
    """The column names an expression reads (their last part: `t.c` reads c)."""
    found: set[str] = set()

    class Columns(Visitor):
        def visit_ColumnRef(self, ancestors, node):
            last = node.fields[-1]
            if hasattr(last, "sval"):
                found.add(last.sval)

    Columns()(pglast.parse_sql(f"SELECT ({expression})"))
    return found


def _rename_column(table: str, column: str, to: str) -> sql.Composable:
    return sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(ident(table), ident(column), ident(to))


def _as(expression: sql.Composable, value: sql.Composable, column: str, table: str) -> sql.Composable:
    """`expression` evaluated with `column` standing for `value` (a down conversion reads the new
    value under the column's own name)."""
    return sql.SQL("(SELECT ({}) FROM (SELECT {} AS {}) AS {})").format(expression, value, ident(column),
                                                                       ident(names.bare(table)))


def _no_nulls(table: str, column: str) -> Check:
    return check(f"{names.bare(table)}_{column}_has_no_nulls", f"rows where {literal_name(column)} is NULL",
                 sql.SQL("SELECT * FROM {} WHERE {} IS NULL").format(ident(table), ident(column)))


class AlterColumn(Operation):
    """A column's type, NOT NULL or default, changed while both versions run.

    Without `type` (catalog changes, no scan under a lock that blocks writes): `default` is set or
    dropped in the expand phase (rollback: `from_default` again); `not_null: false` drops NOT NULL
    in the expand phase, so the new application may write NULL (rollback: NOT NULL again through
    a CHECK NOT VALID, validated, SET NOT NULL, which fails on NULLs written meanwhile);
    `not_null: true` is added in the contract phase, through the same CHECK route, once the old
    application (which may still write NULL) is gone (rollback: DROP NOT NULL).

    With `type` (`from_type` is the type today): expand adds the shadow column `_rollout_<column>`
    of the new type, a BEFORE INSERT OR UPDATE trigger that keeps the two in step both ways,
    converting with `up` (old to new, default `column::type`) and `down` (new to old, default
    `column::from_type`), and the column's `indexes` on the shadow column (CONCURRENTLY, under
    temporary names). `up` may read the row's other columns, as the backfill does, but the
    trigger converts again only when the column itself changes; `down` reads the column alone. On UPDATE the trigger compares OLD and NEW to tell which side wrote; a NULL
    the new application writes is kept, and a value that already agrees is left alone (so a lossy
    `up`, ' 12 ' to 12, never rewrites the old value). A backfill fills the shadow column for the
    existing rows; a value `up` cannot convert stops it with the row's key (fix the row, then
    `rollout apply` continues from the checkpoint), and an old-application write of such a value
    fails in the trigger, as a value the old type cannot hold fails for the new application. The
    new application reads and writes the shadow column during the rollout, and the column's own
    name after the contract, like the enum swaps of the bot's plan. Contract: NOT NULL is added to
    the shadow column through the CHECK route; then one short transaction drops the trigger and
    the old column, renames the shadow column and the indexes to the old names and sets the
    default (the operation's Part accepts the lint's renaming-column for that one migration, with
    this reason). Indexes and constraints on the old column go with it: a precondition refuses to
    start while the column has constraints (primary key, unique, foreign keys either way, checks)
    or indexes that `indexes` does not rebuild. On PostgreSQL 18 the NOT NULL constraint keeps the
    name it got on the shadow column.

    Locks: ACCESS EXCLUSIVE for the catalog changes only; SHARE ROW EXCLUSIVE for the trigger;
    SHARE UPDATE EXCLUSIVE for the validation and the index builds (reads and writes go on).

    Rollback of a type change: before the contract, the trigger, its function and the shadow
    column are dropped. After the contract (the flag stays on meanwhile), the old column is
    rebuilt under `_rollout_old_<column>` with `down` of the column, kept current by a trigger
    and filled by a job of the backfill engine (`restore_<table>_<column>`, in batches by the
    primary key, or `key` when given; a value `down` cannot convert stops it with the row's key);
    then one short transaction renames the column back to the shadow name and the rebuilt one to
    the column's, and the sync trigger and the old column's NOT NULL and indexes come back.
    """

    op: Literal["alter_column"]
    table: TableName
    column: ColumnName
    type: str | None = Field(None, description="the new type")
    from_type: str | None = Field(None, description="the type today (needed with type)")
    up: str | None = Field(None, description="old value to new: an SQL expression, default column::type")
    down: str | None = Field(None, description="new value to old (the column's name is the new value), "
                                               "default column::from_type")
    not_null: bool | None = Field(None, description="NOT NULL afterwards (default: as today)")
    from_not_null: bool | None = Field(None, description="NOT NULL today (default: the opposite of not_null "
                                                         "without a type change, else false)")
    default: str | None = Field(None, description="the DEFAULT afterwards; null drops it (default: as today)")
    from_default: str | None = Field(None, description="the DEFAULT today, to restore it on rollback")
    indexes: Seq(RebuiltIndex) = Field((), description="indexes on the column to rebuild on the new type")
    key: Seq(ColumnName) = Field(("id",), description="with not_null and up, no type: a unique key of the table, "
                                                      "by which the NULLs' rows are kept for the rollback; with "
                                                      "type, when given: the key the rollback after the contract "
                                                      "batches by (default there: the primary key)")

    @model_validator(mode="after")
    def _valid(self) -> "AlterColumn":
        table_fits(self.table)
        fits(self.column, "the column name")
        for text in (self.type, self.from_type):
            if text is not None:
                type_name(text)
        for text in (self.up, self.down, self.default, self.from_default):
            if text is not None:
                expr(text)
        if self.type is None:
            given = [f for f in ("from_type", "down") if getattr(self, f) is not None] + \
                (["indexes"] if self.indexes else [])
            if given:
                raise ValueError(f"{', '.join(given)} only go with a type change (type)")
            if self.up is not None and not self.fills_nulls:
                raise ValueError("up goes with a type change (type), or with not_null: true on a column that "
                                 "is nullable today (it fills the NULLs)")
            if self.fills_nulls:
                if not self.key:
                    raise ValueError("key needs at least one column")
                if self.column in self.key:
                    raise ValueError(f"the key cannot be the column {self.column!r} itself: its NULLs change")
                names.sync_trigger(self.table, self.column)
                names.fit(f"_rollout_nulls_{names.bare(self.table)}_{self.column}")
            if self.after_not_null == self.before_not_null and self.after_default == self.from_default:
                raise ValueError("alter_column changes nothing: give type, not_null or default")
        else:
            if self.from_type is None:
                raise ValueError("a type change needs from_type, the type today: the rollback restores it")
            others = _names_columns(self.down) - {self.column} if self.down else set()
            if others:
                raise ValueError(f"down converts the new value back and may read only the column {self.column!r} "
                                 f"(it names {', '.join(sorted(others))})")
            names.shadow(self.column)
            names.sync_trigger(self.table, self.column)
            names.old_column(self.column), names.back_trigger(self.table, self.column)
            indexes_fit(self.indexes)
        if self.after_not_null:
            names.not_null_check(self.table, self.column if self.type is None else names.shadow(self.column))
        if self.before_not_null:
            names.not_null_check(self.table, self.column)
        return self

    @property
    def before_not_null(self) -> bool:
        if self.from_not_null is not None:
            return self.from_not_null
        return (not self.not_null) if self.not_null is not None and self.type is None else False

    @property
    def after_not_null(self) -> bool:
        return self.before_not_null if self.not_null is None else self.not_null

    @property
    def fills_nulls(self) -> bool:
        """NOT NULL on a nullable column, its NULLs filled with `up` (no type change)."""
        return self.type is None and self.up is not None and self.after_not_null and not self.before_not_null

    @property
    def after_default(self) -> str | None:
        return self.default if "default" in self.model_fields_set else self.from_default

    def compile(self) -> Compiled:
        preconditions = [as_described(self.table, self.column, self.from_type, self.before_not_null,
                                      self.from_default)]
        if self.after_not_null and not self.before_not_null and not self.fills_nulls:
            preconditions.append(_no_nulls(self.table, self.column))
        if self.fills_nulls:
            return self._filled(tuple(preconditions))
        if self.type is None:
            return self._in_place(tuple(preconditions))
        preconditions.append(goes_with_the_column(self.table, self.column, self.indexes))
        return self._swap(tuple(preconditions))

    def _in_place(self, preconditions: tuple[Check, ...]) -> Compiled:
        parts: list[Part] = []
        if self.after_default != self.from_default:
            parts.append(Part("default", EXPAND, (set_default(self.table, self.column, self.after_default),),
                              (set_default(self.table, self.column, self.from_default),)))
        if self.before_not_null and not self.after_not_null:
            parts += relax_not_null(self.table, self.column, EXPAND)
        if self.after_not_null and not self.before_not_null:
            parts += in_phase(set_not_null(self.table, self.column).parts, CONTRACT)
        return Compiled(tuple(parts), preconditions=preconditions)

    def _filled(self, preconditions: tuple[Check, ...]) -> Compiled:
        """NOT NULL on a column with NULLs: `up` fills them. Expand: a table (`_rollout_nulls_*`) keeping the original
        NULLs (by `key`) and a trigger that fills a NULL either application writes (keeping its
        original too); a backfill fills the rows the table holds, in key-range batches. Contract:
        NOT NULL through a validated CHECK, then the trigger goes. Rollback: the NULLs come back."""
        table, column, bare = self.table, ident(self.column), names.bare(self.table)
        up = expr(self.up)
        is_null = sql.SQL("{} IS NULL").format(column)
        kept_name = f"_rollout_nulls_{bare}_{self.column}"  # not convert_to_enum's _rollout_originals_
        keep, backfill = kept_originals(table, kept_name, Remediation(set={self.column: self.up}, key=self.key), is_null,
                                        job_label("fill", bare, self.column), f"NULLs of {self.column} filled with up")
        originals = ident(schema_of(table) + names.fit(kept_name))
        create, drop = trigger_statements(table, self.column, sql.SQL(
            "    IF NEW.{c} IS NULL THEN\n"
            "        INSERT INTO {orig} (key, original) VALUES ({key}, {original}) ON CONFLICT (key) DO NOTHING;\n"
            "        NEW.{c} := {up};\n"
            "    END IF;").format(c=column, orig=originals, key=as_json(self.key, "NEW"),
                                  original=as_json((self.column,), "NEW"), up=over_row(up, "NEW", table)), definer=True)
        default = ([Part("default", EXPAND, (set_default(table, self.column, self.after_default),),
                         (set_default(table, self.column, self.from_default),))]
                   if self.after_default != self.from_default else [])
        parts = [*default, keep, Part("fill_trigger", EXPAND, create, drop),
                 *in_phase(set_not_null(table, self.column).parts, CONTRACT), Part("drop_fill_trigger", CONTRACT, drop, create)]
        unfillable = sql.SQL("SELECT * FROM {} AS {} WHERE {} AND ({}) IS NULL").format(
            ident(table), ident(bare), is_null, up)
        return Compiled(tuple(parts), backfills=(backfill,), preconditions=(*preconditions, check(
            f"{bare}_{self.column}_fillable", f"rows where {self.column} is NULL and up gives NULL too", unfillable),
            key_is_unique(table, self.key, f"{bare}_{self.column}")), verify=(_no_nulls(table, self.column),))

    def _swap(self, preconditions: tuple[Check, ...]) -> Compiled:
        table, name, shadow_name = self.table, self.column, names.shadow(self.column)
        column, shadow = ident(name), ident(shadow_name)
        up = expr(self.up) if self.up else sql.SQL("{}::{}").format(column, type_name(self.type))
        down = expr(self.down) if self.down else sql.SQL("{}::{}").format(column, type_name(self.from_type))
        create, drop = trigger_statements(table, name, sync_body(
            name, shadow_name, over_row(up, "NEW", table), _as(down, sql.SQL("NEW.{}").format(shadow), name, table)))
        expand = [Part("shadow_column", EXPAND, add_column(table, shadow_name, self.type, None),
                       (drop_column(table, shadow_name),)),
                  Part("sync_trigger", EXPAND, create, drop)]
        if self.before_not_null and not self.after_not_null:
            expand += relax_not_null(table, name, EXPAND)  # the new application may write NULL
        expand += new_indexes(table, name, shadow_name, self.indexes)
        contract = list(old_indexes(table, self.indexes))
        if self.after_not_null:
            contract += in_phase(set_not_null(table, shadow_name).parts, CONTRACT)
        if self.before_not_null and self.after_not_null:
            contract += restore_not_null(table, name, CONTRACT)
        rebuilt = column_back(table, name, self.from_type,
                              lambda row: _as(down, sql.SQL("{}.{}").format(row, column), name, table),
                              self.key if "key" in self.model_fields_set else None, name)
        default = self.after_default
        swap = Part(
            "swap", CONTRACT,
            (*drop, sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(ident(table), column),
             _rename_column(table, shadow_name, name),
             *((set_default(table, name, default),) if default is not None else ()),
             *index_renames(table, self.indexes)),
            (*index_renames(table, self.indexes, back=True),
             *((set_default(table, name, None),) if default is not None else ()),
             _rename_column(table, name, shadow_name), *rebuilt.swap_in,
             *((set_default(table, name, self.from_default),) if self.from_default is not None else ()), *create),
            restore=rebuilt.restore,
            allows=(Allowance(rule="renaming-column", reason="the swap of alter_column: the shadow column takes the column's name in the "
                     "transaction that drops the old column, once the old application is gone (the flag is at 100%); "
                     "the new one reads the shadow column during the rollout and the column's own name after the "
                     "contract. Its rollback renames it back in the transaction that restores the old column"),))
        backfill = fill_job("convert", table, shadow_name, up,
                            sql.SQL("{} IS NULL AND {} IS NOT NULL").format(shadow, column))
        return Compiled((*expand, *contract, swap), backfills=(backfill,), preconditions=preconditions)
