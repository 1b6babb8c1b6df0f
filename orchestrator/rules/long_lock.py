"""A lock that blocks writes, held on a large table while PostgreSQL scans or rewrites it."""

from __future__ import annotations

from ..analysis import Lock
from .context import LARGE_TABLE_ROWS, Context, Finding

NAME = "long-lock-on-large-table"
LEVEL = "error"
EVIDENCE = ("the statement's lock and its scan or rewrite are measured against pg_locks and relfilenode on "
            "PostgreSQL 15 and 18 (tests/analysis); the table's size is the catalog's estimate")
BRIEF = "access-exclusive-on-large-table"


def check(ctx: Context) -> list[Finding]:
    findings = []
    for s in ctx.statements:
        effect = s.effect
        for held in effect.locks:
            table = ctx.tables.get(held.relation)
            if table is None or not table.large or not held.lock.conflicts & {Lock.ROW_EXCLUSIVE}:
                continue
            many = (s.rows_touched or 0) >= LARGE_TABLE_ROWS  # PostgreSQL's estimate of the rows it changes
            if (effect.scans or effect.rewrites or many) and held.relation == effect.table and not effect.long_running_ok:
                work = "rewrites" if effect.rewrites else f"changes ~{s.rows_touched:,} rows of" if many else "scans"
                findings.append(Finding(
                    NAME, LEVEL,
                    f"holds {held.lock.label} on {table.describe()} while it {work} it ({s.estimate or 'long'}): "
                    f"{held.lock.blocks} wait meanwhile", s.where, effect.sql,
                    None))
            elif held.lock == Lock.ACCESS_EXCLUSIVE:
                findings.append(Finding(
                    BRIEF, "warning",
                    f"takes ACCESS EXCLUSIVE on {table.describe()}: brief, but while it waits for running queries "
                    f"it blocks every new one; rollout bounds the wait with lock_timeout {ctx.lock_timeout}ms and "
                    "retries", s.where, effect.sql))
    return findings
