"""The dry run: everything `rollout apply` would do, with its locks and risks, writing nothing.

One READ ONLY transaction against the live database: the steps apply would run, each
statement with its lock, what the lock blocks, scans and rewrites (analysis.py), the table
sizes and row estimates behind them (catalog statistics, never COUNT(*)), estimated
durations and storage, lint findings (lint.py) and findings only the live database can
give, preconditions run read-only, and the objects that depend on what a step changes.
The transaction is rolled back; the preview proves it wrote nothing by showing that no
transaction id was ever assigned to it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace

import psycopg
from pglast import parse_sql
from psycopg.rows import dict_row

from . import state
from .analysis import Effect, analyze_file
from .backfill import BatchStatements, resolve_table_key
from .checks import CheckResult, run_check
from .database import connect, resolve_target
from .errors import StepFailed
from .lint import Finding, accept, lint_step, proven_not_null
from .migrations import applied_hashes
from .plan import Plan, Step

LARGE_TABLE_ROWS = 100_000
# Rough rates on this project's reference machine (2 cores; bench/backfill.py measures the
# backfill's): for orders of magnitude in the preview, not promises.
SCAN_ROWS_PER_SECOND = 2_000_000
REWRITE_ROWS_PER_SECOND = 300_000
BACKFILL_ROWS_PER_SECOND = 300_000


@dataclass(frozen=True)
class Table:
    name: str
    rows: int | None  # pg_class.reltuples; None before the first ANALYZE
    bytes: int

    def describe(self) -> str:
        rows = f"~{self.rows:,} rows" if self.rows is not None else "rows unknown (never analysed)"
        return f"{self.name}: {rows}, {_size(self.bytes)}"


@dataclass(frozen=True)
class StatementPreview:
    phase: str  # migrate | finalize
    file: str
    effect: Effect
    table: Table | None
    estimate: str | None
    backup: bool

    def as_json(self) -> dict:
        table = None if self.table is None else {"name": self.table.name, "rows": self.table.rows,
                                                  "bytes": self.table.bytes}
        return {"phase": self.phase, "file": self.file, **self.effect.as_json(), "table_size": table,
                "estimate": self.estimate, "backup_before": self.backup}


@dataclass(frozen=True)
class BackfillPreview:
    name: str
    table: str
    template: str
    rows: int | None
    batches: int | None
    estimate: str | None

    def as_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StepPreview:
    id: str
    title: str
    description: str
    state: str
    preconditions: list[tuple[CheckResult, str | None]] = field(default_factory=list)  # (result, deferred because)
    statements: list[StatementPreview] = field(default_factory=list)
    backfills: list[BackfillPreview] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    dependents: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> bool:
        failed = any(not result.ok and deferred is None for result, deferred in self.preconditions)
        return failed or any(f.blocking for f in self.findings)

    def as_json(self) -> dict:
        return {"id": self.id, "title": self.title, "description": self.description, "state": self.state,
                "blocking": self.blocking,
                "preconditions": [{**r.as_json(), "deferred": d} for r, d in self.preconditions],
                "statements": [s.as_json() for s in self.statements],
                "backfills": [b.as_json() for b in self.backfills],
                "findings": [f.as_json() for f in self.findings], "dependents_at_risk": self.dependents}


@dataclass
class Preview:
    env: str
    database: str
    server_version: str
    bootstrap: str | None
    steps: list[StepPreview]
    wrote_nothing: bool
    seconds: float

    @property
    def blocking(self) -> bool:
        return any(step.blocking for step in self.steps)

    def as_json(self) -> dict:
        return {"env": self.env, "database": self.database, "server_version": self.server_version,
                "bootstrap": self.bootstrap, "blocking": self.blocking, "wrote_nothing": self.wrote_nothing,
                "seconds": round(self.seconds, 3), "steps": [s.as_json() for s in self.steps]}


def preview(plan: Plan, env: str, target: str | None = None, *, dsn: str | None = None) -> Preview:
    """Everything `rollout apply [target]` would do in `env`, computed inside a READ ONLY transaction."""
    started = time.monotonic()
    if target:
        plan.step(target)
    conninfo = resolve_target(plan, env, dsn)
    with connect(conninfo, "rollout plan") as conn:
        conn.execute("BEGIN READ ONLY")
        try:
            version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
            states = state.step_states(conn, env)
            applied = applied_hashes(conn)
            bootstrap = _bootstrap_pending(conn, plan, env)
            steps = [_step(conn, plan, step, states, applied, version) for step in plan.order(target)]
            wrote_nothing = conn.execute("SELECT pg_current_xact_id_if_assigned() IS NULL").fetchone()[0]
        finally:
            conn.execute("ROLLBACK")
    return Preview(env, conninfo.display, version, bootstrap, steps, wrote_nothing, time.monotonic() - started)


def _bootstrap_pending(conn: psycopg.Connection, plan: Plan, env: str) -> str | None:
    bootstrap = plan.environment(env).bootstrap
    if bootstrap is None or (state.schema_exists(conn) and state.get_meta(conn, "bootstrap") is not None):
        return None
    return bootstrap


def _step(conn, plan: Plan, step: Step, states: dict, applied: set[str], version: str) -> StepPreview:
    current = states[step.id].state
    result = StepPreview(step.id, step.title, " ".join(step.description.split()), current)
    if current == state.DONE:
        return result
    waiting_on = [d for d in step.depends_on if states[d].state != state.DONE]
    if current == state.PENDING:
        for check in step.preconditions:
            deferred = f"runs after {', '.join(waiting_on)}" if waiting_on else None
            result.preconditions.append((run_check(conn, check, plan.timeouts(step)), deferred))
    phases = ("finalize",) if current in (state.ROLLING_OUT, state.ABORTED, state.FINALIZING) else ("migrate", "finalize")
    result.statements = _statements(conn, plan, step, phases, applied)
    if current in (state.PENDING, state.MIGRATING, state.MIGRATED, state.FAILED):
        result.backfills = [_backfill(conn, step, job) for job in step.backfills]
    result.findings = lint_step(plan, step, version.split(".")[0]) + live_findings(conn, plan, step, result.statements)
    result.dependents = [f.message for f in result.findings if f.rule == "dependents-at-risk"]
    return result


def _statements(conn, plan: Plan, step: Step, phases: tuple[str, ...], applied: set[str]) -> list[StatementPreview]:
    """Each statement apply would still run for the step, with its table's size and estimates."""
    statements = []
    proven = proven_not_null(plan, step)
    for phase in phases:
        for migration in plan.migrations.get((step.id, phase), ()):
            if migration.hash in applied:
                continue
            relative = os.path.relpath(migration.path, plan.directory)
            for effect in analyze_file(migration.path):
                if "SET NOT NULL" in effect.kind and all((effect.table, c) in proven for c in effect.columns):
                    effect = replace(effect, scans=False, notes=("no scan: the step validated a CHECK "
                                                                 "(column IS NOT NULL) first",))
                table = _table(conn, effect.table)
                statements.append(StatementPreview(phase, relative, effect, table, _estimate(effect, table, conn),
                                                   effect.destructive and table is not None))
    return statements


def step_findings(conn, plan: Plan, step: Step) -> list[Finding]:
    """Every finding for a step about to start: what `rollout plan` shows for it."""
    version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
    statements = _statements(conn, plan, step, ("migrate", "finalize"), applied_hashes(conn))
    return lint_step(plan, step, version.split(".")[0]) + live_findings(conn, plan, step, statements)


def _table(conn, name: str | None) -> Table | None:
    if name is None:
        return None
    row = conn.execute(
        """
        SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END, pg_total_relation_size(c.oid)
        FROM pg_class AS c WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p', 'm')
        """, (name,)).fetchone()
    return Table(name, row[0], row[1]) if row else None


def _estimate(effect: Effect, table: Table | None, conn) -> str | None:
    """Duration of the scan or rewrite, and storage of a new index, from the table's statistics."""
    if table is None or table.rows is None:
        return None
    parts = []
    if effect.rewrites:
        parts.append(f"rewrite of ~{table.rows:,} rows: ~{_duration(table.rows / REWRITE_ROWS_PER_SECOND)}")
    elif effect.scans:
        parts.append(f"scan of ~{table.rows:,} rows: ~{_duration(table.rows / SCAN_ROWS_PER_SECOND)}")
    if effect.index:
        width = conn.execute(
            "SELECT coalesce(sum(avg_width), 0) FROM pg_stats WHERE schemaname = coalesce(%s, current_schema()) "
            "AND tablename = %s AND attname = ANY (%s)",
            (table.name.split(".")[0] if "." in table.name else None, table.name.split(".")[-1],
             list(effect.columns))).fetchone()[0] or 8 * len(effect.columns)
        # btree leaf tuples: the key plus an 8-byte header and a 4-byte line pointer, pages 90% full
        parts.append(f"new index ~{_size(int(table.rows * (width + 12) / 0.9))}")
    return "; ".join(parts) or None


def _backfill(conn, step: Step, job) -> BackfillPreview:
    try:
        key = resolve_table_key(conn, job)
    except StepFailed as exc:
        return BackfillPreview(job.name, job.table, f"(after the expand migration: {exc})", None, None, None)
    template = BatchStatements(key, job).change(True, True).as_string(conn)
    table = _table(conn, f"{key.schema}.{key.table}")
    rows = table.rows if table else None
    batches = math.ceil(rows / job.batch_size) if rows else None
    estimate = f"~{_duration(rows / BACKFILL_ROWS_PER_SECOND)}" if rows else None
    return BackfillPreview(job.name, job.table, template, rows, batches, estimate)


def live_findings(conn, plan: Plan, step: Step, statements: list[StatementPreview]) -> list[Finding]:
    """Findings that need the live database: locks on large tables, and objects at risk."""
    findings = []
    for s in statements:
        effect, table = s.effect, s.table
        where = f"{s.file}:{effect.line}"
        large = table is not None and table.rows is not None and table.rows >= LARGE_TABLE_ROWS
        if large and effect.lock == "ACCESS EXCLUSIVE" and (effect.scans or effect.rewrites):
            findings.append(Finding(
                "long-lock-on-large-table", "error",
                f"holds ACCESS EXCLUSIVE on {table.describe()} while it {'rewrites' if effect.rewrites else 'scans'} "
                f"it ({s.estimate}): every read and write of the table waits meanwhile", where, effect.sql,
                "split it: a new column or NOT VALID constraint (brief lock), a backfill or VALIDATE (no blocking "
                "lock), then the contract in finalize"))
        elif large and effect.lock == "ACCESS EXCLUSIVE":
            findings.append(Finding(
                "access-exclusive-on-large-table", "warning",
                f"takes ACCESS EXCLUSIVE on {table.describe()}: brief, but while it waits for running queries it "
                f"blocks every new one; rollout bounds the wait with lock_timeout {plan.timeouts(step).lock}ms and "
                "retries", where, effect.sql))
        if large and effect.row_locks and effect.scans:
            findings.append(Finding(
                "unbatched-update-on-large-table", "error",
                f"changes ~{table.rows:,} rows of {table.name} in one transaction, holding each row's lock until it "
                "commits: the application's writes to those rows wait", where, effect.sql,
                "declare a backfill on the step: key-range batches that commit with their checkpoint"))
        if effect.destructive and effect.table:
            findings += _dependents(conn, plan, step, s)
    return accept(step, findings)


def _dependents(conn, plan: Plan, step: Step, s: StatementPreview) -> list[Finding]:
    """Views, functions, policies and foreign keys that use what the statement drops, renames or retypes."""
    effect = s.effect
    if conn.execute("SELECT to_regclass(%s)", (effect.table,)).fetchone()[0] is None:
        return []
    columns = list(effect.columns)
    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute(
            """
            WITH t AS (SELECT to_regclass(%(table)s) AS oid, split_part(%(table)s, '.', -1) AS name),
            cols AS (SELECT attnum, attname FROM pg_attribute, t WHERE attrelid = t.oid AND attname = ANY (%(cols)s))
            SELECT 'view ' || v.oid::regclass::text AS object FROM pg_depend AS d
              JOIN pg_rewrite AS r ON r.oid = d.objid JOIN pg_class AS v ON v.oid = r.ev_class, t
             WHERE d.refobjid = t.oid AND v.oid <> t.oid
               AND (cardinality(%(cols)s::text[]) = 0 OR d.refobjsubid IN (SELECT attnum FROM cols))
            UNION
            SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc AS p
              JOIN pg_namespace AS n ON n.oid = p.pronamespace, t
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'rollout')
               AND p.prosrc ~* ('\\m' || t.name || '\\M')
               AND (cardinality(%(cols)s::text[]) = 0
                    OR EXISTS (SELECT 1 FROM cols WHERE p.prosrc ~* ('\\m' || cols.attname || '\\M')))
            UNION
            SELECT 'policy ' || quote_ident(pol.polname) || ' on ' || pol.polrelid::regclass::text FROM pg_policy AS pol, t
             WHERE pol.polrelid = t.oid AND cardinality(%(cols)s::text[]) > 0
               AND EXISTS (SELECT 1 FROM cols WHERE coalesce(pg_get_expr(pol.polqual, pol.polrelid), '') || ' ' ||
                           coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), '') ~* ('\\m' || cols.attname || '\\M'))
            UNION
            SELECT 'foreign key ' || quote_ident(c.conname) || ' on ' || c.conrelid::regclass::text FROM pg_constraint AS c, t
             WHERE c.contype = 'f' AND c.confrelid = t.oid AND c.conrelid <> t.oid
               AND (cardinality(%(cols)s::text[]) = 0 OR c.confkey && ARRAY(SELECT attnum FROM cols))
            ORDER BY 1
            """, {"table": effect.table, "cols": columns}).fetchall()
    if not found:
        return []
    replaced = _functions_replaced_by(plan, step)
    at_risk = [row["object"] for row in found
               if not (row["object"].startswith("function ") and row["object"].split(" ")[1].split("(")[0] in replaced)]
    handled = [row["object"] for row in found if row["object"] not in at_risk]
    what = f"{effect.table}.{', '.join(columns)}" if columns else effect.table
    message = f"{effect.kind} on {what} is used by: {', '.join(at_risk or handled)}"
    if not at_risk:
        return [Finding("dependents-at-risk", "warning", message + " (replaced by this step)",
                        f"{s.file}:{effect.line}", effect.sql)]
    return [Finding("dependents-at-risk", "error", message + (f"; this step replaces {', '.join(handled)}" if handled
                                                               else ""), f"{s.file}:{effect.line}", effect.sql,
                    "change them in the same step (CREATE OR REPLACE FUNCTION / VIEW) before the statement, or "
                    "accept with allow: after checking they cope")]


def _functions_replaced_by(plan: Plan, step: Step) -> set[str]:
    """Functions the step itself creates, replaces or drops: their risk is the step's own."""
    names = set()
    for phase in ("migrate", "finalize"):
        for migration in plan.migrations.get((step.id, phase), ()):
            for effect in analyze_file(migration.path):
                node = parse_sql(effect.sql)[0].stmt if effect.kind in ("CREATE FUNCTION", "DROP FUNCTION") else None
                if effect.kind == "CREATE FUNCTION":
                    names.add(node.funcname[-1].sval)
                elif effect.kind == "DROP FUNCTION":
                    names.update(obj.objname[-1].sval for obj in node.objects)
    return names


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"
