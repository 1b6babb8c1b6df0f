"""Through a real PgBouncer: transaction mode is refused before anything changes (exit 2, naming
what to use instead); session mode runs a whole step, CREATE INDEX CONCURRENTLY and a backfill
included; the kill switch works through either."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from . import pgbouncer
from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
flags:
  doubled: {description: the application reads items.doubled}
steps:
  - id: items
    title: an index and a filled column
    priority: high
    flag: doubled
    operations:
      - {op: create_index, name: items_n, table: items, columns: [n]}
      - {op: add_column, table: items, column: doubled, type: bigint, not_null: true, up: n * 2}
"""
SETUP = "CREATE TABLE items (id bigint PRIMARY KEY, n bigint); INSERT INTO items SELECT g, g FROM generate_series(1, 5000) AS g"


@pytest.fixture(scope="module")
def bouncers(server):
    reason = pgbouncer.unavailable()
    if reason:
        pytest.skip(reason)
    running = pgbouncer.Bouncers(server.url("postgres"))
    yield running
    running.close()


def _through(bouncers, mode: str, dsn: str) -> str:
    return bouncers.url(mode, urlparse(dsn).path.lstrip("/"))


def test_a_transaction_pooler_is_refused_before_anything_changes(bouncers, tmp_path, dsn, db):
    db.execute(SETUP)
    rollout = Rollout(write_plan(tmp_path, PLAN), _through(bouncers, "transaction", dsn))
    for command in (("apply",), ("backfill", "run", "items"), ("rollback", "items")):
        refused = rollout(*command)
        assert refused.exit_code == 2, refused.output
        assert "connection pooler in transaction mode" in refused.output and "session mode" in refused.output
        assert "Traceback" not in refused.output
    assert db.execute("SELECT to_regnamespace('rollout')").fetchone() == (None,)  # nothing was written
    assert db.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'items'").fetchone() == (1,)


def test_a_session_pooler_runs_a_whole_step(bouncers, tmp_path, dsn, db):
    db.execute(SETUP)
    rollout = Rollout(write_plan(tmp_path, PLAN), _through(bouncers, "session", dsn))
    for command in (("apply",), ("advance", "items"), ("apply",)):
        result = rollout(*command)
        assert result.exit_code == 0, result.output
    assert db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_n'::regclass").fetchone() == (True,)
    assert db.execute("SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2").fetchone() == (0,)
    assert db.execute("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass "
                      "AND attname = 'doubled'").fetchone() == (True,)


def test_the_kill_switch_works_through_a_transaction_pooler(bouncers, tmp_path, dsn, db):
    db.execute(SETUP)
    path = write_plan(tmp_path, PLAN)
    assert Rollout(path, dsn)("apply").exit_code == 0
    assert Rollout(path, dsn)("advance", "items").exit_code == 0
    switched = Rollout(path, _through(bouncers, "transaction", dsn))("flags", "set", "doubled", "off")
    assert switched.exit_code == 0, switched.output
    assert db.execute("SELECT enabled FROM rollout.flags WHERE name = 'doubled'").fetchone() == (False,)


def test_stage_moves_work_through_a_transaction_pooler_and_the_contract_is_refused(bouncers, tmp_path, dsn, db):
    db.execute(SETUP)
    path = write_plan(tmp_path, PLAN)
    assert Rollout(path, dsn)("apply").exit_code == 0
    pooled = Rollout(path, _through(bouncers, "transaction", dsn))
    moved = pooled("advance", "items")  # one short transaction under the step's row lock: no session needed
    assert moved.exit_code == 0, moved.output
    assert db.execute("SELECT enabled, percent FROM rollout.flags WHERE name = 'doubled'").fetchone() == (True, 100)
    contract = pooled("advance", "items")  # the contract takes the environment lock, which needs a session
    assert contract.exit_code == 2 and "connection pooler in transaction mode" in contract.output, contract.output
    assert db.execute("SELECT state FROM rollout.steps WHERE step_id = 'items'").fetchone() == ("rolling_out",)
    assert db.execute("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass "
                      "AND attname = 'doubled'").fetchone() == (False,)
    assert Rollout(path, dsn)("advance", "items").exit_code == 0
    assert db.execute("SELECT state FROM rollout.steps WHERE step_id = 'items'").fetchone() == ("done",)


def test_the_flag_client_reads_through_a_transaction_pooler(bouncers, tmp_path, dsn, db):
    from orchestrator.client import FlagClient

    db.execute(SETUP)
    assert Rollout(write_plan(tmp_path, PLAN), dsn)("flags", "set", "doubled", "on").exit_code == 0
    with FlagClient(_through(bouncers, "transaction", dsn), background=False) as client:
        for _ in range(12):  # more than psycopg's threshold for preparing a statement on the server
            client.refresh()
            assert client.last_error is None and client.is_enabled("doubled", "42")
