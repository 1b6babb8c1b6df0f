"""The backfill engine on a real PostgreSQL: kills, pauses, composite keys, bad rows, dropped
connections. The change `n = n + 1` is not idempotent, so a batch applied twice shows."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from .conftest import Rollout, env_locks, write_plan

PLAN = """\
version: 1
environments:
  local: {{database: embedded}}
steps:
  - id: counts
    title: count every row once
    priority: high
    migrate: steps/counts
    backfills:
      - name: bump
        table: items
        set: {{n: "n + 1"}}
        where: (SELECT pg_sleep({sleep})) IS NOT NULL
        batch_size: {batch}
        min_batch: 1
        max_batch: {batch}
        pause: {pause}
    verify:
      - name: each_row_once
        sql: SELECT id, n FROM items WHERE n <> 1
"""

FILES = {
    "steps/counts/counts_01_column.sql": "ALTER TABLE items ADD COLUMN n int NOT NULL DEFAULT 0;\n",
    "steps/counts/counts_01_column.rollback.sql": "ALTER TABLE items DROP COLUMN n;\n",
}


def items(db, rows: int) -> None:
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, v int)")
    db.execute("INSERT INTO items SELECT g, g FROM generate_series(1, %s) AS g", (rows,))
    db.execute("ANALYZE items")


def plan(tmp_path, sleep="0", batch=500, pause="0ms"):
    return write_plan(tmp_path, PLAN.format(sleep=sleep, batch=batch, pause=pause), FILES)


def command(path, dsn, *args) -> list[str]:
    return [sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path), "--dsn", dsn, *args]


def checkpoint(db) -> dict:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM rollout.backfills WHERE name = 'bump'").fetchone()
    return row or {}


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def started(db) -> bool:
    try:
        return checkpoint(db).get("rows_covered", 0) > 0
    except psycopg.errors.UndefinedTable:
        return False


def test_sigkill_anywhere_loses_and_duplicates_nothing(tmp_path, dsn, db):
    rows = 60_000
    items(db, rows)
    path = plan(tmp_path, sleep="0.015", batch=500, pause="5ms")
    rng = random.Random(20261124)
    kills, covered, left_open = 0, [], set()
    for _ in range(6):
        proc = subprocess.Popen(command(path, dsn, "apply"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill at a random moment once this run has committed a batch: a busy machine can take
        # seconds to start the CLI, and a kill before the job runs proves nothing
        before = covered[-1] if covered else 0
        wait_until(lambda: proc.poll() is not None or (started(db) and checkpoint(db)["rows_covered"] > before), 60)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        try:
            covered.append(checkpoint(db).get("rows_covered", 0))
            left_open |= {r for (r,) in db.execute("SELECT id FROM rollout.runs WHERE finished_at IS NULL")}
        except psycopg.errors.UndefinedTable:
            covered.append(0)
    final = subprocess.run(command(path, dsn, "apply"), capture_output=True, text=True)
    assert final.returncode == 0, final.stdout + final.stderr
    assert kills == 6, "every kill should land while the job runs"
    assert covered == sorted(covered) and covered[-1] < rows, covered  # progress kept across kills
    assert db.execute("SELECT count(*), min(n), max(n) FROM items").fetchone() == (rows, 1, 1)
    assert env_locks(db) == 0
    interrupted = db.execute("SELECT count(*) FROM rollout.runs WHERE outcome = 'interrupted'").fetchone()[0]
    assert left_open and interrupted == len(left_open)
    assert "from checkpoint after" in final.stdout
    assert checkpoint(db)["state"] == "done" and checkpoint(db)["rows_covered"] == rows


def test_pause_from_another_terminal_then_resume(tmp_path, dsn, db):
    rows = 20_000
    items(db, rows)
    path = plan(tmp_path, sleep="0.01", batch=400)
    proc = subprocess.Popen(command(path, dsn, "apply"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: started(db))
    paused = Rollout(path, dsn)("backfill", "pause", "counts")
    assert paused.exit_code == 0 and "pause requested: bump" in paused.output
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 4, out
    assert "backfill bump paused" in out and "rollout backfill resume counts" in out
    stopped_at = checkpoint(db)
    assert stopped_at["state"] == "paused" and 0 < stopped_at["rows_covered"] < rows
    rollout = Rollout(path, dsn)
    assert rollout("backfill", "run", "counts").exit_code == 4  # paused stays paused until resumed
    status = json.loads(rollout("backfill", "status", "--json").stdout)["backfills"][0]
    assert status["state"] == "paused" and status["estimate"] == rows and status["rows_covered"] == stopped_at["rows_covered"]

    resumed = rollout("backfill", "resume", "counts")
    assert resumed.exit_code == 0, resumed.output
    assert f"from checkpoint after {stopped_at['rows_covered']} rows" in resumed.output
    assert checkpoint(db)["state"] == "done"
    assert rollout("apply").exit_code == 0
    assert db.execute("SELECT count(*), min(n), max(n) FROM items").fetchone() == (rows, 1, 1)


def test_cancel_stops_and_resume_continues(tmp_path, dsn, db):
    items(db, 5000)
    path = plan(tmp_path, sleep="0.01", batch=200)
    rollout = Rollout(path, dsn)
    proc = subprocess.Popen(command(path, dsn, "apply"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: started(db))
    assert rollout("backfill", "cancel", "counts").exit_code == 0
    assert proc.wait(timeout=30) == 4
    assert checkpoint(db)["state"] == "cancelled"
    assert rollout("apply").exit_code == 4  # a cancelled job holds the step
    assert rollout("backfill", "resume", "counts").exit_code == 0
    assert rollout("apply").exit_code == 0
    assert db.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)


def test_composite_keys_and_a_statement_over_the_batch(tmp_path, dsn, db):
    db.execute("CREATE TABLE pairs (guild text, member int, v int, PRIMARY KEY (guild, member))")
    db.execute("INSERT INTO pairs SELECT 'g' || (g % 7), g, g FROM generate_series(1, 3000) AS g")
    db.execute("ANALYZE pairs")
    path = write_plan(tmp_path, """\
        version: 1
        environments:
          local: {database: embedded}
        steps:
          - id: copy
            title: copy pairs
            priority: medium
            migrate: steps/copy
            backfills:
              - name: doubled
                table: pairs
                set: {w: v * 2}
                batch_size: 101
                max_batch: 101
              - name: copied
                table: pairs
                sql: |
                  INSERT INTO pair_copies (guild, member, v)
                  SELECT p.guild, p.member, p.v FROM pairs AS p JOIN batch USING (guild, member)
                  ON CONFLICT DO NOTHING
                batch_size: 250
                max_batch: 250
            verify:
              - name: all_copied
                sql: SELECT guild, member FROM pairs EXCEPT SELECT guild, member FROM pair_copies
        """, {
        "steps/copy/copy_01.sql": "ALTER TABLE pairs ADD COLUMN w int;\n"
                                  "CREATE TABLE pair_copies (guild text, member int, v int, PRIMARY KEY (guild, member));\n",
        "steps/copy/copy_01.rollback.sql": "DROP TABLE pair_copies;\nALTER TABLE pairs DROP COLUMN w;\n",
    })
    result = Rollout(path, dsn)("apply")
    assert result.exit_code == 0, result.output
    assert db.execute("SELECT count(*) FROM pairs WHERE w IS DISTINCT FROM v * 2").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM pair_copies").fetchone()[0] == 3000
    batches = db.execute("SELECT name, batches FROM rollout.backfills ORDER BY name").fetchall()
    assert batches == [("copied", 12 + 1), ("doubled", 29 + 1)] or all(b > 10 for _, b in batches)


BAD_ROW_PLAN = """\
version: 1
environments:
  local: {{database: embedded}}
steps:
  - id: parse
    title: parse numbers
    priority: high
    migrate: steps/parse
    backfills:
      - name: to_int
        table: raw
        set: {{num: txt::int}}
        where: num IS NULL
        batch_size: 300
        on_error: {on_error}
"""
BAD_ROW_FILES = {
    "steps/parse/parse_01.sql": "ALTER TABLE raw ADD COLUMN num int;\n",
    "steps/parse/parse_01.rollback.sql": "ALTER TABLE raw DROP COLUMN num;\n",
}


def test_an_unconvertible_row_stops_the_job_naming_it_then_can_be_recorded(tmp_path, dsn, db):
    db.execute("CREATE TABLE raw (id int PRIMARY KEY, txt text)")
    db.execute("INSERT INTO raw SELECT g, CASE WHEN g IN (1234, 1900) THEN 'n/a' ELSE g::text END "
               "FROM generate_series(1, 2500) AS g")
    path = write_plan(tmp_path, BAD_ROW_PLAN.format(on_error="stop"), BAD_ROW_FILES)
    stopped = Rollout(path, dsn)("apply")
    assert stopped.exit_code == 1
    assert "row (id=1234) cannot be converted: invalid input syntax for type integer" in stopped.output
    assert "22P02" in stopped.output and "on_error: record" in stopped.output
    assert db.execute("SELECT count(*) FROM raw WHERE id < 1234 AND num IS NULL").fetchone()[0] == 0
    assert db.execute("SELECT state FROM rollout.backfills").fetchone()[0] == "failed"

    write_plan(tmp_path, BAD_ROW_PLAN.format(on_error="record"), BAD_ROW_FILES)
    carried_on = Rollout(path, dsn)("apply")
    assert carried_on.exit_code == 0, carried_on.output
    assert "recorded row (id=1900)" in carried_on.output
    errors = db.execute("SELECT key, error FROM rollout.backfill_errors ORDER BY id").fetchall()
    assert [e[0] for e in errors] == [["1234"], ["1900"]]
    assert db.execute("SELECT count(*) FROM raw WHERE num IS NULL").fetchone()[0] == 2
    assert db.execute("SELECT rows_failed FROM rollout.backfills").fetchone()[0] == 2


def test_a_dropped_connection_mid_batch_is_reconnected(tmp_path, dsn, db):
    rows = 15_000
    items(db, rows)
    path = plan(tmp_path, sleep="0.02", batch=300)
    proc = subprocess.Popen(command(path, dsn, "apply"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: started(db))
    killed = 0
    for _ in range(2):
        wait_until(lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                      "'rollout backfill [local]' AND state = 'active'").fetchone()[0] > 0)
        killed += db.execute("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = 'rollout backfill [local]') AS t").fetchone()[0]
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert killed == 2 and out.count("reconnected after a dropped connection") == 2
    assert db.execute("SELECT count(*), min(n), max(n) FROM items").fetchone() == (rows, 1, 1)


def test_lock_timeouts_in_a_batch_are_retried(tmp_path, dsn, db):
    items(db, 2000)
    path = plan(tmp_path, batch=100)
    rollout = Rollout(path, dsn)
    assert rollout("apply").exit_code == 0
    assert rollout("rollback", "counts").exit_code == 0
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM items WHERE id = 1500 FOR UPDATE")  # an application transaction
        import threading

        threading.Timer(1.0, holder.rollback).start()
        result = rollout("apply")
    assert result.exit_code == 0, result.output
    assert db.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)


def test_rollback_forgets_the_checkpoint_so_a_reapply_backfills_afresh(tmp_path, dsn, db):
    items(db, 1000)
    rollout = Rollout(plan(tmp_path), dsn)
    assert rollout("apply").exit_code == 0
    assert rollout("rollback", "counts").exit_code == 0
    assert db.execute("SELECT count(*) FROM rollout.backfills").fetchone()[0] == 0
    assert rollout("apply").exit_code == 0
    assert db.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)


def test_backfill_commands_refuse_what_they_cannot_do(tmp_path, dsn, db):
    items(db, 100)
    rollout = Rollout(plan(tmp_path), dsn)
    assert rollout("backfill", "pause", "counts").exit_code == 2  # nothing has run here yet
    assert rollout("apply").exit_code == 0
    assert rollout("rollback", "counts").exit_code == 0
    refused = rollout("backfill", "run", "counts")
    assert refused.exit_code == 2 and "its expand migration is not in place" in refused.output
    assert rollout("backfill", "status", "nope").exit_code == 2


@pytest.mark.parametrize("line, bad, message", [
    ('set: {n: "n + 1"}', "set: {}", "'set' needs at least one column"),
    ("pause: 0ms", "sql: SELECT 1", "exactly one of 'set' or 'sql'"),
    ("pause: 0ms", "batch_size: 0", "duplicate key 'batch_size'"),
    ("batch_size: 10", "batch_size: 0", "greater than or equal to 1"),
    ("pause: 0ms", "on_error: skip", "'stop' or 'record'"),
    ("max_batch: 10", "max_batch: 5", "min_batch <= batch_size <= max_batch"),
])
def test_backfill_plan_errors(tmp_path, line, bad, message):
    text = PLAN.format(sleep="0", batch=10, pause="0ms").replace(f"        {line}\n", f"        {bad}\n")
    result = Rollout(write_plan(tmp_path, text, FILES), None)("check")
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_database_crashing_mid_backfill(tmp_path, own_server):
    """Immediate shutdown (no checkpoint, like a power cut) while batches run; restart; re-run."""
    from orchestrator import embedded

    home, server = own_server
    dsn = server.url("own")
    with psycopg.connect(dsn, autocommit=True) as db:
        items(db, 20_000)
    path = plan(tmp_path, sleep="0.01", batch=300)
    proc = subprocess.Popen(command(path, dsn, "apply"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with psycopg.connect(dsn, autocommit=True) as db:
        wait_until(lambda: started(db))
    os.kill(server.pid, signal.SIGQUIT)  # immediate shutdown
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "lost the connection holding the environment lock" in out or "lost the database connection" in out

    embedded.start(str(home))
    rerun = subprocess.run(command(path, dsn, "apply"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "from checkpoint after" in rerun.stdout
    with psycopg.connect(dsn, autocommit=True) as db:
        assert db.execute("SELECT count(*), min(n), max(n) FROM items").fetchone() == (20_000, 1, 1)
        assert db.execute("SELECT state FROM rollout.steps").fetchone()[0] == "done"
