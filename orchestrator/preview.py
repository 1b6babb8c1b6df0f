"""The dry run: everything `rollout apply` (or `rollout rollback`) would do, with its locks and
risks, writing nothing.

One READ ONLY transaction against the live database: the steps that would run, each statement
with every lock it takes (analysis, resolved against the catalog), what the locks block, scans
and rewrites, the table sizes and row estimates behind them (catalog statistics and EXPLAIN,
never COUNT(*)), estimated durations and storage, the lint findings (rules/) for the step's
files and their rollbacks, and preconditions run read-only. The transaction is rolled back; the
preview proves it wrote nothing by showing that no transaction id was ever assigned to it.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from . import rules, state
from .analysis import Effect, Lock, RelationLock, analyze
from .analysis.catalog import Catalog
from .backfill import BatchStatements, resolve_table_key
from .checks import CheckResult, run_check
from .database import connect, resolve_target
from .errors import StepFailed, describe_error
from .migrations import applied_hashes
from .plan import Direction, Phase, Plan, Step
from .rules import Context, Finding, Statement
from .rules.context import Table, size

# Rough rates on this project's reference machine (2 cores; bench/backfill.py measures the
# backfill's): for orders of magnitude in the preview, not promises.
SCAN_ROWS_PER_SECOND = 2_000_000
REWRITE_ROWS_PER_SECOND = 300_000
BACKFILL_ROWS_PER_SECOND = 300_000


@dataclass(frozen=True)
class BackfillPreview:
    name: str
    table: str
    template: str
    rows: int | None
    batches: int | None
    estimate: str | None
    prepare: str | None = None  # run once before the first batch
    restores: str | None = None  # a restore: the migration whose rollback it runs before

    def as_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StepPreview:
    id: str
    title: str
    description: str
    state: str
    preconditions: list[tuple[CheckResult, str | None]] = field(default_factory=list)  # (result, deferred because)
    statements: list[Statement] = field(default_factory=list)
    backfills: list[BackfillPreview] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None

    @property
    def blocking(self) -> bool:
        failed = any(not result.ok and deferred is None for result, deferred in self.preconditions)
        return failed or any(f.blocking for f in self.findings)

    def as_json(self) -> dict:
        return {"id": self.id, "title": self.title, "description": self.description, "state": self.state,
                "blocking": self.blocking, "note": self.note,
                "preconditions": [{**r.as_json(), "deferred": d} for r, d in self.preconditions],
                "statements": [s.as_json() for s in self.statements],
                "backfills": [b.as_json() for b in self.backfills],
                "findings": [f.as_json() for f in self.findings]}


@dataclass
class Preview:
    env: str
    database: str
    server_version: str
    bootstrap: str | None
    direction: Direction
    steps: list[StepPreview]
    wrote_nothing: bool
    seconds: float

    @property
    def blocking(self) -> bool:
        return any(step.blocking for step in self.steps)

    def as_json(self) -> dict:
        return {"env": self.env, "database": self.database, "server_version": self.server_version,
                "bootstrap": self.bootstrap, "direction": self.direction.value, "blocking": self.blocking,
                "wrote_nothing": self.wrote_nothing, "seconds": round(self.seconds, 3),
                "steps": [s.as_json() for s in self.steps]}


def preview(plan: Plan, env: str, target: str | None = None, *, dsn: str | None = None,
            rollback: bool = False) -> Preview:
    """Everything `rollout apply [target]` (or, with `rollback`, `rollout rollback target`) would
    do in `env`, computed inside a READ ONLY transaction."""
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
            if rollback:
                steps = [_rollback_step(conn, plan, step, states, applied, version)
                         for step in [*plan.dependents(target), plan.step(target)]]
            elif bootstrap and conninfo.embedded:
                with _bootstrapped(conninfo, os.path.join(plan.directory, bootstrap)) as scratch:
                    steps = _steps(scratch, plan, target, state.States(), set(), version)
            else:
                steps = _steps(conn, plan, target, states, applied, version)
            wrote_nothing = conn.execute("SELECT pg_current_xact_id_if_assigned() IS NULL").fetchone()[0]
        finally:
            conn.execute("ROLLBACK")
    return Preview(env, conninfo.display, version, bootstrap, Direction.ROLLBACK if rollback else Direction.APPLY,
                   steps, wrote_nothing, time.monotonic() - started)


def _steps(conn, plan: Plan, target: str | None, states, applied: set[str], version: str) -> list[StepPreview]:
    todo = [s for s in plan.order(target) if states[s.id].state != state.DONE]
    rules.squawk.prefetch([f for s in todo for f in _files(plan, s)], _major(version))
    return [_step(conn, plan, step, states, applied, version) for step in plan.order(target)]


@contextmanager
def _bootstrapped(target, bootstrap: str):
    """A throwaway database on the embedded server holding the bootstrap schema: the steps of
    an empty environment are previewed against the schema apply would give them first (their
    preconditions judged on the right tables). The environment's own database is not touched."""
    name = f"rollout_preview_{uuid.uuid4().hex[:12]}"
    admin = make_conninfo(target.conninfo, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as server:
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(make_conninfo(target.conninfo, dbname=name), autocommit=True) as scratch:
            with open(bootstrap, encoding="utf-8") as handle:
                try:
                    scratch.execute(handle.read())
                except psycopg.Error as exc:
                    raise StepFailed(f"{os.path.basename(bootstrap)} failed in a throwaway copy: "
                                     f"{describe_error(exc)}") from None
            scratch.execute("BEGIN READ ONLY")
            yield scratch
    finally:
        with psycopg.connect(admin, autocommit=True) as server:
            server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _major(version: str) -> str:
    return version.split(".")[0].split(" ")[0]


def _files(plan: Plan, step: Step) -> list[tuple[str, str, bool]]:
    return [(*m.source(d), m.transactional) for _, m in plan.step_migrations(step) for d in Direction]


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
    phases = ((Phase.FINALIZE,) if current in (state.ROLLING_OUT, state.ABORTED, state.FINALIZING)
              else (Phase.MIGRATE, Phase.FINALIZE))
    ctx = context(conn, plan, step, version)
    result.statements = [s for s in ctx.statements if s.direction == Direction.APPLY and s.phase in phases
                         and s.migration.hash not in applied]
    if current in (state.PENDING, state.MIGRATING, state.MIGRATED, state.FAILED):
        result.backfills = [_backfill(conn, step, job) for job in step.forward_backfills]
    result.findings = rules.lint(ctx)
    return result


def _rollback_step(conn, plan: Plan, step: Step, states: dict, applied: set[str], version: str) -> StepPreview:
    """What `rollout rollback` would run for the step: the rollbacks of its applied migrations,
    contract first, each with its locks, backups and findings."""
    current = states[step.id].state
    result = StepPreview(step.id, step.title, " ".join(step.description.split()), current)
    ctx = context(conn, plan, step, version)
    ctx.statements = [s for s in ctx.statements if s.direction == Direction.ROLLBACK
                      and s.migration.hash in applied]
    result.statements = ctx.statements
    rolled_back = {s.migration.id for s in ctx.statements}
    result.backfills = [_backfill(conn, step, job) for job in step.backfills if job.restores in rolled_back]
    result.findings = rules.lint(ctx)
    notes = []
    if step.flag and current != state.PENDING:
        if any(s.phase == Phase.FINALIZE for s in ctx.statements):
            notes.append(f"flag {step.flag} stays on while the contract is undone and its values put back (the old "
                         "shape is not there yet), then goes off before the expand is undone")
        else:
            notes.append(f"flag {step.flag} is turned off first, so the application leaves the new shape before it goes")
    if not result.statements:
        notes.append("nothing to roll back: no migration of the step is applied")
    waiting = [s.id for s in plan.dependents(step.id) if states[s.id].state != state.PENDING]
    if waiting:
        notes.append(f"{', '.join(waiting)} depend{'s' if len(waiting) == 1 else ''} on it and "
                     f"{'is' if len(waiting) == 1 else 'are'} applied: `rollout rollback {step.id}` refuses until "
                     f"they are rolled back; `--cascade` rolls them back first, as previewed here")
    result.note = "; ".join(notes) or None
    return result


def step_findings(conn, plan: Plan, step: Step) -> list[Finding]:
    """Every finding for a step about to start: what `rollout plan` shows for it."""
    version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
    return rules.lint(context(conn, plan, step, version))


def context(conn, plan: Plan, step: Step, version: str) -> Context:
    """Every statement of the step's files, apply and rollback, analysed and resolved against
    the catalog, with the sizes of the tables they lock: what the rules and the preview read."""
    ctx = Context(plan, step, conn, _major(version))
    catalog = Catalog(conn)
    proven: set[tuple[str, str]] = set()  # (table, column) a validated CHECK (column IS NOT NULL) proves
    checks: dict[str, tuple[str, str]] = {}
    schema = conn.execute("SELECT current_schema()").fetchone()[0]  # where an unqualified CREATE TABLE goes
    order = [(Direction.APPLY, plan.step_migrations(step))]
    order.append((Direction.ROLLBACK, list(reversed(plan.step_migrations(step)))))
    for direction, migrations in order:
        for phase, migration in migrations:
            path, text = migration.source(direction)
            relative = _relative(plan, path)
            holding: dict[str, tuple[Lock, int]] = {}  # what the migration's transaction holds so far
            created: set[str] = set()  # tables it created: nobody else sees them before it commits
            for effect in analyze(text):
                effect = _proven(catalog.resolve(effect), proven, checks)
                if migration.transactional:
                    effect = _still_held(_unseen(effect, created, schema), holding)
                for held in effect.locks:
                    if held.relation not in ctx.tables:
                        ctx.tables[held.relation] = _table(conn, held.relation)
                table = ctx.tables.get(effect.table) if effect.table else None
                ctx.statements.append(Statement(phase, direction, relative, migration, effect, table,
                                                _estimate(conn, effect, table), _rows_touched(conn, effect)))
    return ctx


def _unseen(effect: Effect, created: set, schema: str) -> Effect:
    """A table the same transaction created is invisible to other sessions until it commits:
    locks on it make nobody wait, and an index on it is built before anyone writes."""
    def qualified(name: str) -> str:  # a table the catalog does not know yet keeps the name written
        return name if "." in name else f"{schema}.{name}"

    mine = [r for r in effect.locks if qualified(r.relation) in created]
    if effect.creates_table:
        created.add(qualified(effect.creates_table))
    if not mine:
        return effect
    others = tuple(r for r in effect.locks if r not in mine)
    return effect.with_(locks=others, scans=effect.scans and bool(others), rewrites=effect.rewrites and bool(others),
                        notes=(*effect.notes, f"on {', '.join(r.relation for r in mine)}, created earlier in this "
                               "transaction: nobody else sees it until the commit"))


def _still_held(effect: Effect, held: dict) -> Effect:
    """Locks last until the transaction commits: a statement that follows an ADD COLUMN in the
    same migration runs under its ACCESS EXCLUSIVE, whatever it takes itself. `held` maps each
    relation to the lock the transaction holds on it and the line that took that lock."""
    locks = []
    for r in effect.locks:
        lock, since = held.get(r.relation, (r.lock, effect.line))
        combined = Lock.combine([lock, r.lock])
        if combined != lock:  # this statement raises the lock
            since = effect.line
        held[r.relation] = (combined, since)
        if combined != r.lock:
            r = RelationLock(r.relation, combined, f"held since line {since}, in the same transaction")
        locks.append(r)
    return effect.with_(locks=tuple(locks))


def _proven(effect: Effect, proven: set, checks: dict) -> Effect:
    """SET NOT NULL scans nothing after the step validated a CHECK (column IS NOT NULL): the
    documented way to set it without a long ACCESS EXCLUSIVE (checks added NOT VALID and
    validated in earlier migrations of the same step count)."""
    def bare(name: str) -> str:
        return name.split(".")[-1].strip('"')

    for name, table, column in effect.not_null_checks:
        checks[name] = (bare(table), column)
    for name in effect.validates:
        if name in checks:
            proven.add(checks[name])
    if effect.sets_not_null and effect.scans and all((bare(t), c) in proven for t, c in effect.sets_not_null):
        return effect.with_(scans=False, notes=("no scan: the step validated a CHECK (column IS NOT NULL) first",))
    return effect


def _relative(plan: Plan, path: str) -> str:
    return os.path.relpath(path, plan.directory)


def _table(conn, name: str) -> Table | None:
    row = conn.execute(
        """
        SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END, pg_total_relation_size(c.oid)
        FROM pg_class AS c WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p', 'm')
        """, (name,)).fetchone()
    return Table(name, row[0], row[1]) if row else None


def _rows_touched(conn, effect: Effect) -> int | None:
    """PostgreSQL's estimate of the rows an UPDATE or DELETE changes (EXPLAIN, which plans and
    writes nothing; a savepoint keeps a statement about a table not created yet harmless)."""
    if not effect.changes_rows:
        return None
    try:
        with conn.transaction():
            plan = conn.execute(b"EXPLAIN (FORMAT JSON) " + effect.sql.encode()).fetchone()[0]
    except psycopg.Error:
        return None
    if isinstance(plan, str):
        plan = json.loads(plan)
    if not plan:  # a rule rewrote it to nothing (DO INSTEAD NOTHING)
        return 0
    top = plan[0]["Plan"]
    return int(top["Plans"][0]["Plan Rows"]) if top.get("Plans") else int(top.get("Plan Rows", 0))


def _estimate(conn, effect: Effect, table: Table | None) -> str | None:
    """Duration of the scan or rewrite, and storage of a new index, from the table's statistics."""
    if table is None or table.rows is None:
        return None
    parts = []
    if effect.rewrites:
        parts.append(f"rewrite of ~{table.rows:,} rows: ~{_duration(table.rows / REWRITE_ROWS_PER_SECOND)}")
    elif effect.scans:
        parts.append(f"scan of ~{table.rows:,} rows: ~{_duration(table.rows / SCAN_ROWS_PER_SECOND)}")
    if effect.builds_index:
        width = conn.execute(
            "SELECT coalesce(sum(s.avg_width), 0) FROM pg_stats AS s JOIN pg_class AS c ON c.oid = to_regclass(%s) "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE s.schemaname = n.nspname "
            "AND s.tablename = c.relname AND s.attname = ANY (%s)",
            (table.name, list(effect.columns))).fetchone()[0] or 8 * len(effect.columns)
        # btree leaf tuples: the key plus an 8-byte header and a 4-byte line pointer, pages 90% full
        parts.append(f"new index ~{size(int(table.rows * (width + 12) / 0.9))}")
    return "; ".join(parts) or None


def _backfill(conn, step: Step, job) -> BackfillPreview:
    try:
        key = resolve_table_key(conn, job)
    except StepFailed as exc:
        return BackfillPreview(job.name, job.table, f"(after the expand migration: {exc})", None, None, None,
                               job.prepare, job.restores)
    template = BatchStatements(key, job).change(True, True).as_string(conn)
    table = _table(conn, f"{key.schema}.{key.table}")
    rows = table.rows if table else None
    batches = math.ceil(rows / job.batch_size) if rows else None
    estimate = f"~{_duration(rows / BACKFILL_ROWS_PER_SECOND)}" if rows else None
    return BackfillPreview(job.name, job.table, template, rows, batches, estimate, job.prepare, job.restores)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
