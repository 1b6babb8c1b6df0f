"""Hostile input from files, DSNs, operators and data: a clear error and exit code, nothing
leaked, nothing run, nothing acted on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.cli import visible

from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
steps:
  - id: a
    title: A
    priority: high
    migrate: steps/a
"""


def cli(path, *args, env=None, timeout=60):
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def test_a_migration_file_linked_out_of_the_plan_is_refused_and_not_printed(tmp_path, dsn):
    path = write_plan(tmp_path, PLAN, {"steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    os.symlink("/proc/self/environ", tmp_path / "steps/a/0001_a.sql")
    for command in (["check"], ["--dsn", dsn, "plan"]):
        done = cli(path, *command, env={"ROLLOUT_DSN": "postgresql://u:hunter2secret@h/db"})
        assert done.returncode == 2, done.stderr
        assert "steps/a/0001_a.sql' is outside the plan's folder" in done.stderr
        assert "hunter2secret" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    path = write_plan(tmp_path, PLAN.replace("    migrate: steps/a\n", "    migrate: steps/a\n    preconditions:\n"
                                             "      - name: p\n        file: steps/p.sql\n"),
                      {"steps/a/0001_a.sql": "SELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    os.mkfifo(tmp_path / "steps/p.sql")
    done = cli(path, "check", timeout=60)
    assert done.returncode == 2 and "'steps/p.sql': not a regular file" in done.stderr
    os.mkfifo(tmp_path / "fifo.yaml")
    done = cli(tmp_path / "fifo.yaml", "check", timeout=60)
    assert done.returncode == 2 and "cannot read the plan: not a regular file" in done.stderr


def test_byte_order_marks_and_other_encodings_are_refused_with_the_file_named(tmp_path):
    path = write_plan(tmp_path, PLAN, {"steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    (tmp_path / "steps/a/0001_a.sql").write_bytes(b"\xef\xbb\xbfSELECT 1;\n")
    done = cli(path, "check")
    assert done.returncode == 2 and "'steps/a/0001_a.sql' starts with a UTF-8 byte-order mark" in done.stderr
    (tmp_path / "steps/a/0001_a.sql").write_bytes(b"SELECT '\xff';\n")
    done = cli(path, "check")
    assert done.returncode == 2 and "'steps/a/0001_a.sql' is not UTF-8 text (byte 8)" in done.stderr
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    done = cli(path, "check")
    assert done.returncode == 2 and "starts with a UTF-8 byte-order mark" in done.stderr


def test_a_password_libpq_cannot_parse_is_never_printed(tmp_path):
    path = write_plan(tmp_path, PLAN, {"steps/a/0001_a.sql": "SELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    for dsn, secret in (("postgresql://u:pa%ss-w0rd@localhost/db", "pa%ss-w0rd"),
                        ("host=localhost password='p a%s w' user=x", "p a%s w")):
        done = cli(path, "--dsn", dsn, "status")
        assert done.returncode == 2, done.stderr
        assert secret not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_db_reset_never_touches_a_database_named_by_dsn(tmp_path, dsn, db):
    db.execute("CREATE TABLE precious (id int)")
    path = write_plan(tmp_path, PLAN, {"steps/a/0001_a.sql": "SELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    result = Rollout(path, dsn)("db", "reset", "--yes")
    assert result.exit_code == 2 and "never a database named by --dsn" in result.output
    assert db.execute("SELECT to_regclass('precious')").fetchone() == ("precious",)


def test_text_from_operators_and_data_cannot_act_on_the_terminal(tmp_path, dsn, db):
    hostile = "x\x1b]0;pwned\x07 [/] [bold red]\x1b[2J\u202e"
    plan = PLAN.replace("steps:\n", "flags:\n  f: {description: a flag}\nsteps:\n")
    path = write_plan(tmp_path, plan, {
        "steps/a/0001_a.sql": "DO $$ BEGIN RAISE EXCEPTION 'bad row %', chr(27) || ']0;pwned' || chr(7); END $$;\n",
        "steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    rollout = Rollout(path, dsn)
    assert rollout("flags", "set", "f", "on", "--reason", hostile).exit_code == 0
    for args in (("flags", "history", "f"), ("flags", "list"), ("events",), ("apply",), ("status",)):
        output = rollout(*args).output
        assert "\x1b]" not in output and "\x1b[2J" not in output and "\u202e" not in output, (args, output)
    assert "\\x1b]0;pwned" in rollout("apply").output  # shown, escaped


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text())
def test_visible_text_holds_no_control_character(text):
    shown = visible(text)
    assert not any(ord(c) < 32 and c not in "\n\t" or 0x7F <= ord(c) <= 0x9F for c in shown)


def test_numbers_and_durations_out_of_range_are_refused_where_they_are_parsed(tmp_path, dsn):
    files = {"steps/a/0001_a.sql": "SELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"}
    path = write_plan(tmp_path, PLAN.replace("steps:\n", "flags:\n  a_flag: {description: f}\nsteps:\n"), files)
    rollout = Rollout(path, dsn)
    for args, message in ((("events", "--limit", str(2**63)), "is not in the range"),
                          (("db", "seed", "--rows", "3000000000"), "is not in the range"),
                          (("flags", "set", "a_flag", "²"), "a flag value is on, off or a percentage"),
                          (("advance", "a", "--watch", "--interval", "1"), "write a number and a unit")):
        result = rollout(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    for timeouts, message in (("timeouts: {lock: " + "9" * 400 + "ms}", "is not a duration"),
                              ("timeouts: {lock: 999999999h}", "longer than the longest duration PostgreSQL accepts"),
                              ("timeouts: {lock: 5}", None)):
        result = Rollout(write_plan(tmp_path, PLAN.replace("steps:\n", timeouts + "\nsteps:\n"), files), dsn)("check")
        if message is None:
            assert result.exit_code == 0, result.output  # a YAML integer is milliseconds
        else:
            assert result.exit_code == 2 and message in result.output, result.output


def test_yaml_nested_thousands_deep_is_an_error_not_a_crash(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    done = cli(deep, "check")
    assert done.returncode == 2 and "nests too deeply" in done.stderr and "Traceback" not in done.stderr


def test_a_depends_cycle_and_broken_bootstrap_sql_are_located_errors(tmp_path, dsn, db):
    cycle = write_plan(tmp_path, PLAN, {
        "steps/a/0001_a.sql": "-- depends: 0002_b\nSELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n",
        "steps/a/0002_b.sql": "-- depends: 0001_a\nSELECT 1;\n", "steps/a/0002_b.rollback.sql": "SELECT 1;\n"})
    result = Rollout(cycle, dsn)("check")
    assert result.exit_code == 2 and "form a cycle" in result.output
    broken = tmp_path / "broken"
    path = write_plan(broken, PLAN.replace("{database: embedded}", "{database: embedded, bootstrap: boot.sql}"), {
        "boot.sql": "CREATE TABLE ok (id int);\nCREATE TABLE x (;\n",
        "steps/a/0001_a.sql": "SELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    result = Rollout(path, dsn)("apply")
    assert result.exit_code == 1 and "boot.sql failed: syntax error at or near \";\"; at line 2" in result.output
    assert db.execute("SELECT to_regclass('ok')").fetchone() == (None,)  # nothing of it was kept


def test_state_edited_by_hand_is_guarded_or_repaired(tmp_path, dsn, db):
    import psycopg
    import pytest

    plan = PLAN.replace("steps:\n", "flags:\n  f: {description: a flag}\nsteps:\n").replace(
        "    migrate: steps/a\n", "    migrate: steps/a\n    flag: f\n    rollout: {stages: [10, 50, 100]}\n")
    path = write_plan(tmp_path, plan, {"steps/a/0001_a.sql": "SELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    rollout = Rollout(path, dsn)
    assert rollout("apply").exit_code == 0 and rollout("advance", "a").exit_code == 0
    with pytest.raises(psycopg.errors.RaiseException, match="moved by rollout advance only"):
        db.execute("UPDATE rollout.steps SET stage = 2 WHERE step_id = 'a'")
    for statement in ("TRUNCATE rollout.events", "DELETE FROM rollout.events", "UPDATE rollout.events SET actor = 'x'"):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            db.execute(statement)
    db.execute("DELETE FROM rollout.transitions")  # the next command that takes the lock restores the rules
    assert rollout("apply").exit_code == 0
    assert db.execute("SELECT count(*) > 0 FROM rollout.transitions").fetchone() == (True,)
    assert rollout("advance", "a").exit_code == 0
    assert db.execute("SELECT stage FROM rollout.steps WHERE step_id = 'a'").fetchone() == (1,)


def waiting_at_gate(db, proc, timeout: float = 60.0) -> None:
    """Until this test's migration (in this test's database: others may run their own) waits at the gate."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND query LIKE 'DO $$ BEGIN WHILE%'").fetchone()[0]:
            return
        time.sleep(0.02)
    raise AssertionError(f"the migration never reached the gate (exit {proc.poll()})")


def ended(proc, db, timeout: float = 60.0) -> tuple[str, str]:
    """The interrupted command's output; if it does not end, what it and the server were doing."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        activity = db.execute("SELECT pid, state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running {timeout:.0f}s after the signal; server: {activity}; "
                             f"stdout: {out[-2000:]}; stderr: {err[-2000:]}") from None


def test_ctrl_c_during_apply_says_what_to_do_and_the_same_command_continues(tmp_path, dsn, db):
    import signal
    import time

    files = {"steps/a/0001_a.sql": "CREATE TABLE marks (n int);\nDO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM gate) "
                                   "LOOP PERFORM pg_sleep(0.02); END LOOP; END $$;\nINSERT INTO marks VALUES (1);\n",
             "steps/a/0001_a.rollback.sql": "DROP TABLE marks;\n"}
    path = write_plan(tmp_path, PLAN, files)
    db.execute("CREATE TABLE gate (open boolean)")
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path), "--dsn", dsn,
               "apply"]
    # Ctrl-C as a terminal delivers it: a command started from a background job (CI runners do that)
    # inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    waiting_at_gate(db, proc)
    proc.send_signal(signal.SIGINT)
    out, err = ended(proc, db)
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "run the same command again" in err and "Traceback" not in err
    assert db.execute("SELECT to_regclass('marks')").fetchone() == (None,)  # the migration did not half-commit
    db.execute("INSERT INTO gate VALUES (true)")
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert db.execute("SELECT count(*) FROM marks").fetchone() == (1,)


def test_sigterm_ends_a_command_as_ctrl_c_does(tmp_path, dsn, db):
    import signal
    import time

    files = {"steps/a/0001_a.sql": "DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM gate) LOOP PERFORM pg_sleep(0.02); "
                                   "END LOOP; END $$;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"}
    path = write_plan(tmp_path, PLAN, files)
    db.execute("CREATE TABLE gate (open boolean)")
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path), "--dsn", dsn,
               "apply"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting_at_gate(db, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = ended(proc, db)
    assert proc.returncode == 130 and "interrupted: `rollout apply` stopped" in err, (out, err)


def applied_with_a_backfill(tmp_path, dsn, db) -> Rollout:
    """Step a, whose backfill `fill` sets t.v on 50 rows, applied."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, 0 FROM generate_series(1, 50) g")
    plan = PLAN.replace("    migrate: steps/a\n", "    migrate: steps/a\n    backfills:\n      - name: fill\n"
                        "        table: t\n        set: {v: '1'}\n        where: v = 0\n")
    rollout = Rollout(write_plan(tmp_path, plan, {"steps/a/0001_a.sql": "SELECT 1;\n",
                                                  "steps/a/0001_a.rollback.sql": "SELECT 1;\n"}), dsn)
    assert rollout("apply").exit_code == 0
    return rollout


def test_a_backfill_whose_command_died_is_shown_interrupted_not_running(tmp_path, dsn, db):
    import json

    rollout = applied_with_a_backfill(tmp_path, dsn, db)
    db.execute("UPDATE rollout.backfills SET state = 'running'")  # what a killed command leaves
    status = json.loads(rollout("backfill", "status", "--json").output)
    row = status["backfills"][0]
    assert row["state"] == "interrupted" and row["eta_seconds"] is None


def test_a_failing_rollback_names_the_rollback_file(tmp_path, dsn):
    path = write_plan(tmp_path, PLAN, {"steps/a/0001_a.sql": "CREATE TABLE t (id int);\n",
                                       "steps/a/0001_a.rollback.sql": "DROP TABLE nope;\n"})
    rollout = Rollout(path, dsn)
    assert rollout("apply").exit_code == 0
    failed = rollout("rollback", "a")
    assert failed.exit_code == 1 and "steps/a/0001_a.rollback.sql failed (rollback)" in failed.output


def test_seeding_a_database_steps_have_changed_says_to_reset_first(rollout):
    assert rollout("apply", "composite_indexes").exit_code == 0
    result = rollout("db", "seed", "--rows", "100")
    assert result.exit_code == 2 and "`rollout db reset --yes`, then `rollout db seed`" in result.output


def test_a_stage_beyond_the_rollout_is_refused_not_finalized(tmp_path, dsn, db):
    plan = PLAN.replace("steps:\n", "flags:\n  f: {description: a flag}\nsteps:\n").replace(
        "    migrate: steps/a\n", "    migrate: steps/a\n    flag: f\n    rollout: {stages: [10, 50, 100]}\n")
    path = write_plan(tmp_path, plan, {"steps/a/0001_a.sql": "SELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    rollout = Rollout(path, dsn)
    assert rollout("apply").exit_code == 0 and rollout("advance", "a").exit_code == 0
    db.execute("ALTER TABLE rollout.steps DISABLE TRIGGER steps_enforce_transition")  # what a superuser can do
    db.execute("UPDATE rollout.steps SET stage = 7 WHERE step_id = 'a'")
    db.execute("ALTER TABLE rollout.steps ENABLE TRIGGER steps_enforce_transition")
    import json
    status = rollout("status", "--json")
    assert status.exit_code == 0 and "edited by hand" in json.loads(status.output)["steps"][0]["stage"]
    refused = rollout("advance", "a")
    assert refused.exit_code == 2 and "records stage 8 of a rollout with 3 stages" in refused.output
    assert db.execute("SELECT state FROM rollout.steps WHERE step_id = 'a'").fetchone() == ("rolling_out",)


def test_a_backfill_checkpoint_edited_by_hand_is_a_clear_error(tmp_path, dsn, db):
    rollout = applied_with_a_backfill(tmp_path, dsn, db)
    assert rollout("rollback", "a").exit_code == 0
    db.execute("UPDATE t SET v = 0")
    db.execute("INSERT INTO rollout.backfills (env, step_id, name, state, cursor) "
               "VALUES ('local', 'a', 'fill', 'running', '[1, 2, 3]')")  # a checkpoint edited by hand
    result = rollout("apply")
    assert result.exit_code == 1 and "holds [1, 2, 3], not one value for each of its key's columns (id)" in result.output
    assert "Traceback" not in result.output
