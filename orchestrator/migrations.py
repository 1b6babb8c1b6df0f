"""Running yoyo migrations under rollout's rules, with yoyo's own bookkeeping.

yoyo's apply_one runs a migration on a second connection and marks it applied in another
transaction; a crash between the two leaves a change applied but unrecorded. Here the
statements, yoyo's mark and rollout's event commit in one transaction, so `yoyo list` and
`rollout status` always agree with the schema. A `-- transactional: false` migration (CREATE
INDEX CONCURRENTLY) runs statement by statement and is marked after its last statement; its
statements must be idempotent (IF NOT EXISTS) so a re-run after a crash completes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri

from .analysis import Effect, analyze
from .errors import StepFailed
from .locks import session_timeouts, set_local_timeouts, with_lock_retries
from .plan import Direction, Migration, Timeouts

YOYO_TABLE = "_yoyo_migration"
YOYO_TABLES = (YOYO_TABLE, "_yoyo_log", "_yoyo_version", "yoyo_lock")  # yoyo's bookkeeping, in the application's schema


class _SharedConnectionBackend(PostgresqlPsycopgBackend):
    """yoyo's PostgreSQL backend over a connection rollout already holds."""

    def __init__(self, conn: psycopg.Connection):
        self._shared = conn
        super().__init__(dburi=parse_uri(f"postgresql+psycopg:///{conn.info.dbname}"), migration_table=YOYO_TABLE)

    def connect(self, dburi):
        return self._shared


def yoyo_backend(conn: psycopg.Connection) -> PostgresqlPsycopgBackend:
    """yoyo's bookkeeping tables ready on `conn`. Call with the environment lock held."""
    backend = _SharedConnectionBackend(conn)
    backend.init_database()
    # yoyo's own lock is a row with a client pid: a killed run leaves it behind and blocks every
    # later one. Under rollout's environment lock no other yoyo run of ours is live, so clear it.
    backend.break_lock()
    backend.ensure_internal_schema_updated()
    # Every role may read which migrations are applied (rollout status), as it may read rollout's state.
    conn.execute(sql.SQL("GRANT SELECT ON {}, {} TO PUBLIC").format(sql.Identifier(YOYO_TABLE),
                                                                    sql.Identifier("_yoyo_log")))
    return backend


def applied_hashes(conn: psycopg.Connection) -> set[str]:
    """Hashes of the migrations yoyo records as applied (read-only; empty before the first run)."""
    if not conn.execute("SELECT to_regclass(%s)", (YOYO_TABLE,)).fetchone()[0]:
        return set()
    query = sql.SQL("SELECT migration_hash FROM {}").format(sql.Identifier(YOYO_TABLE))
    return {row[0] for row in conn.execute(query)}


def drop_invalid_index(conn: psycopg.Connection, name: str) -> bool:
    """Drop index `name` if it exists and is INVALID (what a killed or failed CREATE INDEX
    CONCURRENTLY leaves, and what IF NOT EXISTS would otherwise keep forever)."""
    row = conn.execute(
        """
        SELECT n.nspname FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relname = %s AND NOT x.indisvalid AND n.nspname = ANY (current_schemas(false))
        """,
        (name,),
    ).fetchone()
    if row is None:
        return False
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(sql.Identifier(row[0]), sql.Identifier(name)))
    return True


@dataclass(frozen=True)
class Hooks:
    """What the runner does around a migration's statements."""

    record: Callable[[], None]  # write rollout's event, inside the migration's transaction
    on_retry: Callable[[int, float], None]  # a lock timeout is being retried
    on_cleanup: Callable[[str], None]  # an INVALID index leftover was dropped
    backup: Callable[[list[str]], None]  # tables a destructive statement is about to change


def run_migration(conn: psycopg.Connection, backend: PostgresqlPsycopgBackend, migration: Migration,
                  direction: str, timeouts: Timeouts, hooks: Hooks) -> None:
    """Apply or roll back one migration: statements, yoyo's mark and rollout's event together."""
    statements = migration.runs(Direction(direction))
    effects = [next(iter(analyze(statement)), None) for statement in statements]
    destructive = sorted({e.table for e in effects if e is not None and e.loses_data and e.table})
    if destructive:
        hooks.backup(destructive)  # before any lock is taken: pg_dump must be able to read them
    what = f"migration {migration.id} ({direction})"
    record = hooks.record

    def bookkeeping() -> None:
        if direction == "apply":
            backend.mark_one(migration, log=False)
        else:
            backend.unmark_one(migration, log=False)
        backend.log_migration(migration, direction)
        record()

    if migration.transactional:
        def attempt() -> None:
            with conn.transaction():
                # what rollout.keep_function keeps, and put_back_function finds, is this migration's
                set_local_timeouts(conn, timeouts.lock, timeouts.statement, {"rollout.migration": migration.id})
                for statement, effect in zip(statements, effects):
                    _execute(conn, statement, effect, timeouts, local=True)
                bookkeeping()

        with_lock_retries(conn, attempt, budget_ms=timeouts.retry_budget, what=what, on_retry=hooks.on_retry)
        return

    with session_timeouts(conn, timeouts.lock, timeouts.statement):
        for statement, effect in zip(statements, effects):
            index = effect.index if effect is not None and effect.index and not effect.transactional else None
            if index and drop_invalid_index(conn, index):
                hooks.on_cleanup(index)
            with_lock_retries(conn, lambda s=statement, e=effect: _execute(conn, s, e, timeouts, local=False),
                              budget_ms=timeouts.retry_budget, what=what, on_retry=hooks.on_retry)
            if index and drop_invalid_index(conn, index):
                raise StepFailed(f"{what}: index {index} was built INVALID (a unique violation or a cancelled "
                                 "build); it was dropped. Fix the cause and run the same command again")
    with conn.transaction():
        bookkeeping()


def _execute(conn: psycopg.Connection, statement: str, effect: Effect | None, timeouts: Timeouts, *, local: bool) -> None:
    """Run one statement. Those meant to run long without blocking (CREATE INDEX CONCURRENTLY,
    VALIDATE CONSTRAINT) run without statement_timeout; every other one keeps it."""
    if effect is None or not effect.long_running_ok:
        conn.execute(statement)
        return
    conn.execute("SELECT set_config('statement_timeout', '0', %s)", (local,))
    try:
        conn.execute(statement)
    finally:
        if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('statement_timeout', %s, %s)", (f"{timeouts.statement}ms", local))
