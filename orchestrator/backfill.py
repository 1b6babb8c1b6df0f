"""The backfill engine: batched data migrations that survive any crash, at full speed.

Batches are key ranges: the boundary is the n-th key after the cursor (an index range scan),
and the change touches `key > lo AND key <= hi`, so a batch costs the same at the start and
the end of a table of any size. Each batch commits together with its checkpoint in
rollout.backfills: a crash at any instant redoes at most the batch that did not commit.

Batches run on a work connection of their own; the session's connection only holds the
environment lock, so a dropped work connection is reconnected without losing the lock.
Pause and cancel are requests written to the checkpoint row from another terminal, read at
each batch boundary.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .database import connect
from .errors import ConnectionLost, RolloutError, StepFailed, Stopped, describe_error
from .health import LagMeter
from .locks import set_local_timeouts, with_lock_retries
from .plan import Backfill, Step, Timeouts
from .session import Session

MAX_RECONNECTS = 10
LOCK_PING_SECONDS = 5.0

# Errors caused by the data of a row: worth bisecting the batch down to the row.
_ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.RaiseException)


class BackfillStopped(Stopped):
    """An operator paused or cancelled a backfill; the step waits for `rollout backfill resume`."""


@dataclass(frozen=True)
class Progress:
    step_id: str
    name: str
    state: str
    rows_covered: int
    rows_changed: int
    estimate: int | None
    rows_per_second: float
    batch_size: int


@dataclass(frozen=True)
class TableKey:
    """The table a job visits and the columns (with their types) it batches by."""

    schema: str
    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)

    def columns_sql(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, self.columns))

    def row(self) -> sql.Composable:
        """The key as a row value: (a, b)."""
        return sql.SQL("({})").format(self.columns_sql())

    def placeholders(self) -> sql.Composable:
        """A row of typed placeholders: (%s::uuid, %s::text). Types come from the catalog."""
        return sql.SQL("({})").format(sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(t)) for t in self.types))


def resolve_table_key(conn: psycopg.Connection, job: Backfill) -> TableKey:
    """Look up the job's table and key; refuse a key no btree index leads with."""
    schema, _, table = job.table.rpartition(".")
    row = conn.execute(
        """
        SELECT c.oid, n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relname = %s AND c.relkind IN ('r', 'p')
          AND n.nspname = coalesce(nullif(%s, ''), current_schema())
        """,
        (table, schema),
    ).fetchone()
    if row is None:
        raise StepFailed(f"backfill {job.name}: table {job.table!r} does not exist; the step's migration should create it")
    oid, schema = row
    if job.key:
        columns = list(job.key)
    else:
        columns = [r[0] for r in conn.execute(
            """
            SELECT a.attname FROM pg_index AS i
            JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indrelid = %s AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)
            """,
            (oid,),
        )]
        if not columns:
            raise StepFailed(f"backfill {job.name}: {job.table} has no primary key; name a unique indexed `key:`")
    types = []
    for column in columns:
        found = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s AND attname = %s "
            "AND attnum > 0 AND NOT attisdropped", (oid, column)).fetchone()
        if found is None:
            raise StepFailed(f"backfill {job.name}: {job.table} has no column {column!r} (from `key:`)")
        types.append(found[0])
    indexed = conn.execute(
        """
        SELECT 1 FROM pg_index AS i JOIN pg_class AS ic ON ic.oid = i.indexrelid JOIN pg_am ON pg_am.oid = ic.relam
        WHERE i.indrelid = %s AND pg_am.amname = 'btree' AND i.indisvalid
          AND (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k (attnum, ord)
               JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
               WHERE k.ord <= %s) = %s::name[]
        """,
        (oid, len(columns), columns),
    ).fetchone()
    if indexed is None:
        raise StepFailed(f"backfill {job.name}: no valid btree index on {job.table} ({', '.join(columns)}); "
                         "each batch would scan the table. Batch by the primary key or index these columns")
    return TableKey(schema, table, tuple(columns), tuple(types))


def estimate_rows(conn: psycopg.Connection, key: TableKey) -> int | None:
    """Rows in the table from catalog statistics (no COUNT(*)); None before the first ANALYZE."""
    row = conn.execute(
        "SELECT c.reltuples FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s", (key.schema, key.table)).fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


@dataclass(frozen=True)
class BatchStatements:
    """The SQL of one job, composed once: the boundary lookup and the change, per range shape."""

    key: TableKey
    job: Backfill

    def boundary(self, has_lo: bool) -> sql.Composed:
        lower = sql.SQL("{} > {}").format(self.key.row(), self.key.placeholders()) if has_lo else sql.SQL("true")
        # the key's values as PostgreSQL prints them: the checkpoint keeps text that each type reads back
        # exactly (a jsonb, bytea or timestamp key as Python prints it would not)
        as_text = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in self.key.columns)
        # ORDER BY names the table's columns, qualified: a bare name would mean the text output column
        ordered = sql.SQL(", ").join(sql.SQL("{}.{}").format(self.key.ident, sql.Identifier(c))
                                     for c in self.key.columns)
        return sql.SQL("SELECT {as_text} FROM {table} WHERE {lower} ORDER BY {ordered} OFFSET %s LIMIT 1").format(
            as_text=as_text, ordered=ordered, table=self.key.ident, lower=lower)

    def remaining(self, has_lo: bool) -> sql.Composed:
        """Rows of the last batch (fewer than a batch by construction, so cheap to count)."""
        return sql.SQL("SELECT count(*) FROM {table} WHERE {lower}").format(
            table=self.key.ident, lower=self._range(has_lo, False))

    def change(self, has_lo: bool, has_hi: bool) -> sql.Composed:
        where = self._range(has_lo, has_hi)
        if self.job.where:
            where = sql.SQL("{} AND ({})").format(where, sql.SQL(self.job.where))
        if self.job.set is not None:
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = ({})").format(sql.Identifier(column), sql.SQL(expression))
                for column, expression in self.job.set.items())
            return sql.SQL("UPDATE {table} SET {set} WHERE {where}").format(
                table=self.key.ident, set=assignments, where=where)
        body = self.job.sql.strip().rstrip(";")
        own_ctes = re.match(r"(?is)^with\s+(?!recursive\b)", body)
        if own_ctes:  # the statement has CTEs of its own: `batch` goes first in the same WITH
            return sql.SQL("WITH batch AS (SELECT {cols} FROM {table} WHERE {where}), {rest}").format(
                cols=self.key.columns_sql(), table=self.key.ident, where=where, rest=sql.SQL(body[own_ctes.end():]))
        return sql.SQL("WITH batch AS (SELECT {cols} FROM {table} WHERE {where}) {body}").format(
            cols=self.key.columns_sql(), table=self.key.ident, where=where, body=sql.SQL(body))

    def _range(self, has_lo: bool, has_hi: bool) -> sql.Composable:
        parts = []
        if has_lo:
            parts.append(sql.SQL("{} > {}").format(self.key.row(), self.key.placeholders()))
        if has_hi:
            parts.append(sql.SQL("{} <= {}").format(self.key.row(), self.key.placeholders()))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


@dataclass(frozen=True)
class _Batch:
    hi: list[str] | None  # the new cursor; None when this was the last batch
    covered: int
    changed: int
    seconds: float
    stop: str | None = None  # 'pause' or 'cancel' when an operator asked
    waiters: int = 0  # sessions waiting on the batch's locks when it was about to commit


# sessions queued behind the batch's row locks, asked inside the batch's transaction before it commits
_WAITERS = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND pg_backend_pid() = ANY (pg_blocking_pids(pid))")
# a VACUUM (autovacuum's or a person's) working on the job's table now
_VACUUM = ("SELECT p.pid, a.backend_type = 'autovacuum worker' FROM pg_stat_progress_vacuum AS p "
           "LEFT JOIN pg_stat_activity AS a ON a.pid = p.pid WHERE p.relid = %s::regclass LIMIT 1")


class Engine:
    """Runs one backfill job to completion, a pause, a cancel, or a clear failure."""

    def __init__(self, session: Session, step: Step, job: Backfill, progress: Callable[[Progress], None]):
        self.session, self.step, self.progress = session, step, progress
        self.job = session.plan.environment(session.env).backfills.applied_to(job)
        self.timeouts: Timeouts = session.plan.timeouts(step)
        self.ids = (session.env, step.id, job.name)
        self.work: psycopg.Connection | None = None
        self.key = resolve_table_key(session.conn, job)
        self.statements = BatchStatements(self.key, job)
        self.estimate = estimate_rows(session.conn, self.key)
        self._last_ping = time.monotonic()
        self.lag = LagMeter()
        self._fence: int | None = None  # the WAL position before the last batch: standbys must reach it
        self.paced = 0.0  # seconds this run spent waiting for standbys or resting beside a VACUUM
        self._vacuum: int | None = None  # the VACUUM it last slowed down for
        self._regclass = self.key.ident.as_string(session.conn)  # the table, as ::regclass reads it

    def run(self) -> str:
        """Returns the job's final state: done, paused or cancelled. Raises StepFailed on failure."""
        checkpoint = self._start()
        lo, size = checkpoint["cursor"], checkpoint["batch_size"] or self.job.batch_size
        covered, changed, seconds = checkpoint["rows_covered"], checkpoint["rows_changed"], checkpoint["active_seconds"]
        if checkpoint["state"] == "done":
            return "done"
        if self.job.prepare:
            self._prepare()
        try:
            self.work = connect(self.session.target, "rollout backfill")
            while True:
                self._asking(self._yield_to_standbys, covered)
                batch = self._batch_with_retries(lo, size)
                if batch.stop:
                    state = "paused" if batch.stop == "pause" else "cancelled"
                    self.session.record(f"backfill.{state}", f"backfill {self.job.name} {state} at {covered} rows "
                                        f"({self._share(covered)}); `{self._continues('resume')}` continues",
                                        step_id=self.step.id, ok=False)
                    return state
                covered, changed, seconds = covered + batch.covered, changed + batch.changed, seconds + batch.seconds
                self._report("running" if batch.hi else "done", covered, changed, seconds, size)
                if batch.hi is None:
                    rate = covered / seconds if seconds else 0.0
                    paced = f"; {self.paced:.1f}s spent yielding to standbys and VACUUM" if self.paced >= 0.05 else ""
                    self.session.record("backfill.done", f"backfill {self.job.name} done: {changed} rows changed of "
                                        f"{covered} visited ({rate:,.0f} rows/s{paced})", step_id=self.step.id,
                                        detail={"rows_changed": changed, "rows_covered": covered, "seconds": seconds,
                                                "yielded_seconds": self.paced})
                    return "done"
                lo = batch.hi
                size = self._adapt(size, batch.seconds)
                if batch.waiters:
                    size = self._shrink(size, batch)
                self._asking(self._yield_to_vacuum, batch.seconds)
                self._ping_lock()
                if self.job.pause:
                    time.sleep(self.job.pause / 1000)
        finally:
            if self.work is not None:
                self.work.close()

    def _start(self) -> dict:
        """Create the checkpoint row or continue the one a previous run left."""
        with self.session.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(
                """
                INSERT INTO rollout.backfills (env, step_id, name, state, started_at) VALUES (%s, %s, %s, 'running', clock_timestamp())
                ON CONFLICT (env, step_id, name) DO UPDATE
                SET state = CASE WHEN rollout.backfills.state = 'done' THEN 'done' ELSE 'running' END,
                    error = NULL, requested = NULL, waiting = NULL, started_at = coalesce(rollout.backfills.started_at, clock_timestamp())
                RETURNING state, cursor, batch_size, rows_covered, rows_changed, active_seconds
                """,
                self.ids,
            )
            checkpoint = cur.fetchone()
        cursor = checkpoint["cursor"]
        if cursor is not None and not self._fits(cursor):
            raise StepFailed(
                f"backfill {self.job.name}: its checkpoint in rollout.backfills holds {cursor!r}, not one value for "
                f"each of its key's columns ({', '.join(self.key.columns)}): it was edited by hand. Start it over "
                f"with UPDATE rollout.backfills SET cursor = NULL WHERE step_id = '{self.step.id}' AND name = "
                f"'{self.job.name}' (a backfill only changes the rows that still need it), then run the same "
                "command again")
        resumed = cursor is not None and checkpoint["state"] != "done"
        if checkpoint["state"] != "done":
            where = f"from checkpoint after {checkpoint['rows_covered']} rows" if resumed else "from the start"
            size = f"about {self.estimate} rows" if self.estimate is not None else "size unknown: the table was never analysed"
            self.session.record("backfill.resume" if resumed else "backfill.start",
                                f"backfill {self.job.name} on {self.job.table} {where} ({size})", step_id=self.step.id)
        return checkpoint

    def _asking(self, question: Callable, *args) -> None:
        """Ask about the database's load on the session's connection; if that connection is gone
        (a server crash), stop as the batches do: on the lost lock, at the last checkpoint."""
        try:
            question(*args)
        except psycopg.OperationalError:
            self._ping_lock(force=True)
            raise

    def _yield_to_standbys(self, covered: int) -> None:
        """Before the next batch, wait while a standby has not replayed what came before the
        last batch (one batch in flight at most: a standby slower than the primary sets the
        pace), or replays further behind than the job's limit, which is recorded. An operator's
        pause or cancel is still honoured at once (the batch sees it)."""
        limit = self.job.max_replication_lag
        if limit is None:
            return
        fence = self._fence
        lag = self.lag.furthest(self.session.conn, fence)
        started, worst, reason, waited = time.monotonic(), lag.seconds if lag else 0.0, None, False
        while lag is not None and (lag.behind or lag.seconds > limit / 1000):
            waited = True
            if lag.seconds > limit / 1000 and reason is None:
                reason = f"{lag.shown()} (limit {limit / 1000:.1f}s)"
                self._set_waiting(reason)
                self.session.record("backfill.waiting", f"backfill {self.job.name} waits at {covered} rows: "
                                    f"{reason}", step_id=self.step.id, ok=False,
                                    detail={"standby": lag.standby, "lag_seconds": lag.seconds,
                                            "limit_seconds": limit / 1000})
            if self._requested():
                break
            time.sleep(0.01 if reason is None else 0.1)
            self._ping_lock()
            lag = self.lag.furthest(self.session.conn, fence)
            worst = max(worst, lag.seconds if lag else 0.0)
        self._fence = self.lag.position
        seconds = time.monotonic() - started
        if waited:
            self.paced += seconds
        if reason is not None:
            self._set_waiting(None)
            self.session.record("backfill.waited", f"backfill {self.job.name} goes on after {seconds:.1f}s "
                                f"(standby lag at most {worst:.1f}s)", step_id=self.step.id,
                                detail={"waited_seconds": seconds, "max_lag_seconds": worst})

    def _shrink(self, size: int, batch: _Batch) -> int:
        """Sessions queued behind the last batch's row locks: the next batches are half as big
        (so hold their rows half as long), whatever the time target says."""
        smaller = max(self.job.min_batch, min(size, batch.covered // 2))
        if smaller < batch.covered:
            self.session.record("backfill.yielded", f"backfill {self.job.name}: {batch.waiters} session"
                                f"{'s' if batch.waiters != 1 else ''} waited on the rows of its last batch "
                                f"({batch.seconds * 1000:.0f} ms); batches shrink to {smaller} rows",
                                step_id=self.step.id, detail={"waiters": batch.waiters, "batch_size": smaller})
        return smaller

    def _yield_to_vacuum(self, last_batch_seconds: float) -> None:
        """While a VACUUM works on the table, rest as long as each batch took: half speed, so
        the dead rows the backfill leaves do not outrun it."""
        found = self.session.conn.execute(_VACUUM, (self._regclass,)).fetchone()
        if found is None:
            if self._vacuum is not None:
                self._vacuum = None
                self._set_waiting(None)
            return
        pid, auto = found
        if pid != self._vacuum:
            self._vacuum = pid
            who = "autovacuum" if auto else "a VACUUM"
            reason = f"{who} (pid {pid}) is working on {self.job.table}: half speed"
            self._set_waiting(reason)
            self.session.record("backfill.slowed", f"backfill {self.job.name}: {reason}", step_id=self.step.id,
                                detail={"vacuum_pid": pid, "autovacuum": bool(auto)})
        time.sleep(last_batch_seconds)
        self.paced += last_batch_seconds

    def _continues(self, verb: str) -> str:
        """The command that continues this job: a restore runs only within its step's rollback."""
        return f"rollout rollback {self.step.id}" if self.job.restores else f"rollout backfill {verb} {self.step.id}"

    def _set_waiting(self, reason: str | None) -> None:
        self.session.conn.execute("UPDATE rollout.backfills SET waiting = %s, updated_at = clock_timestamp() "
                                  "WHERE env = %s AND step_id = %s AND name = %s", (reason, *self.ids))

    def _requested(self) -> bool:
        return self.session.conn.execute("SELECT requested IS NOT NULL FROM rollout.backfills WHERE env = %s AND "
                                         "step_id = %s AND name = %s", self.ids).fetchone()[0]

    def _prepare(self) -> None:
        """The job's `prepare` statements: DDL, so under lock_timeout with retries, in one transaction."""
        conn = self.session.conn

        def run() -> None:
            with conn.transaction():
                set_local_timeouts(conn, self.timeouts.lock, self.timeouts.statement)
                conn.execute(self.job.prepare)
        try:
            with_lock_retries(conn, run, budget_ms=self.timeouts.retry_budget, what=f"backfill {self.job.name}: prepare")
        except psycopg.Error as exc:
            raise StepFailed(f"backfill {self.job.name}: its prepare statements failed: {describe_error(exc)}") from None

    def _fits(self, cursor: object) -> bool:
        """Whether a checkpoint is what _batch writes: one value of each key column's type, in text."""
        if not isinstance(cursor, list) or len(cursor) != len(self.key.columns) or \
                not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in cursor):
            return False
        try:
            with self.session.conn.transaction():  # a value the key's type refuses ('abc' for an integer key)
                self.session.conn.execute(sql.SQL("SELECT {}").format(self.key.placeholders()), [str(v) for v in cursor])
        except (psycopg.DataError, psycopg.errors.SyntaxError):
            return False
        return True

    def _batch_with_retries(self, lo: list[str] | None, size: int) -> _Batch:
        """One batch, retried: lock timeouts back off, timeouts and row errors split the batch,
        a dropped connection reconnects. A single row that cannot be converted stops the job
        or, with on_error: record, is recorded and skipped."""
        delay, reconnects = 0.05, 0
        lock_deadline = time.monotonic() + self.timeouts.retry_budget / 1000
        while True:
            try:
                return self._batch(lo, size)
            except psycopg.errors.LockNotAvailable:
                if time.monotonic() + delay > lock_deadline:
                    if size <= self.job.min_batch:
                        self._fail(f"could not lock its rows within the retry budget at batch size {size}")
                    size, lock_deadline = max(self.job.min_batch, size // 2), time.monotonic() + self.timeouts.retry_budget / 1000
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 5.0)
            except psycopg.errors.QueryCanceled as exc:
                if size == 1:
                    self._fail(f"one row took longer than statement_timeout: {exc.diag.message_primary}")
                size = max(1, size // 2)
            except _ROW_ERRORS as exc:
                if size > 1:
                    size = max(1, size // 2)  # bisect toward the row that fails
                    continue
                lo, size = self._row_failed(lo, exc), self.job.batch_size
            except psycopg.OperationalError as exc:
                if not (self.work.closed or self.work.broken):
                    self._fail(f"database error: {exc}")
                self._ping_lock(force=True)  # a server crash takes the environment lock too: then stop
                reconnects += 1
                if reconnects > MAX_RECONNECTS:
                    raise ConnectionLost(f"backfill {self.job.name}: the work connection dropped {MAX_RECONNECTS} "
                                         "times; stopped at a committed checkpoint. Run the same command again") from None
                time.sleep(min(0.1 * 2 ** reconnects, 5.0))
                self.work.close()
                try:
                    self.work = connect(self.session.target, "rollout backfill")
                except RolloutError:
                    continue
                self.session.record("backfill.reconnect", f"backfill {self.job.name}: reconnected after a dropped "
                                    f"connection (attempt {reconnects}); redoing the uncommitted batch",
                                    step_id=self.step.id, ok=False)

    def _batch(self, lo: list[str] | None, size: int) -> _Batch:
        work, s = self.work, self.statements
        started = time.monotonic()
        with work.transaction():
            # rollout.backfill tells add_column's on_update triggers that rollout, not an application, writes
            set_local_timeouts(work, self.timeouts.lock, self.timeouts.statement, {"rollout.backfill": self.job.name})
            requested = work.execute(
                "SELECT requested FROM rollout.backfills WHERE env = %s AND step_id = %s AND name = %s FOR UPDATE",
                self.ids).fetchone()[0]
            if requested:
                work.execute("UPDATE rollout.backfills SET state = %s, requested = NULL, updated_at = clock_timestamp() "
                             "WHERE env = %s AND step_id = %s AND name = %s",
                             ("paused" if requested == "pause" else "cancelled", *self.ids))
                return _Batch(hi=None, covered=0, changed=0, seconds=0.0, stop=requested)
            lo_params = list(lo) if lo else []
            found = work.execute(s.boundary(bool(lo)), [*lo_params, size - 1]).fetchone()
            hi = [str(v) for v in found] if found else None
            if hi is None:
                covered = work.execute(s.remaining(bool(lo)), lo_params).fetchone()[0]
            else:
                covered = size
            changed = work.execute(s.change(bool(lo), hi is not None), [*lo_params, *(hi or [])]).rowcount
            waiters = work.execute(_WAITERS).fetchone()[0]
            seconds = time.monotonic() - started
            work.execute(
                """
                UPDATE rollout.backfills
                SET cursor = coalesce(%s, cursor), rows_covered = rows_covered + %s, rows_changed = rows_changed + %s,
                    batches = batches + 1, batch_size = %s, active_seconds = active_seconds + %s,
                    state = %s, updated_at = clock_timestamp(),
                    finished_at = CASE WHEN %s THEN clock_timestamp() END
                WHERE env = %s AND step_id = %s AND name = %s
                """,
                (json.dumps(hi) if hi else None, covered, max(changed, 0), size, seconds,
                 "running" if hi else "done", hi is None, *self.ids),
            )
        return _Batch(hi=hi, covered=covered, changed=max(changed, 0), seconds=seconds, waiters=waiters)

    def _row_failed(self, lo: list[str] | None, exc: psycopg.Error) -> list[str]:
        """The batch is one row and it fails: stop, or record it and move the cursor past it."""
        found = self.work.execute(self.statements.boundary(bool(lo)), [*(lo or []), 0]).fetchone()
        key = [str(v) for v in found] if found else None
        reason = f"{exc.diag.message_primary} [SQLSTATE {exc.diag.sqlstate}]"
        shown = ", ".join(f"{c}={v}" for c, v in zip(self.key.columns, key or []))
        if self.job.on_error == "stop" or key is None:
            self._fail(f"row ({shown}) cannot be converted: {reason}. Fix the row or the change, then "
                       f"`{self._continues('run')}`; or set on_error: record to record such rows and go on")
        with self.work.transaction():
            self.work.execute("INSERT INTO rollout.backfill_errors (env, step_id, name, key, error) "
                              "VALUES (%s, %s, %s, %s, %s)", (*self.ids, json.dumps(key), reason))
            self.work.execute("UPDATE rollout.backfills SET cursor = %s, rows_covered = rows_covered + 1, "
                              "rows_failed = rows_failed + 1, updated_at = clock_timestamp() "
                              "WHERE env = %s AND step_id = %s AND name = %s", (json.dumps(key), *self.ids))
        self.session.record("backfill.row_failed", f"backfill {self.job.name}: recorded row ({shown}) it cannot "
                            f"convert: {reason}", step_id=self.step.id, ok=False)
        return key

    def _fail(self, reason: str) -> None:
        message = f"backfill {self.job.name} on {self.job.table}: {reason}"
        try:
            self.session.conn.execute("UPDATE rollout.backfills SET state = 'failed', error = %s, "
                                      "updated_at = clock_timestamp() WHERE env = %s AND step_id = %s AND name = %s",
                                      (reason, *self.ids))
        except psycopg.OperationalError:
            pass  # the checkpoint still says running; the next run continues from it
        raise StepFailed(message)

    def _adapt(self, size: int, seconds: float) -> int:
        """Grow or shrink toward the target batch time, at most doubling or halving at once."""
        factor = min(2.0, max(0.5, (self.job.target_batch_time / 1000) / max(seconds, 1e-4)))
        return int(min(self.job.max_batch, max(self.job.min_batch, size * factor)))

    def _ping_lock(self, force: bool = False) -> None:
        """Every few seconds, check the connections that hold the environment lock and run the
        backfill's bookkeeping are alive."""
        if not force and time.monotonic() - self._last_ping < LOCK_PING_SECONDS:
            return
        self._last_ping = time.monotonic()
        what = f"backfill {self.job.name}"
        if self.session.lock is not None:
            self.session.lock.check(what)
        try:
            self.session.conn.execute("SELECT 1")
        except psycopg.Error:
            raise ConnectionLost(f"{what}: lost its connection to the database; stopped at a committed checkpoint. "
                                 "Run the same command again to continue") from None

    def _share(self, covered: int) -> str:
        return f"{100 * covered / self.estimate:.0f}%" if self.estimate else "of an unknown total"

    def _report(self, state: str, covered: int, changed: int, seconds: float, size: int) -> None:
        rate = covered / seconds if seconds else 0.0
        self.progress(Progress(self.step.id, self.job.name, state, covered, changed,
                               max(self.estimate, covered) if self.estimate is not None else None, rate, size))
