"""Locks: one operator per environment, and statements that never wait long for a table lock.

The environment lock is a session advisory lock: it dies with its connection, so a killed
process can never leave it behind (a lock row would). DDL runs under a short lock_timeout and
is retried with jittered exponential backoff, so a statement queued behind a long reader never
stalls the application's own queries for longer than lock_timeout.
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

from .errors import EnvironmentLocked, StepFailed

T = TypeVar("T")


def env_lock_key(env: str) -> int:
    """A stable signed 64-bit advisory lock key for an environment."""
    digest = hashlib.blake2b(f"rollout:{env}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def acquire_env_lock(conn: psycopg.Connection, env: str) -> None:
    """Take the environment's lock at once, or raise EnvironmentLocked naming the holder."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (env_lock_key(env),)).fetchone()[0]
    if not got:
        raise EnvironmentLocked(describe_env_lock_holder(conn, env))


def describe_env_lock_holder(conn: psycopg.Connection, env: str) -> str:
    holder = conn.execute(
        """
        SELECT l.pid, a.application_name, a.backend_start, a.client_addr::text
        FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND ((l.classid::bigint << 32) | l.objid::bigint) = %s
        """,
        (env_lock_key(env),),
    ).fetchone()
    if holder is None:
        return f"environment {env!r} was locked by another operator a moment ago; try again"
    pid, app, since, addr = holder
    run = None
    if conn.execute("SELECT to_regclass('rollout.runs')").fetchone()[0]:
        run = conn.execute(
            "SELECT actor, command, started_at FROM rollout.runs WHERE env = %s AND backend_pid = %s AND finished_at IS NULL",
            (env, pid),
        ).fetchone()
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


def set_local_timeouts(conn: psycopg.Connection, lock_ms: int, statement_ms: int) -> None:
    """lock_timeout and statement_timeout for the current transaction only."""
    conn.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                 (f"{lock_ms}ms", f"{statement_ms}ms"))


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
                        self.last = (f"blocked by pid {pid} (user {user}, {state}, holding its lock for "
                                     f"{held or 0:.1f}s): {' '.join((query or '').split())}")
        except psycopg.Error:
            pass  # the watcher only improves the message; it must never fail the migration

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=2)
