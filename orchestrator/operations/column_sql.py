"""What the column kinds share: a column changes while the old application (which knows the old
shape) and the new one (which knows the new shape) both run.

The expand phase only adds: a column, a trigger that fills it for writers that do not know it, a
backfill (orchestrator/backfill.py: key-range batches, resumable) that fills the rows the table
already holds. The contract phase, once the flag has reached 100% and the old application is gone,
removes what only the old shape needed and tightens what the new one promises (NOT NULL).

No statement rewrites a table or scans it while writes wait: ADD COLUMN without a volatile default
(PostgreSQL 11+ stores a constant default once, in the catalog), NOT NULL through a CHECK added NOT
VALID and validated (constraint_sql.set_not_null), foreign keys NOT VALID then validated, indexes
built CONCURRENTLY. The statements that remain take ACCESS EXCLUSIVE for a moment only (catalog
changes), under rollout's lock_timeout and retries.

Triggers evaluate an operator's expression over the row being written with the row's columns by
their names, `(SELECT (expression) FROM (SELECT NEW.*) AS table)`, so the expression means in the
trigger what it means in the backfill's UPDATE. Everything that names a table, a column or a type
goes through psycopg.sql (`ident`, `type_name`), expressions through `expr` (one expression,
checked by PostgreSQL's parser).
"""

from __future__ import annotations

import re
from dataclasses import replace

import pglast
from pglast.visitors import Visitor
from psycopg import sql

from ..analysis.alter_table import NOT_VOLATILE, ROLLOUT_STABLE
from ..plan_parts import Backfill, Check
from . import names
from .base import Part, check
from .constraint_sql import set_not_null
from .sql import dollar_quoted, expr, ident, in_schema, literal_name, render, type_name


def fits(name: str, what: str) -> str:
    """A name PostgreSQL keeps whole: past 63 bytes it is cut silently, which would make the
    operation create or look for another object than the plan says."""
    if len(name.encode()) > names.MAX:
        raise ValueError(f"{what} {name!r} is longer than PostgreSQL's {names.MAX} bytes "
                         f"({len(name.encode())}): PostgreSQL would cut it; choose a shorter name")
    return name


def table_fits(table: str) -> None:
    for part in table.split("."):
        fits(part, "the table name")


def calls(expression: str) -> list[str]:
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


def constant(default: str) -> bool:
    """Whether a DEFAULT has one value for every row of an ALTER TABLE (stored once in the
    catalog, no rewrite): it calls only functions the analysis knows not to be volatile. Any
    other, one rollout does not know included, counts as volatile: the safe side (the column is
    added without it and a backfill fills the rows)."""
    return all(name in NOT_VOLATILE or name in ROLLOUT_STABLE for name in calls(default))


def job_label(*words: str) -> str:
    """A backfill's name from a table and a column: lowercase letters, digits, '_', 63 at most."""
    label = re.sub(r"[^a-z0-9_]+", "_", "_".join(words).lower()).strip("_")[:63]
    return label if label[:1].isalpha() else f"b_{label}"[:63]


def add_column(table: str, column: str, type_: str, default: str | None, *,
               again: bool = False) -> tuple[sql.Composable, ...]:
    """ADD COLUMN without a table rewrite: a constant DEFAULT goes with the column (existing rows
    read it from the catalog), a volatile one is set after it and applies to new rows only.
    `again`: IF NOT EXISTS, for a statement that may run twice."""
    add = sql.SQL("ALTER TABLE {} ADD COLUMN {}{} {}").format(
        ident(table), sql.SQL("IF NOT EXISTS " if again else ""), ident(column), type_name(type_))
    if default is None:
        return (add,)
    if constant(default):
        return (sql.SQL("{} DEFAULT {}").format(add, expr(default)),)
    return (add, set_default(table, column, default))


def set_default(table: str, column: str, default: str | None) -> sql.Composable:
    if default is None:
        return sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(ident(table), ident(column))
    return sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(ident(table), ident(column), expr(default))


def drop_column(table: str, column: str) -> sql.Composable:
    return sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(ident(table), ident(column))


def rename_index(table: str, name: str, to: str) -> sql.Composable:
    return sql.SQL("ALTER INDEX {} RENAME TO {}").format(in_schema(table, name), ident(to))


def _rollback_only(parts: tuple[Part, ...], phase: str) -> tuple[Part, ...]:
    """Parts that change nothing on apply and run `parts`' statements, in their order and each
    in its own migration, when the step is rolled back (a rollback runs migrations in reverse)."""
    return tuple(replace(p, name=f"restore_{p.name}", phase=phase, apply=(), rollback=p.apply) for p in reversed(parts))


def restore_not_null(table: str, column: str, phase: str) -> tuple[Part, ...]:
    """NOT NULL brought back on rollback the way that does not scan under ACCESS EXCLUSIVE: a CHECK
    added NOT VALID, validated, then SET NOT NULL (the parts go before the part whose rollback
    re-creates the column)."""
    return _rollback_only(set_not_null(table, column).parts, phase)


def relax_not_null(table: str, column: str, phase: str) -> tuple[Part, ...]:
    """DROP NOT NULL (catalog only), undone through the validated CHECK route."""
    drop = sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(ident(table), ident(column))
    return (Part("drop_not_null", phase, (drop,)), *restore_not_null(table, column, phase))


def over_row(expression: sql.Composable, record: str, table: str) -> sql.Composable:
    """`expression` evaluated over the trigger's NEW or OLD row, with the row's columns by their
    names (and the table's name as the row's alias), as in the backfill's UPDATE."""
    return sql.SQL("(SELECT ({}) FROM (SELECT {}.*) AS {})").format(expression, sql.SQL(record),
                                                                    ident(names.bare(table)))


def sync_body(old: str, new: str, up: sql.Composable, down: sql.Composable) -> sql.Composable:
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


Statements = tuple[sql.Composable, ...]


def row_trigger(table: str, name: str, events: str, body: sql.Composable, *, when: sql.Composable | None = None,
                definer: bool = False) -> tuple[Statements, Statements]:
    """The statements that create a row trigger `name` on `table` (`events`: "BEFORE INSERT OR
    UPDATE", "AFTER INSERT"...) and its function of the same name in the table's schema, and
    those that drop them. `body` is PL/pgSQL, composed like any other SQL here and dollar-quoted
    with a tag it does not contain; `#variable_conflict use_column` makes a column named like a
    PL/pgSQL variable (found) mean the column. A BEFORE trigger returns the row as the body left
    it, an AFTER one nothing."""
    function, trigger = in_schema(table, name), ident(name)
    # a body that writes tables the application's role may not (rollout's own, a copy's target) runs
    # as their owner, with the search_path of its creation: the role needs no grant, and cannot
    # redirect the names the body uses
    security = sql.SQL(" SECURITY DEFINER SET search_path FROM CURRENT" if definer else "")
    returned = sql.SQL("NEW" if events.startswith("BEFORE") else "NULL")
    create = sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql{} AS {}").format(
        function, security, dollar_quoted(sql.SQL("#variable_conflict use_column\nBEGIN\n{}\n    RETURN {};\nEND").format(
            body, returned)))
    attach = sql.SQL("CREATE TRIGGER {} {} ON {} FOR EACH ROW{} EXECUTE FUNCTION {}()").format(
        trigger, sql.SQL(events), ident(table), sql.SQL(" WHEN ({})").format(when) if when is not None else sql.SQL(""),
        function)
    drop = (sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, ident(table)),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function))
    return (create, attach), drop


def trigger_statements(table: str, column: str, body: sql.Composable,
                       definer: bool = False) -> tuple[Statements, Statements]:
    """The sync trigger of `column` (BEFORE INSERT OR UPDATE) and its function: `row_trigger`."""
    return row_trigger(table, names.sync_trigger(table, column), "BEFORE INSERT OR UPDATE", body, definer=definer)


def fill_job(verb: str, table: str, column: str, value: sql.Composable, where: sql.Composable) -> Backfill:
    return Backfill(name=job_label(verb, names.bare(table), column), table=table,
                    description=f"{verb} {literal_name(table)}.{literal_name(column)} for the rows the table holds",
                    set={column: render(value)}, where=render(where))


def as_described(table: str, column: str, type_: str | None, not_null: bool, default: str | None) -> Check:
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


def in_phase(parts: tuple[Part, ...], phase: str) -> tuple[Part, ...]:
    return tuple(replace(p, phase=phase) for p in parts)
