"""Proof under faults: SIGKILL anywhere in the whole plan, two operators at once, the
orchestrator's session terminated, the database crashing mid-migration."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from orchestrator import embedded
from orchestrator.locks import acquire_env_lock

from .conftest import Rollout, env_locks, write_plan

# The operator's loop (cron, or a person): apply, advance every rollout, until all is done.
OPERATOR = """
import sys
from orchestrator import api
from orchestrator.plan_loader import load_plan
plan = load_plan(sys.argv[1])
for _ in range(40):
    api.apply(plan, "local", dsn=sys.argv[2], actor="operator", backup=False)
    if all(s.state == "done" for s in api.status(plan, "local", dsn=sys.argv[2])):
        sys.exit(0)
    api.advance(plan, "local", dsn=sys.argv[2], actor="operator")
sys.exit(1)
"""


def catalog(db) -> list:
    """The schema that matters: columns, constraints (and whether validated), indexes (and valid)."""
    return db.execute(
        """
        SELECT 'column', c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT 'constraint', conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
               || CASE WHEN convalidated THEN '' ELSE ' (not valid)' END
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'index', pg_get_indexdef(x.indexrelid) || CASE WHEN x.indisvalid THEN '' ELSE ' (invalid)' END
        FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE c.relnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'function', p.oid::regprocedure::text || ' ' || md5(p.prosrc)
        FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
        ORDER BY 1, 2
        """).fetchall()


def rows(db) -> dict[str, str]:
    """A checksum of every table's rows. Ids a table generates itself (gen_random_uuid) differ
    between two runs by design, so they are left out."""
    tables = [r[0] for r in db.execute("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                                       "AND relkind = 'r' AND relname NOT LIKE '\\_yoyo%' ORDER BY 1")]
    generated = {"messages", "audit_logs", "server_config_history"}
    sums = {}
    for table in tables:
        value = sql.SQL("to_jsonb(t) - 'id'") if table in generated else sql.SQL("to_jsonb(t)")
        sums[table] = db.execute(sql.SQL("SELECT count(*) || ':' || coalesce(md5(string_agg(v::text, ',' ORDER BY "
                                         "v::text)), '') FROM (SELECT {} AS v FROM {} AS t) AS r").format(
            value, sql.Identifier(table))).fetchone()[0]
    return sums


def holds_lock(db) -> bool:
    return env_locks(db) > 0


def doing(db) -> str | None:
    """What the killed run was doing: a backfill in progress, else the state of the step it
    last touched (migrating, rolling_out for a flag stage, finalizing)."""
    if not db.execute("SELECT to_regclass('rollout.events')").fetchone()[0]:
        return None
    if db.execute("SELECT count(*) FROM rollout.backfills WHERE state = 'running'").fetchone()[0]:
        return "backfill"
    row = db.execute("SELECT s.state FROM rollout.events AS e JOIN rollout.steps AS s USING (step_id) "
                     "ORDER BY e.id DESC LIMIT 1").fetchone()
    return row[0] if row else None


def operator(plan, dsn) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", OPERATOR, str(plan), dsn],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_anywhere_in_the_whole_plan(bot_plan, server, new_database):
    seeded = new_database()
    assert Rollout(bot_plan, seeded)("db", "seed", "--rows", "8000").exit_code == 0
    copies = []
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        for _ in range(2):
            copies.append(f"k_{random.randrange(10**9)}")
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(copies[-1]), sql.Identifier(conninfo_to_dict(seeded)["dbname"])))
    clean, killed = (server.url(name) for name in copies)
    try:
        assert operator(bot_plan, clean).wait(timeout=300) == 0

        # Kills aimed at each kind of work in turn: the run holds the environment and is in the
        # target phase, then dies within 50 ms. Each attempt continues what the last one left.
        rng = random.Random(7)
        kills, where = 0, []
        schedule = ["migrating", "backfill"] * 5 + ["rolling_out"] * 7 + ["finalizing"] * 4
        with psycopg.connect(killed, autocommit=True) as watch:
            for target in schedule:
                proc = operator(bot_plan, killed)
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline:
                    if holds_lock(watch) and doing(watch) == target:
                        break
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.05))
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    kills += 1
                    proc.wait()
                    where.append(doing(watch))
                if proc.wait() == 0:
                    break
        assert kills >= 20, where
        assert {"migrating", "backfill", "rolling_out", "finalizing"} <= set(where), where
        assert operator(bot_plan, killed).wait(timeout=300) == 0

        with psycopg.connect(clean, autocommit=True) as a, psycopg.connect(killed, autocommit=True) as b:
            assert catalog(b) == catalog(a)
            assert rows(b) == rows(a)
            # yoyo's own log: every migration was applied exactly once, however often we were killed
            assert b.execute("SELECT count(*) FROM (SELECT migration_id FROM _yoyo_log WHERE operation = 'apply' "
                             "GROUP BY 1 HAVING count(*) > 1) AS twice").fetchone()[0] == 0
            assert env_locks(b) == 0
            assert b.execute("SELECT count(*) FROM rollout.runs WHERE finished_at IS NULL").fetchone()[0] == 0
            interrupted = b.execute("SELECT count(*) FROM rollout.events WHERE kind = 'run.interrupted'").fetchone()[0]
            assert interrupted >= kills // 2  # most kills land while a run holds the environment
    finally:
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            for name in copies:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


SLOW = """\
version: 1
environments:
  local: {database: embedded}
steps:
  - id: slow
    title: a slow migration
    priority: high
    migrate: steps/slow
"""
SLOW_FILES = {
    "steps/slow/slow_01.sql": "CREATE TABLE marks (n int);\nSELECT pg_sleep(1.5);\nINSERT INTO marks VALUES (1);\n",
    "steps/slow/slow_01.rollback.sql": "DROP TABLE marks;\n",
}


def cli(path, dsn, *args) -> list[str]:
    return [sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path), "--dsn", dsn, *args]


GATED_FILES = {  # the migration waits until the test opens the gate: no race with the clock
    "steps/slow/slow_01.sql": "CREATE TABLE marks (n int);\n"
                              "DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM gate) LOOP PERFORM pg_sleep(0.02); END LOOP; "
                              "END $$;\nINSERT INTO marks VALUES (1);\n",
    "steps/slow/slow_01.rollback.sql": "DROP TABLE marks;\n",
}


def test_two_operators_at_once_many_times(tmp_path, dsn, db):
    path = write_plan(tmp_path, SLOW, GATED_FILES)
    db.execute("CREATE TABLE gate (open boolean)")
    for _ in range(10):
        procs = [subprocess.Popen(cli(path, dsn, "apply"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
        # The loser is told while the winner is still inside its migration, which cannot end
        # before the gate opens: it did not wait for the lock.
        loser = None
        while loser is None:
            loser = next((p for p in procs if p.poll() is not None), None)
            time.sleep(0.02)
        winner = next(p for p in procs if p is not loser)
        assert winner.poll() is None
        out, _ = loser.communicate(timeout=60)
        assert loser.returncode == 3 and "is locked by" in out, out
        db.execute("INSERT INTO gate VALUES (true)")
        out, _ = winner.communicate(timeout=60)
        assert winner.returncode == 0, out
        assert db.execute("SELECT count(*) FROM marks").fetchone()[0] == 1  # the step ran once
        assert Rollout(path, dsn)("rollback", "slow").exit_code == 0
        db.execute("DELETE FROM gate")


def test_the_losing_operator_is_told_at_once(tmp_path, dsn, db):
    path = write_plan(tmp_path, SLOW, SLOW_FILES)
    assert Rollout(path, dsn)("apply").exit_code == 0
    with psycopg.connect(dsn, autocommit=True) as other, acquire_env_lock(other, "local"):
        # held for as long as this block runs: a command that waited for it would never return
        result = Rollout(path, dsn)("rollback", "slow")
        assert result.exit_code == 3 and "is locked by" in result.output


def wait_for_sleep(db, timeout=20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(1.5)%' "
                         "AND pid <> pg_backend_pid()").fetchone()
        if row:
            return row[0]
        time.sleep(0.02)
    raise AssertionError("the migration never started")


def test_the_orchestrators_session_terminated_mid_migration(tmp_path, dsn, db):
    path = write_plan(tmp_path, SLOW, SLOW_FILES)
    proc = subprocess.Popen(cli(path, dsn, "apply"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db.execute("SELECT pg_terminate_backend(%s)", (wait_for_sleep(db),))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "lost the database connection" in out or "lost the connection" in out
    assert "Run the same command again" in out or "run the same command again" in out
    assert "Traceback" not in out
    rerun = Rollout(path, dsn)("apply")
    assert rerun.exit_code == 0, rerun.output
    assert db.execute("SELECT count(*) FROM marks").fetchone()[0] == 1


def test_the_database_crashing_mid_migration(tmp_path, own_server):
    home, server = own_server
    dsn = server.url("own")
    path = write_plan(tmp_path, SLOW, SLOW_FILES)
    proc = subprocess.Popen(cli(path, dsn, "apply"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with psycopg.connect(dsn, autocommit=True) as db:
        wait_for_sleep(db)
    os.kill(server.pid, signal.SIGQUIT)  # immediate shutdown: like a power cut
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in out, out
    embedded.start(str(home))
    rerun = Rollout(path, dsn)("apply")
    assert rerun.exit_code == 0, rerun.output
    with psycopg.connect(dsn, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM marks").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] == 1


def test_an_enum_value_cannot_be_used_in_the_transaction_that_adds_it(tmp_path, dsn, db):
    """The PostgreSQL trap the lint rule exists for, shown on the real server (15 and 18)."""
    db.execute("CREATE TYPE mood AS ENUM ('ok')")
    db.execute("CREATE TABLE feelings (m mood)")
    plan = SLOW.replace("    migrate: steps/slow\n", "    migrate: steps/slow\n    allow:\n"
                        "      - {rule: enum-value-used-in-transaction, reason: showing the trap}\n")
    files = {"steps/slow/slow_01.sql": "ALTER TYPE mood ADD VALUE 'great';\nINSERT INTO feelings VALUES ('great');\n",
             "steps/slow/slow_01.rollback.sql": "SELECT 1;\n"}
    failed = Rollout(write_plan(tmp_path, plan, files), dsn)("apply")
    assert failed.exit_code == 1 and "unsafe use of new value" in failed.output
    split = {"steps/slow/slow_01.sql": "ALTER TYPE mood ADD VALUE 'great';\n", "steps/slow/slow_01.rollback.sql": "SELECT 1;\n",
             "steps/slow/slow_02.sql": "INSERT INTO feelings VALUES ('great');\n",
             "steps/slow/slow_02.rollback.sql": "DELETE FROM feelings;\n"}
    fixed = Rollout(write_plan(tmp_path, SLOW, split), dsn)("apply")
    assert fixed.exit_code == 0, fixed.output
    assert db.execute("SELECT count(*) FROM feelings").fetchone()[0] == 1

