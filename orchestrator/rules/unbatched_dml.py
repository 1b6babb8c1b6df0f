"""An UPDATE or DELETE that PostgreSQL expects to change many rows in one transaction."""

from __future__ import annotations

from pglast import parse_sql
from pglast.stream import RawStream

from .context import LARGE_TABLE_ROWS, Context, Finding

NAME = "unbatched-update-on-large-table"
LEVEL = "error"
EVIDENCE = ("the rows it would change are PostgreSQL's own estimate (EXPLAIN of the statement inside the "
            "preview's read-only transaction), whatever its WHERE says")


def check(ctx: Context) -> list[Finding]:
    findings = []
    for s in ctx.statements:
        if not s.effect.changes_rows or s.rows_touched is None or s.rows_touched < LARGE_TABLE_ROWS:
            continue
        findings.append(Finding(
            NAME, LEVEL,
            f"changes ~{s.rows_touched:,} rows of {s.effect.table} in one transaction (PostgreSQL's estimate), "
            "holding each row's lock until it commits: the application's writes to those rows wait, and "
            "replicas fall behind", s.where, s.effect.sql,
            backfill_for(s) if s.effect.columns else None))
    return findings


def backfill_for(s) -> str | None:
    """The step's `backfills:` entry that does the same UPDATE in key-range batches."""
    node = parse_sql(s.effect.sql)[0].stmt
    if type(node).__name__ != "UpdateStmt" or node.fromClause:
        return None
    sets = "\n".join(f"      {t.name}: {RawStream()(t.val)!r}" for t in node.targetList if t.name)
    where = f"\n    where: {RawStream()(node.whereClause)!r}" if node.whereClause is not None else ""
    return (f"# in the step of rollout.yaml (batches commit with their checkpoint):\nbackfills:\n"
            f"  - name: {node.relation.relname}_batched\n    table: {RawStream()(node.relation)}\n    set:\n"
            f"{sets}{where}")
