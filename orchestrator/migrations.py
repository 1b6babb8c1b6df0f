"""Running yoyo migrations under rollout's rules, with yoyo's own bookkeeping.

yoyo's apply_one runs a migration on a second connection and marks it applied in another
transaction; a crash between the two leaves a change applied but unrecorded. Here the
statements, yoyo's mark and rollout's event commit in one transaction, so `yoyo list` and
`rollout status` always agree with the schema. A `-- transactional: false` migration (CREATE
INDEX CONCURRENTLY) runs statement by statement and is marked after its last statement; its
statements must be idempotent (IF NOT EXISTS) so a re-run after a crash completes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import psycopg
from psycopg import sql
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri

from .locks import session_timeouts, set_local_timeouts, with_lock_retries
from .plan import Migration, Timeouts

YOYO_TABLE = "_yoyo_migration"


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
    # later one. Under rollout's advisory lock no other yoyo run of ours is live, so clear it.
    backend.break_lock()
    backend.ensure_internal_schema_updated()
    return backend


def applied_hashes(conn: psycopg.Connection) -> set[str]:
    """Hashes of the migrations yoyo records as applied (read-only; empty before the first run)."""
    if not conn.execute("SELECT to_regclass(%s)", (YOYO_TABLE,)).fetchone()[0]:
        return set()
    query = sql.SQL("SELECT migration_hash FROM {}").format(sql.Identifier(YOYO_TABLE))
    return {row[0] for row in conn.execute(query)}


_CONCURRENT_INDEX = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\"[^\"]+\"|[\w$]+)",
    re.IGNORECASE,
)


def drop_invalid_index_leftover(conn: psycopg.Connection, statement: str) -> str | None:
    """A killed or failed CREATE INDEX CONCURRENTLY leaves an INVALID index that IF NOT EXISTS
    would then keep forever; drop it so the build runs again. Returns the dropped index name."""
    match = _CONCURRENT_INDEX.match(statement)
    if not match:
        return None
    name = match.group("name").strip('"')
    row = conn.execute(
        """
        SELECT n.nspname FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relname = %s AND NOT x.indisvalid AND n.nspname = ANY (current_schemas(false))
        """,
        (name,),
    ).fetchone()
    if row is None:
        return None
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(sql.Identifier(row[0]), sql.Identifier(name)))
    return name


def run_migration(
    conn: psycopg.Connection,
    backend: PostgresqlPsycopgBackend,
    migration: Migration,
    direction: str,
    timeouts: Timeouts,
    record: Callable[[], None],
    on_retry: Callable[[int, float], None],
    on_cleanup: Callable[[str], None],
) -> None:
    """Apply or roll back one migration; `record` writes rollout's event in the same transaction."""
    statements = migration.statements if direction == "apply" else migration.rollback
    what = f"migration {migration.id} ({direction})"

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
                set_local_timeouts(conn, timeouts.lock, timeouts.statement)
                for statement in statements:
                    conn.execute(statement)
                bookkeeping()

        with_lock_retries(conn, attempt, budget_ms=timeouts.retry_budget, what=what, on_retry=on_retry)
        return

    with session_timeouts(conn, timeouts.lock, timeouts.statement):
        for statement in statements:
            dropped = drop_invalid_index_leftover(conn, statement)
            if dropped:
                on_cleanup(dropped)
            with_lock_retries(conn, lambda s=statement: conn.execute(s), budget_ms=timeouts.retry_budget,
                              what=what, on_retry=on_retry)
    with conn.transaction():
        bookkeeping()
