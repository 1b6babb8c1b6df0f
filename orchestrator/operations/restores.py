"""Values put back on rollback through the backfill engine, in batches, never one long UPDATE.

Two shapes: values kept in a table of their own (a remediation's originals, a dropped column's
values) go back from that table before the migration that keeps them drops it; a column the
contract replaced (a type change, an enum, a rename) is rebuilt under a hidden name, filled in
batches while a trigger keeps it current, and swapped in by the contract's rollback in one
short transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from ..plan_parts import Allowance, Backfill
from . import names
from .sql import dollar_quoted, ident, in_schema, render, type_name


def restore_job(label: str, kept: str, statement: sql.Composable, key, description: str,
                prepare: tuple[sql.Composable, ...] = ()) -> Backfill:
    """The job that puts kept values back before the kept table is dropped on rollback: batches
    of `kept` by `key` (the CTE `batch`), each committed with its checkpoint, after `prepare`."""
    return Backfill(name=_job_name(label), table=kept, key=tuple(key), description=description,
                    sql=render(statement), prepare=";\n".join(render(s) for s in prepare) or None)


@dataclass(frozen=True)
class ColumnBack:
    """The old column of a contract rebuilt for its rollback: `restore` adds it under a hidden
    name with a trigger that keeps it current, and fills it in batches; `swap_in` (the start of
    the contract's rollback, one transaction) drops the trigger and gives it the column's name,
    which the caller has moved out of the way first."""

    restore: Backfill
    swap_in: tuple[sql.Composable, ...]
    allows: tuple[Allowance, ...]  # for the rollback file that holds swap_in


def column_back(table: str, column: str, type_: str, value: Callable[[sql.Composable], sql.Composable],
                key: tuple[str, ...] | None, reads: str) -> ColumnBack:
    """`column` of `type_` rebuilt from the columns the contract left: `value(row)` computes it
    over a row (`NEW` in the trigger, the table's own name in the batches); the trigger fires on
    INSERT and on UPDATE OF `reads`, the column the application writes until the rollback ends.
    `key` batches the table (None: its primary key)."""
    t, bare = ident(table), names.bare(table)
    hidden = ident(names.old_column(column))
    function = in_schema(table, names.back_trigger(table, column))
    trigger = ident(names.back_trigger(table, column))
    body = sql.SQL("BEGIN\n    NEW.{} := {};\n    RETURN NEW;\nEND").format(hidden, value(sql.SQL("NEW")))
    prepare = (
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(t, hidden, type_name(type_)),
        # the trigger runs as its owner, with the search_path of its creation: it may read rollout's
        # kept values, which the application's role has no grant on
        sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path FROM CURRENT AS {}").format(function, dollar_quoted(body)),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, t),
        sql.SQL("CREATE TRIGGER {} BEFORE INSERT OR UPDATE OF {} ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            trigger, ident(reads), t, function),
    )
    job = Backfill(name=_job_name(f"{bare}_{column}"), table=table, key=key,
                   description=f"{table}.{column} rebuilt under {names.old_column(column)} for the rollback",
                   prepare=";\n".join(render(s) for s in prepare),
                   set={names.old_column(column): render(value(ident(bare)))})
    swap_in = (sql.SQL("DROP TRIGGER {} ON {}").format(trigger, t), sql.SQL("DROP FUNCTION {}()").format(function),
               sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(t, hidden, ident(column)))
    return ColumnBack(job, swap_in, (Allowance(
        rule="renaming-column", direction="rollback",
        reason=f"the rollback of the contract gives {column} back its name: it was rebuilt under "
               f"{names.old_column(column)}, which nothing reads, and filled in batches before this transaction"),))


def _job_name(label: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", f"restore_{label.lower().lstrip('_')}").strip("_")[:63]
