"""add_column, drop_column, rename_column and alter_column: a column changes while the old
application (which knows the old shape) and the new one (which knows the new shape) both run.

The expand phase only adds: a column, a trigger that fills it for writers that do not know it, a
backfill (orchestrator/backfill.py: key-range batches, resumable) that fills the rows the table
already holds. The contract phase, once the flag has reached 100% and the old application is gone,
removes what only the old shape needed and tightens what the new one promises (NOT NULL).

No statement rewrites a table or scans it while writes wait: ADD COLUMN without a volatile default
(PostgreSQL 11+ stores a constant default once, in the catalog), NOT NULL through a CHECK added NOT
VALID and validated (constraints._not_null), foreign keys NOT VALID then validated, indexes built
CONCURRENTLY. The statements that remain take ACCESS EXCLUSIVE for a moment only (catalog changes),
under rollout's lock_timeout and retries.

Triggers evaluate an operator's expression over the row being written with the row's columns by
their names, `(SELECT (expression) FROM (SELECT NEW.*) AS table)`, so the expression means in the
trigger what it means in the backfill's UPDATE. Everything that names a table, a column or a type
goes through psycopg.sql (`ident`, `type_name`), expressions through `expr` (one expression,
checked by PostgreSQL's parser).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Literal

import pglast
from pglast.visitors import Visitor
from psycopg import sql
from pydantic import Field, model_validator

from ..analysis.alter_table import NOT_VOLATILE, ROLLOUT_STABLE
from ..plan_parts import Allowance, Backfill, Check, ColumnName, Seq, TableName, _Model
from . import names
from .base import CONTRACT, EXPAND, Compiled, Operation, Part, check, merged
from .constraints import Remediation, _not_null, _schema_of, as_json, kept_originals, key_is_unique
from .restores import column_back, restore_job
from .sql import dollar_quoted, expr, ident, in_schema, literal_name, render, type_name

# -- names and expressions ------------------------------------------------------------------------

def _fits(name: str, what: str) -> str:
    """A name PostgreSQL keeps whole: past 63 bytes it is cut silently, which would make the
    operation create or look for another object than the plan says."""
    if len(name.encode()) > names.MAX:
        raise ValueError(f"{what} {name!r} is longer than PostgreSQL's {names.MAX} bytes "
                         f"({len(name.encode())}): PostgreSQL would cut it; choose a shorter name")
    return name


def _table_fits(table: str) -> None:
    for part in table.split("."):
        _fits(part, "the table name")


def _calls(expression: str) -> list[str]:
    """The functions an expression calls, schema-qualified as written (CURRENT_TIMESTAMP and its
    kind count as now())."""
    found: list[str] = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors, node):
            found.append(".".join(part.sval.lower() for part in node.funcname))

        def visit_SQLValueFunction(self, ancestors, node):
            found.append("now")

    Calls()(pglast.parse_sql(f"SELECT ({expression})"))
    return found


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


def _constant(default: str) -> bool:
    """Whether a DEFAULT has one value for every row of an ALTER TABLE (stored once in the
    catalog, no rewrite): it calls only functions the analysis knows not to be volatile. Any
    other, one rollout does not know included, counts as volatile: the safe side (the column is
    added without it and a backfill fills the rows)."""
    return all(name in NOT_VOLATILE or name in ROLLOUT_STABLE for name in _calls(default))


def _label(*words: str) -> str:
    """A backfill's name from a table and a column: lowercase letters, digits, '_', 63 at most."""
    label = re.sub(r"[^a-z0-9_]+", "_", "_".join(words).lower()).strip("_")[:63]
    return label if label[:1].isalpha() else f"b_{label}"[:63]


# -- statements -----------------------------------------------------------------------------------

def _add_column(table: str, column: str, type_: str, default: str | None, *,
                again: bool = False) -> tuple[sql.Composable, ...]:
    """ADD COLUMN without a table rewrite: a constant DEFAULT goes with the column (existing rows
    read it from the catalog), a volatile one is set after it and applies to new rows only.
    `again`: IF NOT EXISTS, for a statement that may run twice."""
    add = sql.SQL("ALTER TABLE {} ADD COLUMN {}{} {}").format(
        ident(table), sql.SQL("IF NOT EXISTS " if again else ""), ident(column), type_name(type_))
    if default is None:
        return (add,)
    if _constant(default):
        return (sql.SQL("{} DEFAULT {}").format(add, expr(default)),)
    return (add, _set_default(table, column, default))


def _set_default(table: str, column: str, default: str | None) -> sql.Composable:
    if default is None:
        return sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(ident(table), ident(column))
    return sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(ident(table), ident(column), expr(default))


def _drop_column(table: str, column: str) -> sql.Composable:
    return sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(ident(table), ident(column))


def _rename_column(table: str, column: str, to: str) -> sql.Composable:
    return sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(ident(table), ident(column), ident(to))


def _rename_index(table: str, name: str, to: str) -> sql.Composable:
    return sql.SQL("ALTER INDEX {} RENAME TO {}").format(in_schema(table, name), ident(to))


def _rollback_only(parts: tuple[Part, ...], phase: str) -> tuple[Part, ...]:
    """Parts that change nothing on apply and run `parts`' statements, in their order and each
    in its own migration, when the step is rolled back (a rollback runs migrations in reverse)."""
    return tuple(replace(p, name=f"restore_{p.name}", phase=phase, apply=(), rollback=p.apply) for p in reversed(parts))


def _restore_not_null(table: str, column: str, phase: str) -> tuple[Part, ...]:
    """NOT NULL brought back on rollback the way that does not scan under ACCESS EXCLUSIVE: a CHECK
    added NOT VALID, validated, then SET NOT NULL (the parts go before the part whose rollback
    re-creates the column)."""
    return _rollback_only(_not_null(table, column).parts, phase)


def _relax_not_null(table: str, column: str, phase: str) -> tuple[Part, ...]:
    """DROP NOT NULL (catalog only), undone through the validated CHECK route."""
    drop = sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(ident(table), ident(column))
    return (Part("drop_not_null", phase, (drop,)), *_restore_not_null(table, column, phase))


def _over(expression: sql.Composable, record: str, table: str) -> sql.Composable:
    """`expression` evaluated over the trigger's NEW or OLD row, with the row's columns by their
    names (and the table's name as the row's alias), as in the backfill's UPDATE."""
    return sql.SQL("(SELECT ({}) FROM (SELECT {}.*) AS {})").format(expression, sql.SQL(record),
                                                                    ident(names.bare(table)))


def _as(expression: sql.Composable, value: sql.Composable, column: str, table: str) -> sql.Composable:
    """`expression` evaluated with `column` standing for `value` (a down conversion reads the new
    value under the column's own name)."""
    return sql.SQL("(SELECT ({}) FROM (SELECT {} AS {}) AS {})").format(expression, value, ident(column),
                                                                       ident(names.bare(table)))


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


def _sync_body(old: str, new: str, up: sql.Composable, down: sql.Composable) -> sql.Composable:
    """Two columns kept in step both ways: `old` written by the old application, `new` by the new
    one. The new column has no default and the old application never names it, so a value in it
    was written by the new application: on INSERT a non-NULL new value wins (the old column gets
    `down` of it, unless it already maps to it), else the new column gets `up` of the old. On
    UPDATE, comparing OLD and NEW tells which side wrote: a changed new column goes down (a NULL
    included), else a changed old column goes up. A write that already agrees (the backfill's,
    `up` of the old value) is left as it is, so a lossy conversion never rewrites the old value."""
    return sql.SQL(
        "    IF TG_OP = 'INSERT' THEN\n"
        "        IF NEW.{n} IS NULL THEN\n"
        "            NEW.{n} := {up};\n"
        "        ELSIF NEW.{n} IS DISTINCT FROM {up} THEN\n"
        "            NEW.{o} := {down};\n"
        "        END IF;\n"
        "    ELSIF NEW.{n} IS DISTINCT FROM OLD.{n} THEN\n"
        "        IF NEW.{n} IS DISTINCT FROM {up} THEN\n"
        "            NEW.{o} := {down};\n"
        "        END IF;\n"
        "    ELSIF NEW.{o} IS DISTINCT FROM OLD.{o} THEN\n"
        "        NEW.{n} := {up};\n"
        "    END IF;").format(o=ident(old), n=ident(new), up=up, down=down)


def _trigger(table: str, column: str, body: sql.Composable,
             definer: bool = False) -> tuple[tuple[sql.Composable, ...], tuple[sql.Composable, ...]]:
    """The statements that create the sync function and its BEFORE INSERT OR UPDATE row trigger,
    and those that drop them. The body is PL/pgSQL composed like any other SQL here, dollar-quoted
    with a tag it does not contain; `#variable_conflict use_column` makes a column named like a
    PL/pgSQL variable (found) mean the column."""
    function = in_schema(table, names.sync_function(table, column))
    trigger = ident(names.sync_trigger(table, column))
    # a body that writes rollout's own tables runs as their owner, with the search_path of its
    # creation: the application's role needs no grant, and cannot redirect the names it uses
    security = sql.SQL(" SECURITY DEFINER SET search_path FROM CURRENT" if definer else "")
    create = sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql{} AS {}").format(
        function, security, dollar_quoted(sql.SQL("#variable_conflict use_column\nBEGIN\n{}\n    RETURN NEW;\nEND").format(
            body)))
    attach = sql.SQL("CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
        trigger, ident(table), function)
    drop = (sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, ident(table)),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function))
    return (create, attach), drop


def _on_update(table: str, column: str, value: sql.Composable) -> tuple[tuple[sql.Composable, ...], tuple[sql.Composable, ...]]:
    """The function and BEFORE UPDATE trigger that set `column` to `value` (over the row being
    written) on every update, and the statements that drop them."""
    name = f"{names.bare(table)}_set_{column}"
    function, trigger = in_schema(table, name), ident(name)
    body = sql.SQL("#variable_conflict use_column\nBEGIN\n    NEW.{} := {};\n    RETURN NEW;\nEND").format(
        ident(column), _over(value, "NEW", table))
    create = (sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(function, dollar_quoted(body)),
              sql.SQL("CREATE TRIGGER {} BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
                  trigger, ident(table), function))
    drop = (sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, ident(table)),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function))
    return create, drop


def _named_after(compiled: Compiled, table: str) -> Compiled:
    """One table's share of an operation over several: its migrations named after the table."""
    return replace(compiled, parts=tuple(replace(p, name=f"{names.bare(table)}_{p.name}") for p in compiled.parts))


def _backfill(verb: str, table: str, column: str, value: sql.Composable, where: sql.Composable) -> Backfill:
    return Backfill(name=_label(verb, names.bare(table), column), table=table,
                    description=f"{verb} {literal_name(table)}.{literal_name(column)} for the rows the table holds",
                    set={column: render(value)}, where=render(where))


def _as_described(table: str, column: str, type_: str | None, not_null: bool, default: str | None) -> Check:
    """The column as the operation says it is today (what its rollback restores): present, of
    that type (typmods aside), NOT NULL or not, with a default or without."""
    t, c = sql.Literal(literal_name(table)), sql.Literal(column)
    conditions = [sql.SQL("a.attnum IS NULL"), sql.SQL("a.attnotnull <> {}").format(sql.Literal(not_null)),
                  sql.SQL("(d.adbin IS NOT NULL) <> {}").format(sql.Literal(default is not None))]
    if type_ is not None:
        conditions.append(sql.SQL("a.atttypid IS DISTINCT FROM to_regtype({})").format(sql.Literal(type_)))
    query = sql.SQL(
        "SELECT {c} AS column, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null, "
        "pg_get_expr(d.adbin, d.adrelid) AS default FROM (SELECT to_regclass({t}) AS oid) AS t "
        "LEFT JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attname = {c} AND a.attnum > 0 AND NOT a.attisdropped "
        "LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE {where}").format(
        c=c, t=t, where=sql.SQL(" OR ").join(conditions))
    said = ", ".join(([f"type {type_}"] if type_ else []) + ["NOT NULL" if not_null else "nullable",
                                                            f"default {default}" if default else "no default"])
    return check(f"{names.bare(table)}_{column}_as_described",
                 f"{literal_name(table)}.{literal_name(column)} is not as the operation describes it ({said}): "
                 "its rollback restores what the operation says, so correct the operation", query)


def _no_nulls(table: str, column: str) -> Check:
    return check(f"{names.bare(table)}_{column}_has_no_nulls", f"rows where {literal_name(column)} is NULL",
                 sql.SQL("SELECT * FROM {} WHERE {} IS NULL").format(ident(table), ident(column)))


def _phase(parts: tuple[Part, ...], phase: str) -> tuple[Part, ...]:
    return tuple(replace(p, phase=phase) for p in parts)


# -- indexes that move to a new column -----------------------------------------------------------

class RebuiltIndex(_Model):
    """An index on the column, built again on the new column (the old one goes with the column)."""

    name: ColumnName
    columns: Seq(ColumnName) = Field(description="the indexed columns, in order (this column by its old name)")
    unique: bool = False


def _build_index(table: str, index: RebuiltIndex, name: str, columns: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("CREATE {}INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
        sql.SQL("UNIQUE " if index.unique else ""), ident(name), ident(table),
        sql.SQL(", ").join(ident(c) for c in columns))


def _new_indexes(table: str, column: str, new: str, indexes: tuple[RebuiltIndex, ...]) -> tuple[Part, ...]:
    """Each index built on the new column in the expand phase, concurrently and under a temporary
    name (`_rollout_<name>`, renamed at the contract), so the new application's reads have it
    from the first stage of the flag (the backfill maintains it as it fills the column)."""
    return tuple(Part(f"index_{i.name}", EXPAND,
                      (_build_index(table, i, f"_rollout_{i.name}", tuple(new if c == column else c for c in i.columns)),),
                      (sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(in_schema(table, f"_rollout_{i.name}")),),
                      transactional=False) for i in indexes)


def _old_indexes(table: str, indexes: tuple[RebuiltIndex, ...]) -> tuple[Part, ...]:
    """Rollback only: the old column's indexes built again, concurrently, once the rollback of
    the contract has brought the old column back (they go before that part)."""
    return tuple(Part(f"restore_index_{i.name}", CONTRACT, (), (_build_index(table, i, i.name, i.columns),),
                      transactional=False) for i in indexes)


def _index_names(table: str, indexes: tuple[RebuiltIndex, ...], *, back: bool = False) -> tuple[sql.Composable, ...]:
    """The new column's indexes take the old names at the contract (and give them back on rollback)."""
    pairs = ((i.name, f"_rollout_{i.name}") if back else (f"_rollout_{i.name}", i.name) for i in indexes)
    return tuple(_rename_index(table, old, new) for old, new in pairs)


def _goes_with_the_column(table: str, column: str, indexes: tuple[RebuiltIndex, ...]) -> Check:
    """What PostgreSQL drops with the old column and the operation would not bring back:
    constraints (NOT NULL aside: the operation carries it) and indexes `indexes` does not list;
    and listed indexes that are not on the column."""
    t, c = sql.Literal(literal_name(table)), sql.Literal(column)
    listed = sql.SQL("ARRAY[{}]::name[]").format(sql.SQL(", ").join(sql.Literal(i.name) for i in indexes))
    query = sql.SQL(
        "SELECT 'index ' || x.relname AS goes_with_the_column FROM pg_depend AS d "
        "JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "JOIN pg_class AS x ON x.oid = d.objid "
        "WHERE d.refclassid = 'pg_class'::regclass AND d.classid = 'pg_class'::regclass AND x.relkind = 'i' "
        "AND d.refobjid = to_regclass({t}) AND a.attname = {c} AND x.relname <> ALL ({listed}) "
        "UNION ALL SELECT 'constraint ' || k.conname FROM pg_depend AS d "
        "JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "JOIN pg_constraint AS k ON k.oid = d.objid "
        "WHERE d.refclassid = 'pg_class'::regclass AND d.classid = 'pg_constraint'::regclass AND k.contype <> 'n' "
        "AND d.refobjid = to_regclass({t}) AND a.attname = {c} "
        "UNION ALL SELECT 'listed index ' || n || ' is not an index on the column' FROM unnest({listed}) AS n "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_index AS i JOIN pg_class AS x ON x.oid = i.indexrelid "
        "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
        "WHERE i.indrelid = to_regclass({t}) AND x.relname = n AND a.attname = {c})").format(
        t=t, c=c, listed=listed)
    return check(f"{names.bare(table)}_{column}_keeps_its_dependents",
                 f"indexes and constraints on {literal_name(table)}.{literal_name(column)} that would go with the "
                 "old column: list its indexes in `indexes` to rebuild them; constraints are not moved", query)


def _indexes_fit(indexes: tuple[RebuiltIndex, ...]) -> None:
    for index in indexes:
        _fits(index.name, "the index name")
        names.fit(f"_rollout_{index.name}")


# -- the kinds ------------------------------------------------------------------------------------

class Reference(_Model):
    table: TableName
    column: ColumnName
    on_delete: Literal["no action", "restrict", "cascade", "set null", "set default"] = "no action"


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
    with who acts. `tables` instead of `table` adds the same column to each table listed, in
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
        _table_fits(self.table)
        _fits(self.column, "the column name")
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
            _table_fits(self.references.table)
            _fits(self.references.column, "the referenced column")
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
        stored = self.default is not None and _constant(self.default) and _calls(self.default)
        expand = [Part("add_column", EXPAND, _add_column(self.table, self.column, self.type, self.default),
                       (_drop_column(self.table, self.column),), allows=(Allowance(
                           rule="adding-field-with-default", reason=f"the DEFAULT calls only {', '.join(_calls(self.default))}, "
                           "which are not volatile: PostgreSQL 11+ keeps its one value in the catalog for the rows the "
                           "table holds, without a rewrite"),) if stored else ())]
        contract: list[Part] = []
        backfills = []
        if self.default is not None and not _constant(self.default):
            backfills.append(_backfill("fill", self.table, self.column, expr(self.default),
                                       sql.SQL("{} IS NULL").format(column)))
        if self.up is not None:
            up = expr(self.up)
            create, drop = _trigger(self.table, self.column, _fill_body(
                self.column, _over(up, "NEW", self.table), _over(up, "OLD", self.table)))
            expand.append(Part("fill_trigger", EXPAND, create, drop))
            contract.append(Part("drop_fill_trigger", CONTRACT, drop, create))
            backfills.append(_backfill("fill", self.table, self.column, up, sql.SQL("{} IS NULL").format(column)))
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
            parts = _phase(_not_null(self.table, self.column).parts, phase)
            if phase == CONTRACT:
                contract = [*parts, *contract]
            else:
                expand += parts
        return Compiled(tuple(expand + contract), backfills=tuple(backfills))


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
        _table_fits(self.table)
        _fits(self.column, "the column name")
        type_name(self.type)
        for text in (self.default, self.fill):
            if text is not None:
                expr(text)
        if self.fill is not None and not _constant(self.fill):
            raise ValueError(f"fill {self.fill!r} must be a constant: a volatile value would rewrite the table")
        if self.not_null and self.fill is None and (self.default is None or not _constant(self.default)):
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
        kept = ident(_schema_of(self.table) + kept_name)
        keys = sql.SQL(", ").join(ident(c) for c in self.key)
        relaxed = self.not_null and self.default is None
        expand = _relax_not_null(self.table, self.column, EXPAND) if relaxed else ()
        value = self.fill if self.fill is not None else (self.default if self.default and _constant(self.default)
                                                         else None)
        # the rollback: the column comes back first (rows read `fill` or the default from the
        # catalog), the kept values go back in batches, then the default and the kept table
        added = _add_column(self.table, self.column, self.type, value, again=True)
        index = ident(names.fit(f"{kept_name}_key"))
        restore = restore_job(kept_name, _schema_of(self.table) + kept_name, sql.SQL(
            "UPDATE {t} SET {c} = k.value FROM {kept} AS k JOIN batch USING ({keys}) "
            "WHERE ({t_keys}) = ({k_keys})").format(
            t=table, c=column, kept=kept, keys=keys, t_keys=sql.SQL(", ").join(
                sql.SQL("{}.{}").format(table, ident(c)) for c in self.key),
            k_keys=sql.SQL(", ").join(sql.SQL("k.{}").format(ident(c)) for c in self.key)),
            self.key, f"the values of {self.column} kept in {kept_name} put back on {self.table}",
            prepare=(*added, sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(index, kept, keys)))
        back = [*added, *((_set_default(self.table, self.column, self.default),) if value != self.default else ()),
                sql.SQL("DROP TABLE {}").format(kept)]
        not_null = _restore_not_null(self.table, self.column, CONTRACT) if self.not_null and not relaxed else ()
        # one transaction: the values are copied (a read: writers go on) and the column dropped at once
        drop = Part("drop_column", CONTRACT, (
            # a row with a NULL in its key could not be found again: it keeps `fill` on rollback
            sql.SQL("CREATE TABLE {} AS SELECT {}, {} AS value FROM {} WHERE {}").format(
                kept, keys, column, table, sql.SQL(" AND ").join(
                    sql.SQL("{} IS NOT NULL").format(ident(c)) for c in (self.column, *self.key))),
            sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(index, kept, keys),
            sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(table, column)), tuple(back), restore=restore)
        return Compiled((*expand, *not_null, drop), preconditions=(
            _as_described(self.table, self.column, self.type, self.not_null, self.default),
            key_is_unique(self.table, self.key, f"{names.bare(self.table)}_{self.column}")))


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
        _table_fits(self.table)
        _fits(self.column, "the column name")
        _fits(self.to, "the new column name")
        type_name(self.type)
        if self.default is not None:
            expr(self.default)
        if self.to == self.column:
            raise ValueError("to names the column itself")
        names.sync_trigger(self.table, self.column)
        names.old_column(self.column), names.back_trigger(self.table, self.column)
        _indexes_fit(self.indexes)
        if self.not_null:
            names.not_null_check(self.table, self.column)
            names.not_null_check(self.table, self.to)
        return self

    def compile(self) -> Compiled:
        table, column, to = self.table, ident(self.column), ident(self.to)
        body = _sync_body(self.column, self.to, sql.SQL("NEW.{}").format(column), sql.SQL("NEW.{}").format(to))
        create, drop = _trigger(table, self.column, body)
        expand = (Part("add_column", EXPAND, _add_column(table, self.to, self.type, None), (_drop_column(table, self.to),)),
                  Part("sync_trigger", EXPAND, create, drop),
                  *_new_indexes(table, self.column, self.to, self.indexes))
        contract = (*_old_indexes(table, self.indexes),)
        if self.not_null:
            contract += (*_phase(_not_null(table, self.to).parts, CONTRACT),
                         *_restore_not_null(table, self.column, CONTRACT))
        rebuilt = column_back(table, self.column, self.type, lambda row: sql.SQL("{}.{}").format(row, to), None,
                              self.to)
        default = (_set_default(table, self.to, self.default),) if self.default is not None else ()
        swap = Part("drop_old_column", CONTRACT,
                    (*drop, sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(ident(table), column), *default,
                     *_index_names(table, self.indexes)),
                    (*_index_names(table, self.indexes, back=True),
                     *((_set_default(table, self.to, None),) if default else ()), *rebuilt.swap_in,
                     *((_set_default(table, self.column, self.default),) if default else ()), *create),
                    restore=rebuilt.restore, allows=rebuilt.allows)
        return Compiled(
            (*expand, *contract, swap),
            backfills=(_backfill("copy", table, self.to, column, sql.SQL("{} IS DISTINCT FROM {}").format(to, column)),),
            preconditions=(_as_described(table, self.column, self.type, self.not_null, self.default),
                           _goes_with_the_column(table, self.column, self.indexes)))


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
        _table_fits(self.table)
        _fits(self.column, "the column name")
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
            _indexes_fit(self.indexes)
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
        preconditions = [_as_described(self.table, self.column, self.from_type, self.before_not_null,
                                       self.from_default)]
        if self.after_not_null and not self.before_not_null and not self.fills_nulls:
            preconditions.append(_no_nulls(self.table, self.column))
        if self.fills_nulls:
            return self._filled(tuple(preconditions))
        if self.type is None:
            return self._in_place(tuple(preconditions))
        preconditions.append(_goes_with_the_column(self.table, self.column, self.indexes))
        return self._swap(tuple(preconditions))

    def _in_place(self, preconditions: tuple[Check, ...]) -> Compiled:
        parts: list[Part] = []
        if self.after_default != self.from_default:
            parts.append(Part("default", EXPAND, (_set_default(self.table, self.column, self.after_default),),
                              (_set_default(self.table, self.column, self.from_default),)))
        if self.before_not_null and not self.after_not_null:
            parts += _relax_not_null(self.table, self.column, EXPAND)
        if self.after_not_null and not self.before_not_null:
            parts += _phase(_not_null(self.table, self.column).parts, CONTRACT)
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
                                        _label("fill", bare, self.column), f"NULLs of {self.column} filled with up")
        originals = ident(_schema_of(table) + names.fit(kept_name))
        create, drop = _trigger(table, self.column, sql.SQL(
            "    IF NEW.{c} IS NULL THEN\n"
            "        INSERT INTO {orig} (key, original) VALUES ({key}, {original}) ON CONFLICT (key) DO NOTHING;\n"
            "        NEW.{c} := {up};\n"
            "    END IF;").format(c=column, orig=originals, key=as_json(self.key, "NEW"),
                                  original=as_json((self.column,), "NEW"), up=_over(up, "NEW", table)), definer=True)
        default = ([Part("default", EXPAND, (_set_default(table, self.column, self.after_default),),
                         (_set_default(table, self.column, self.from_default),))]
                   if self.after_default != self.from_default else [])
        parts = [*default, keep, Part("fill_trigger", EXPAND, create, drop),
                 *_phase(_not_null(table, self.column).parts, CONTRACT), Part("drop_fill_trigger", CONTRACT, drop, create)]
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
        create, drop = _trigger(table, name, _sync_body(
            name, shadow_name, _over(up, "NEW", table), _as(down, sql.SQL("NEW.{}").format(shadow), name, table)))
        expand = [Part("shadow_column", EXPAND, _add_column(table, shadow_name, self.type, None),
                       (_drop_column(table, shadow_name),)),
                  Part("sync_trigger", EXPAND, create, drop)]
        if self.before_not_null and not self.after_not_null:
            expand += _relax_not_null(table, name, EXPAND)  # the new application may write NULL
        expand += _new_indexes(table, name, shadow_name, self.indexes)
        contract = list(_old_indexes(table, self.indexes))
        if self.after_not_null:
            contract += _phase(_not_null(table, shadow_name).parts, CONTRACT)
        if self.before_not_null and self.after_not_null:
            contract += _restore_not_null(table, name, CONTRACT)
        rebuilt = column_back(table, name, self.from_type,
                              lambda row: _as(down, sql.SQL("{}.{}").format(row, column), name, table),
                              self.key if "key" in self.model_fields_set else None, name)
        default = self.after_default
        swap = Part(
            "swap", CONTRACT,
            (*drop, sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(ident(table), column),
             _rename_column(table, shadow_name, name),
             *((_set_default(table, name, default),) if default is not None else ()),
             *_index_names(table, self.indexes)),
            (*_index_names(table, self.indexes, back=True),
             *((_set_default(table, name, None),) if default is not None else ()),
             _rename_column(table, name, shadow_name), *rebuilt.swap_in,
             *((_set_default(table, name, self.from_default),) if self.from_default is not None else ()), *create),
            restore=rebuilt.restore,
            allows=(Allowance(rule="renaming-column", reason="the swap of alter_column: the shadow column takes the column's name in the "
                     "transaction that drops the old column, once the old application is gone (the flag is at 100%); "
                     "the new one reads the shadow column during the rollout and the column's own name after the "
                     "contract. Its rollback renames it back in the transaction that restores the old column"),))
        backfill = _backfill("convert", table, shadow_name, up,
                             sql.SQL("{} IS NULL AND {} IS NOT NULL").format(shadow, column))
        return Compiled((*expand, *contract, swap), backfills=(backfill,), preconditions=preconditions)


KINDS = (AddColumn, DropColumn, RenameColumn, AlterColumn)
