"""A backfill yields to a busy database: to a standby that falls behind (a real streaming
standby from PostgreSQL 15's pg_basebackup, its replay paused, never a simulated number), to
sessions queued behind its rows, and to a VACUUM working on its table."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from . import pg15
from .conftest import Rollout, write_plan

ROWS = 20_000
PLAN = """\
version: 1
environments:
  local: {database: embedded}
steps:
  - id: fill
    title: fill a column
    priority: high
    migrate: migrate
    backfills:
      - name: doubled
        table: items
        set: {doubled: n * 2}
        where: doubled IS NULL
        batch_size: 500
        max_batch: 500
        pause: 50ms
        max_replication_lag: 300ms
"""
FILES = {"migrate/0001_doubled.sql": "ALTER TABLE items ADD COLUMN doubled bigint;\n",
         "migrate/0001_doubled.rollback.sql": "ALTER TABLE items DROP COLUMN doubled;\n"}


@pytest.fixture(scope="module")
def replicated():
    """A PostgreSQL 15 primary with one streaming standby."""
    reason = pg15.unavailable()
    if reason:
        pytest.skip(reason)
    primary = pg15.Cluster()
    standby = pg15.Standby(primary)
    yield primary, standby
    standby.close()
    primary.close()


def _wait_for(predicate, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _fresh_items(db, replica=None) -> None:
    """A primary with nothing of rollout's and ROWS items, which the standby has too."""
    db.execute("DROP TABLE IF EXISTS items; DROP SCHEMA IF EXISTS rollout CASCADE; DROP TABLE IF EXISTS "
               "_yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock CASCADE")
    db.execute(f"CREATE TABLE items (id bigint PRIMARY KEY, n bigint); "
               f"INSERT INTO items SELECT g, g FROM generate_series(1, {ROWS}) AS g")
    if replica is not None:
        _wait_for(lambda: replica.execute("SELECT to_regclass('items')").fetchone()[0], "the standby to have items")


def _apply_in_background(path, dsn) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path),
                             "--dsn", dsn, "apply"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _waiting(db, what: str) -> tuple:
    """The first backfill row that says why it waits (waiting, rows_covered), once there is one."""
    return _wait_for(lambda: db.execute(
        "SELECT waiting, rows_covered FROM rollout.backfills WHERE waiting IS NOT NULL").fetchone()
        if db.execute("SELECT to_regclass('rollout.backfills')").fetchone()[0] else None, what)


def test_a_backfill_waits_while_a_standby_is_behind_and_goes_on_once_it_catches_up(replicated, tmp_path):
    primary, standby = replicated
    dsn = primary.url("postgres")
    with psycopg.connect(dsn, autocommit=True) as db, psycopg.connect(standby.url(), autocommit=True) as replica:
        _fresh_items(db, replica)
        path = write_plan(tmp_path, PLAN, FILES)
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            run = _apply_in_background(path, dsn)
            waiting = _waiting(db, "the backfill to wait for the standby")
            assert "standby standby1 replays" in waiting[0] and "limit 0.3s" in waiting[0], waiting
            assert 0 < waiting[1] < ROWS  # it wrote, saw the standby fall behind, and stopped writing
            held = waiting[1]
            time.sleep(1.5)  # still paused: nothing more is written
            assert db.execute("SELECT rows_covered FROM rollout.backfills WHERE name = 'doubled'").fetchone() == (held,)
            status = json.loads(Rollout(path, dsn)("backfill", "status", "fill", "--json").output)
            assert status["backfills"][0]["waiting"] and "standby1" in status["backfills"][0]["waiting"], status
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output
        assert db.execute("SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2").fetchone() == (0,)
        events = [m for (m,) in db.execute("SELECT message FROM rollout.events WHERE kind LIKE 'backfill.w%' "
                                            "ORDER BY id")]
        assert any("waits" in m and "standby1" in m for m in events), events
        assert any("goes on" in m for m in events), events


def test_a_standby_that_keeps_up_costs_no_wait(replicated, tmp_path):
    """A healthy standby: the backfill never records a wait, whatever replay_lag last showed."""
    primary, _ = replicated
    dsn = primary.url("postgres")
    with psycopg.connect(dsn, autocommit=True) as db:
        _fresh_items(db)
        applied = Rollout(write_plan(tmp_path, PLAN, FILES), dsn)("apply")
        assert applied.exit_code == 0, applied.output
        assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'backfill.waiting'").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2").fetchone() == (0,)


GENERATED = """\
version: 1
environments:
  local:
    database: embedded
    backfills: {max_replication_lag: LIMIT}
steps:
  - id: fill
    title: fill a column
    priority: high
    operations:
      - {op: add_column, table: items, column: doubled, type: bigint, up: n * 2}
"""


def test_the_environment_paces_the_backfills_operations_generate(replicated, tmp_path):
    """A generated job has no pacing keys of its own: the environment's `backfills:` sets them."""
    primary, standby = replicated
    dsn = primary.url("postgres")
    with psycopg.connect(dsn, autocommit=True) as db, psycopg.connect(standby.url(), autocommit=True) as replica:
        def fresh(limit: str):
            _fresh_items(db, replica)
            (tmp_path / limit).mkdir()
            return write_plan(tmp_path / limit, GENERATED.replace("LIMIT", limit))

        path = fresh("300ms")
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            run = _apply_in_background(path, dsn)
            waiting = _waiting(db, "the generated backfill to wait for the standby")
            assert "limit 0.3s" in waiting[0], waiting  # the environment's limit, not the default 10s
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output
        assert db.execute("SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2").fetchone() == (0,)

        path = fresh("null")  # never wait: the same job finishes while the standby replays nothing
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            applied = Rollout(path, dsn)("apply")
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
        assert applied.exit_code == 0, applied.output
        assert db.execute("SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'backfill.waiting'").fetchone() == (0,)


# the column is there already (a VACUUM would hold up a migration adding it)
NOTHING = {"migrate/0001_nothing.sql": "SELECT 1;\n", "migrate/0001_nothing.rollback.sql": "SELECT 1;\n"}


def _events(db, kind: str) -> list[str]:
    return [m for (m,) in db.execute("SELECT message FROM rollout.events WHERE kind = %s ORDER BY id", (kind,))]


def test_a_session_queued_behind_a_batch_makes_the_batches_smaller(tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint, doubled bigint);"
               "INSERT INTO items SELECT g, g, NULL FROM generate_series(1, 2000) AS g;"
               "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "IF NEW.id = 50 AND NEW.doubled IS NOT NULL THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$;"
               "CREATE TRIGGER slow BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION slow()")
    path = write_plan(tmp_path, PLAN, NOTHING)
    run = subprocess.Popen([sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path),
                            "--dsn", dsn, "apply"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: db.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                 "AND datname = current_database()").fetchone(), "the first batch to hold its rows")
    with psycopg.connect(dsn, autocommit=True) as application:
        started = time.monotonic()
        application.execute("UPDATE items SET n = n WHERE id = 1")  # queued behind the batch's row lock
        assert time.monotonic() - started > 0.3
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    yielded = _events(db, "backfill.yielded")
    assert yielded and "1 session waited on the rows of its last batch" in yielded[0], yielded
    assert "batches shrink to 250 rows" in yielded[0], yielded
    assert db.execute("SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2").fetchone() == (0,)


def test_a_backfill_slows_down_while_vacuum_works_on_its_table(tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint, doubled bigint) WITH (autovacuum_enabled = off);"
               "INSERT INTO items SELECT g, g, NULL FROM generate_series(1, 8000) AS g;"
               "DELETE FROM items WHERE id % 2 = 0")
    vacuum = psycopg.connect(dsn, autocommit=True)
    vacuum.execute("SET vacuum_cost_delay = 100; SET vacuum_cost_limit = 1")  # a VACUUM that crawls
    worker = threading.Thread(target=lambda: _quietly(vacuum, "VACUUM items"), daemon=True)
    worker.start()
    try:
        _wait_for(lambda: db.execute("SELECT 1 FROM pg_stat_progress_vacuum WHERE relid = 'items'::regclass"
                                     ).fetchone(), "the VACUUM to start")
        applied = Rollout(write_plan(tmp_path, PLAN, NOTHING), dsn)("apply")
        assert applied.exit_code == 0, applied.output
        slowed = _events(db, "backfill.slowed")
        assert slowed and "a VACUUM (pid" in slowed[0] and "is working on items: half speed" in slowed[0], slowed
        rested = db.execute("SELECT (detail ->> 'yielded_seconds')::float8 FROM rollout.events "
                            "WHERE kind = 'backfill.done'").fetchone()[0]
        assert rested > 0  # each batch was followed by a rest as long as itself
    finally:
        db.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_progress_vacuum WHERE relid = 'items'::regclass")
        worker.join(timeout=30)
        vacuum.close()


def _quietly(conn, statement: str) -> None:
    try:
        conn.execute(statement)
    except psycopg.errors.QueryCanceled:
        pass
