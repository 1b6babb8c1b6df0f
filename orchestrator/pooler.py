"""Refuse a connection pooler in transaction mode before anything changes.

Through PgBouncer's `pool_mode = transaction`, or Supabase's pooler on port 6543, each
transaction may run on another server session. rollout needs one session for a whole command:
its environment lock is a transaction held open on a connection of its own, its lock_timeout
and statement_timeout are session settings, CREATE INDEX CONCURRENTLY runs outside a
transaction, and psycopg prepares statements it repeats. Over such a pooler they would hold
on one server session and be missing from the next, silently.

What PostgreSQL shows decides, not the DSN: the operator's connection runs a statement, then a
second connection opens a transaction, and the operator's connection runs one more. A direct
connection (or a pooler in session mode) keeps its server session: the second connection gets
another one. A transaction pooler hands the first connection's idle server session to the
second (PgBouncer reuses the last one released), so the second sees the first's backend, or
the first moves to another. Either is proof.
"""

from __future__ import annotations

import psycopg

from .database import Target, connect
from .errors import UsageError

SUPABASE_TRANSACTION_PORT = 6543


def refuse_transaction_pooler(conn: psycopg.Connection, target: Target) -> None:
    """Raise UsageError (exit 2) when `conn` goes through a pooler in transaction mode."""
    host, port = conn.info.host or "", conn.info.port
    if host.endswith(".pooler.supabase.com") and port == SUPABASE_TRANSACTION_PORT:
        raise UsageError(_message(target, f"{host}:{port} is Supabase's pooler in transaction mode"))
    try:
        first = _backend(conn)
        with connect(target, "rollout pooler check") as probe:
            probe.execute("BEGIN")  # holds whichever server session the pooler hands it until the check ends
            other = _backend(probe)
            if other == first:
                raise UsageError(_message(target, "a second connection was served by the first one's server "
                                                  f"session (backend {first})"))
            again = _backend(conn)
            probe.execute("ROLLBACK")
    except psycopg.Error as exc:  # a pooler in statement mode refuses BEGIN itself
        raise UsageError(_message(target, f"it refused a transaction: {' '.join(str(exc).split())}")) from None
    if again != first:
        raise UsageError(_message(target, f"one connection moved from server session {first} to {again} between "
                                          "two statements"))


def _backend(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def _message(target: Target, evidence: str) -> str:
    return (f"environment {target.env!r} at {target.display} goes through a connection pooler in transaction mode "
            f"({evidence}). rollout needs one server session for a whole command: its environment lock, its "
            "lock_timeout and CREATE INDEX CONCURRENTLY would hold on one session and be missing from the next. "
            "Connect directly to PostgreSQL (Supabase: the direct connection, db.<project>.supabase.co:5432, or the "
            "pooler's session mode on port 5432), or use a pool with pool_mode = session. Applications may keep "
            "the transaction pooler: flags and reads work through it")
