"""Locks: one operator per environment, and statements that never wait long for a table lock.

The environment lock is `LOCK TABLE rollout."lock <env>" IN EXCLUSIVE MODE`, held in an open
transaction by a connection of its own for as long as the command runs:
- only a role that may write rollout's tables can take it (that mode needs UPDATE, DELETE or
  TRUNCATE on the table, which only its owner, the operator role, has): the application's role
  cannot take it and turn operators away, as it could an advisory lock, which any role may take;
- it dies with its connection, so a killed process can never leave it behind (a lock row would);
- it assigns no transaction id and holds no snapshot between statements, so it holds back no
  vacuum however long a backfill runs.
DDL runs under a short lock_timeout and is retried with jittered exponential backoff, so a
statement queued behind a long reader never stalls the application's own queries for longer
than lock_timeout.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg import sql

from .errors import ConnectionLost, EnvironmentLocked, PermissionDenied, StepFailed

T = TypeVar("T")


def env_lock_table(env: str) -> str:
    """The name of the table whose lock is the environment's (a fixed length for any name)."""
    return "lock " + hashlib.blake2b(env.encode(), digest_size=8).hexdigest()


class EnvLock:
    """An environment's lock, held by its own connection until `release` (or the process ends)."""

    def __init__(self, holder: psycopg.Connection, env: str):
        self.holder, self.env = holder, env

    def check(self, what: str) -> None:
        """Raise ConnectionLost if the connection holding the lock is gone (another operator may
        have it now): `what` names the work that stops."""
        try:  # an empty query: any statement would take a snapshot, and CREATE INDEX CONCURRENTLY waits for those
            self.holder.execute("")
        except psycopg.Error:
            raise ConnectionLost(f"{what}: lost the connection holding the environment lock of {self.env!r}; "
                                 "stopped at what had committed. Run the same command again to continue") from None

    def release(self) -> None:
        self.holder.close()

    def __enter__(self) -> EnvLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_env_lock(conn: psycopg.Connection, env: str) -> EnvLock:
    """Take the environment's lock at once, or raise EnvironmentLocked naming the holder.
    `conn` is the operator's connection: the lock's own connection is made like it."""
    table = sql.Identifier("rollout", env_lock_table(env))
    _ensure_lock_table(conn, env)
    holder = psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True,
                             application_name=(conn.info.parameter_status("application_name") or "rollout")[:63])
    try:
        holder.execute("SET idle_in_transaction_session_timeout = 0")  # it idles in its transaction by design
        holder.execute("BEGIN")
        holder.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE NOWAIT").format(table))
    except psycopg.errors.LockNotAvailable:
        holder.close()
        raise EnvironmentLocked(describe_env_lock_holder(conn, env)) from None
    except psycopg.errors.InsufficientPrivilege:
        holder.close()
        raise PermissionDenied(
            f"role {conn.info.user!r} may not take environment {env!r}'s lock (LOCK TABLE on rollout's table "
            f"{env_lock_table(env)!r} needs UPDATE on it): only the operator role, which owns the rollout schema, "
            "may change this environment; run the command as that role") from None
    except BaseException:
        holder.close()
        raise
    return EnvLock(holder, env)


def _ensure_lock_table(conn: psycopg.Connection, env: str) -> None:
    """The environment's lock table, and the rollout schema it lives in (created on first use;
    two operators starting at once both get them)."""
    name = env_lock_table(env)
    for attempt in range(3):
        if conn.execute("SELECT to_regclass(%s)", (f'rollout."{name}"',)).fetchone()[0] is not None:
            return
        try:
            with conn.transaction():
                conn.execute("CREATE SCHEMA IF NOT EXISTS rollout")
                conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ()").format(sql.Identifier("rollout", name)))
                conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
                    sql.Identifier("rollout", name), sql.Literal(f"rollout's lock of environment {env}")))
            return
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject, psycopg.errors.DuplicateTable,
                psycopg.errors.DuplicateSchema):
            continue  # another operator created it a moment ago
        except psycopg.errors.InsufficientPrivilege:
            raise PermissionDenied(
                f"role {conn.info.user!r} may not create rollout's state in this database (environment {env!r}): "
                "run the command as the operator role, which owns the rollout schema") from None


def describe_env_lock_holder(conn: psycopg.Connection, env: str) -> str:
    holder = conn.execute(
        """
        SELECT l.pid, a.application_name, a.backend_start, a.client_addr::text
        FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)
        WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'ExclusiveLock'
          AND l.relation = to_regclass(%s)
        """,
        (f'rollout."{env_lock_table(env)}"',),
    ).fetchone()
    if holder is None:
        return f"environment {env!r} was locked by another operator a moment ago; try again"
    pid, app, since, addr = holder
    run = None
    if conn.execute("SELECT to_regclass('rollout.runs')").fetchone()[0]:
        run = conn.execute(
            "SELECT actor, command, started_at FROM rollout.runs WHERE env = %s AND finished_at IS NULL "
            "ORDER BY started_at DESC LIMIT 1", (env,)).fetchone()
    who = f"{run[0]} running `rollout {run[1]}` since {run[2]:%Y-%m-%d %H:%M:%S %Z}" if run else (
        f"{app or 'a session'} since {since:%Y-%m-%d %H:%M:%S %Z}")
    return (
        f"environment {env!r} is locked by {who} (backend pid {pid}{', from ' + addr if addr else ''}); "
        "wait for it to finish, or stop that process (its lock is released when its connection closes)"
    )


class LockBudgetExhausted(StepFailed):
    """Lock timeouts kept recurring until the retry budget ran out."""


@contextmanager
def session_timeouts(conn: psycopg.Connection, lock_ms: int, statement_ms: int):
    """lock_timeout and statement_timeout for statements run outside a transaction."""
    conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                 (f"{lock_ms}ms", f"{statement_ms}ms"))
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("RESET lock_timeout")
            conn.execute("RESET statement_timeout")


def set_local_timeouts(conn: psycopg.Connection, lock_ms: int, statement_ms: int,
                       settings: dict[str, str] | None = None) -> None:
    """lock_timeout and statement_timeout for the current transaction only, with any other
    `settings` (rollout.migration, rollout.backfill) in the same round trip."""
    values = {"lock_timeout": f"{lock_ms}ms", "statement_timeout": f"{statement_ms}ms", **(settings or {})}
    conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value)) for name, value in values.items())))


def with_lock_retries(
    conn: psycopg.Connection,
    action: Callable[[], T],
    *,
    budget_ms: int,
    what: str,
    on_retry: Callable[[int, float], None] = lambda attempt, delay: None,
) -> T:
    """Run `action`; on lock_timeout (55P03) wait a jittered, doubling delay and run it again.

    Retries stop when the next wait would pass `budget_ms`; the error then names the session
    that held the lock, seen by a watcher that runs during the retries.
    """
    deadline = time.monotonic() + budget_ms / 1000
    delay = 0.05
    attempt = 0
    watcher: _BlockerWatch | None = None
    try:
        while True:
            try:
                return action()
            except psycopg.errors.LockNotAvailable:
                attempt += 1
                pause = delay * random.uniform(0.5, 1.5)
                if time.monotonic() + pause > deadline:
                    blocker = watcher.last if watcher else None
                    raise LockBudgetExhausted(
                        f"{what}: could not get its lock after {attempt} attempts in {budget_ms / 1000:.1f}s; "
                        f"{blocker or 'the blocking session ended before it could be seen'}. "
                        "Retry when that session is done, or raise timeouts.retry_budget"
                    ) from None
                if watcher is None:
                    watcher = _BlockerWatch(conn)
                on_retry(attempt, pause)
                time.sleep(pause)
                delay = min(delay * 2, 5.0)
    finally:
        if watcher:
            watcher.stop()


class _BlockerWatch:
    """Polls, from a second connection, which sessions block ours, so a failure can name them."""

    def __init__(self, conn: psycopg.Connection):
        self.last: str | None = None
        self._pid = conn.info.backend_pid
        self._conninfo = conn.info.dsn
        self._password = conn.info.password
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with psycopg.connect(self._conninfo, password=self._password, autocommit=True,
                                 application_name="rollout lock watcher") as conn:
                while not self._done.wait(0.02):
                    row = conn.execute(
                        """
                        SELECT a.pid, a.usename, a.state, left(a.query, 200),
                               extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))
                        FROM pg_stat_activity AS a
                        WHERE a.pid = ANY (pg_blocking_pids(%s)) ORDER BY a.xact_start LIMIT 1
                        """,
                        (self._pid,),
                    ).fetchone()
                    if row:
                        pid, user, state, query, held = row
                        if state is None:  # another role's session, without pg_read_all_stats: PostgreSQL hides it
                            self.last = (f"blocked by pid {pid} (user {user}); its query is hidden from this role "
                                         "(membership in pg_read_all_stats shows it)")
                        else:
                            self.last = (f"blocked by pid {pid} (user {user}, {state}, holding its lock for "
                                         f"{held or 0:.1f}s): {' '.join((query or '').split())}")
        except psycopg.Error:
            pass  # the watcher only improves the message; it must never fail the migration

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=2)
