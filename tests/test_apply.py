"""apply / status / rollback / verify against a real PostgreSQL, through the CLI an operator uses."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from orchestrator import api
from orchestrator.plan_loader import load_plan

from .conftest import Rollout, write_plan


def states(rollout: Rollout) -> dict[str, str]:
    result = rollout("status", "--json")
    assert result.exit_code == 0, result.output
    return {s["id"]: s["state"] for s in json.loads(result.stdout)["steps"]}


def index_valid(db, name: str) -> bool | None:
    row = db.execute("SELECT x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                     "WHERE c.relname = %s", (name,)).fetchone()
    return row[0] if row else None


def constraint_validated(db, name: str) -> bool | None:
    row = db.execute("SELECT convalidated FROM pg_constraint WHERE conname = %s", (name,)).fetchone()
    return row[0] if row else None


def test_apply_status_rollback_apply(rollout, db):
    assert set(states(rollout).values()) == {"pending"}
    result = rollout("apply")
    assert result.exit_code == 0, result.output
    after = states(rollout)
    unflagged = {"composite_indexes", "confidence_range", "reputation_range"}
    assert {after[s] for s in unflagged} == {"done"}
    assert {state for step, state in after.items() if step not in unflagged} <= {"rolling_out", "pending"}
    assert index_valid(db, "idx_detection_events_user_server_type") is True
    assert index_valid(db, "idx_verification_events_user_server_status") is True
    assert constraint_validated(db, "chk_confidence_range") is True
    assert constraint_validated(db, "chk_global_reputation_range") is True

    result = rollout("rollback", "composite_indexes", "--cascade")  # the enum steps build on its indexes
    assert result.exit_code == 0, result.output
    assert states(rollout)["composite_indexes"] == "pending"
    assert index_valid(db, "idx_detection_events_user_server_type") is None

    assert rollout("apply", "composite_indexes").exit_code == 0
    assert index_valid(db, "idx_detection_events_user_server_type") is True
    again = rollout("apply", "confidence_range")
    assert again.exit_code == 0 and "every requested step is done in local: nothing to do" in again.output


def test_bootstrap_runs_once_and_only_on_an_empty_database(rollout, db):
    assert rollout("apply", "composite_indexes").exit_code == 0
    assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'bootstrap'").fetchone()[0] == 1
    assert rollout("rollback", "composite_indexes").exit_code == 0
    assert rollout("apply", "composite_indexes").exit_code == 0
    assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'bootstrap'").fetchone()[0] == 1


def test_existing_database_is_not_bootstrapped(rollout, db):
    db.execute("CREATE TABLE legacy (id int)")
    result = rollout("apply", "composite_indexes")
    assert result.exit_code == 1  # the baseline tables are missing, and PostgreSQL says so
    assert "bootstrap steps/baseline/schema.sql skipped" in result.output
    assert 'relation "verification_events" does not exist' in result.output
    assert db.execute("SELECT to_regclass('servers')").fetchone()[0] is None


def test_yoyo_sees_what_rollout_applied(rollout, dsn, bot_plan):
    assert rollout("apply", "messages_table").exit_code == 0
    folder = bot_plan.parent / "steps" / "messages_table" / "migrate"
    listed = subprocess.run(
        [sys.executable, "-m", "yoyo", "list", "--batch", "--database", dsn.replace("postgresql://", "postgresql+psycopg://"),
         str(folder)], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    applied = [line for line in listed.stdout.splitlines() if line.strip().startswith("A")]
    assert len(applied) == 1, listed.stdout


def test_remediation_rollback_restores_every_original_value(rollout, db):
    assert rollout("db", "seed", "--rows", "3000").exit_code == 0
    before = db.execute("SELECT md5(string_agg(id::text || ':' || confidence::text, ',' ORDER BY id)), "
                        "count(*) FILTER (WHERE NOT (confidence >= 0 AND confidence <= 1)) FROM detection_events").fetchone()
    assert before[1] > 0, "the sample data should hold out-of-range confidence"
    assert rollout("apply", "confidence_range").exit_code == 0
    assert db.execute("SELECT count(*) FROM detection_events WHERE NOT (confidence BETWEEN 0 AND 1)").fetchone()[0] == 0
    assert rollout("rollback", "confidence_range").exit_code == 0
    after = db.execute("SELECT md5(string_agg(id::text || ':' || confidence::text, ',' ORDER BY id)), "
                       "count(*) FILTER (WHERE NOT (confidence >= 0 AND confidence <= 1)) FROM detection_events").fetchone()
    assert after == before


def test_rollback_refuses_while_dependents_are_applied(rollout, db):
    assert rollout("apply").exit_code == 0
    result = rollout("rollback", "composite_indexes")
    assert result.exit_code == 2
    assert ("steps that depend on it are still applied: verification_status_enum (rolling_out), "
            "detection_type_enum (rolling_out)") in result.output, result.output
    assert "--cascade" in result.output
    assert states(rollout)["composite_indexes"] == "done"
    cascade = rollout("rollback", "composite_indexes", "--cascade")
    assert cascade.exit_code == 0, cascade.output
    assert "composite_indexes" in cascade.output and "detection_type_enum" in cascade.output
    assert index_valid(db, "idx_detection_events_user_server_type") is None


PLAN = """\
version: 1
environments:
  local:
    database: embedded
  production:
    dsn_env: ROLLOUT_TEST_UNSET_URL
    confirm: true
timeouts:
  lock: 100ms
  retry_budget: {budget}
steps:
  - id: widgets
    title: A widgets table
    priority: high
    preconditions:
      - name: no_legacy_widgets
        sql: SELECT relname FROM pg_class WHERE relname = 'legacy_widgets'
    migrate: steps/widgets
    verify:
      - name: has_rows
        sql: SELECT 'empty' AS problem WHERE NOT EXISTS (SELECT 1 FROM widgets)
"""

FILES = {
    "steps/widgets/widgets_01_table.sql": "CREATE TABLE widgets (id int PRIMARY KEY, name text);\n",
    "steps/widgets/widgets_01_table.rollback.sql": "DROP TABLE widgets;\n",
    "steps/widgets/widgets_02_rows.sql": "INSERT INTO widgets VALUES (1, 'one');\nINSERT INTO widgets VALUES (2, 'two');\n",
    "steps/widgets/widgets_02_rows.rollback.sql": "DELETE FROM widgets WHERE id IN (1, 2);\n",
}


@pytest.fixture
def widgets(tmp_path, dsn) -> Rollout:
    return Rollout(write_plan(tmp_path, PLAN.format(budget="2s"), FILES), dsn)


def test_failed_precondition_changes_nothing(widgets, db):
    db.execute("CREATE TABLE legacy_widgets (id int)")
    result = widgets("apply")
    assert result.exit_code == 1
    assert "precondition" in result.output and "no_legacy_widgets: found 1 row" in result.output
    assert "relname='legacy_widgets'" in result.output
    assert db.execute("SELECT to_regclass('widgets')").fetchone()[0] is None
    assert states(widgets)["widgets"] == "pending"
    failed = db.execute("SELECT ok, message FROM rollout.events WHERE kind = 'preconditions.failed'").fetchone()
    assert failed[0] is False and "no_legacy_widgets" in failed[1]


def test_a_failed_migration_rolls_back_whole_and_resumes_once_fixed(widgets, db, tmp_path):
    bad = tmp_path / "steps/widgets/widgets_02_rows.sql"
    bad.write_text("INSERT INTO widgets VALUES (1, 'one');\nINSERT INTO widgets VALUES (1, 'dup');\n")
    result = widgets("apply")
    assert result.exit_code == 1
    assert "steps/widgets/widgets_02_rows.sql failed" in result.output
    assert "duplicate key value violates unique constraint" in result.output and "23505" in result.output
    assert states(widgets)["widgets"] == "failed"
    # the first migration stayed applied; the failed one left nothing behind, not even its first row
    assert db.execute("SELECT count(*) FROM widgets").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] == 1

    bad.write_text(FILES["steps/widgets/widgets_02_rows.sql"])
    result = widgets("apply")
    assert result.exit_code == 0, result.output
    assert "resuming after the failure in migrate" in result.output
    assert states(widgets)["widgets"] == "done"
    assert db.execute("SELECT count(*) FROM widgets").fetchone()[0] == 2
    # widgets_01 was not run twice: its CREATE TABLE would have failed
    assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'migration.apply'").fetchone()[0] == 2


def test_verification_failure_then_fix(widgets, db, tmp_path):
    (tmp_path / "steps/widgets/widgets_02_rows.sql").write_text("SELECT 1;\n")
    (tmp_path / "steps/widgets/widgets_02_rows.rollback.sql").write_text("SELECT 1;\n")
    result = widgets("apply")
    assert result.exit_code == 1
    assert "verification failed: has_rows: found 1 row" in result.output
    assert states(widgets)["widgets"] == "failed"
    db.execute("INSERT INTO widgets VALUES (7, 'fixed by hand')")
    assert widgets("apply").exit_code == 0
    assert states(widgets)["widgets"] == "done"


def test_verify_command_reports_each_check(widgets, db):
    assert widgets("apply").exit_code == 0
    ok = widgets("verify")
    assert ok.exit_code == 0 and "has_rows: ok" in ok.output
    db.execute("DELETE FROM widgets")
    broken = widgets("verify", "widgets")
    assert broken.exit_code == 1
    assert "has_rows: found 1 row" in broken.output and "verification failed: widgets" in broken.output
    assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'verify.failed'").fetchone()[0] == 1


def test_second_operator_exits_3_naming_the_holder(widgets, dsn, db):
    assert widgets("apply").exit_code == 0  # creates the rollout schema
    from orchestrator.locks import acquire_env_lock

    with psycopg.connect(dsn, autocommit=True, application_name="alice's rollout") as other, \
            acquire_env_lock(other, "local") as lock:
        other.execute("INSERT INTO rollout.runs (env, command, actor) VALUES ('local', 'apply', 'alice')")
        result = widgets("rollback", "widgets")
        assert result.exit_code == 3
        assert "environment 'local' is locked by alice running `rollout apply` since" in result.output
        assert f"backend pid {lock.holder.info.backend_pid}" in result.output
    assert states(widgets)["widgets"] == "done"


def test_a_killed_operator_leaves_no_lock_behind(widgets, dsn, db):
    assert widgets("apply").exit_code == 0
    code = (f"import psycopg, os, signal\nfrom orchestrator.locks import acquire_env_lock\n"
            f"c = psycopg.connect({dsn!r}, autocommit=True)\nlock = acquire_env_lock(c, 'local')\n"
            "c.execute(\"INSERT INTO rollout.runs (env, command, actor) VALUES ('local', 'apply', 'killed')\")\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    result = widgets("rollback", "widgets")
    assert result.exit_code == 0, result.output
    assert "`rollout apply` by killed" in result.output and "ended without finishing" in result.output
    assert db.execute("SELECT outcome FROM rollout.runs WHERE actor = 'killed'").fetchone()[0] == "interrupted"


def test_lock_timeouts_are_retried_then_fail_naming_the_blocker(tmp_path, dsn, db):
    widgets = Rollout(write_plan(tmp_path, PLAN.format(budget="600ms"), FILES), dsn)
    assert widgets("apply").exit_code == 0
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE widgets IN ACCESS SHARE MODE")  # a long reader
        result = widgets("rollback", "widgets")
        assert result.exit_code == 1
        assert "hit lock_timeout (attempt 1)" in result.output
        assert "could not get its lock after" in result.output
        assert f"blocked by pid {blocker.info.backend_pid}" in result.output
        assert "LOCK TABLE widgets IN ACCESS SHARE MODE" in result.output
        blocker.rollback()
    assert states(widgets)["widgets"] == "failed"
    assert widgets("rollback", "widgets").exit_code == 0
    assert states(widgets)["widgets"] == "pending"


def test_lock_timeouts_are_retried_until_the_lock_frees(widgets, dsn, db):
    import threading

    assert widgets("apply").exit_code == 0
    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE widgets IN ACCESS SHARE MODE")
    threading.Timer(0.7, blocker.rollback).start()
    result = widgets("rollback", "widgets")
    blocker.close()
    assert result.exit_code == 0, result.output
    assert "hit lock_timeout" in result.output
    assert states(widgets)["widgets"] == "pending"


def test_invalid_index_left_by_a_killed_build_is_rebuilt(rollout, db):
    assert rollout("apply", "composite_indexes").exit_code == 0
    assert rollout("rollback", "composite_indexes").exit_code == 0
    # What a killed CREATE INDEX CONCURRENTLY leaves: the index, marked invalid.
    db.execute("CREATE INDEX idx_detection_events_user_server_type ON detection_events (user_id)")
    db.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_detection_events_user_server_type'::regclass")
    result = rollout("apply", "composite_indexes")
    assert result.exit_code == 0, result.output
    assert "dropped invalid index idx_detection_events_user_server_type" in result.output
    assert index_valid(db, "idx_detection_events_user_server_type") is True
    columns = db.execute("SELECT pg_get_indexdef('idx_detection_events_user_server_type'::regclass)").fetchone()[0]
    assert "(user_id, server_id, detection_type)" in columns


def test_state_machine_refuses_forbidden_moves(widgets, db):
    from orchestrator.state import InvalidTransition, check_transition

    with pytest.raises(InvalidTransition, match="cannot move from pending to done"):
        check_transition("widgets", "pending", "done")
    assert widgets("apply").exit_code == 0
    with pytest.raises(psycopg.errors.RaiseException, match="cannot move from done to migrated"):
        db.execute("UPDATE rollout.steps SET state = 'migrated' WHERE step_id = 'widgets'")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        db.execute("DELETE FROM rollout.events")


def test_events_tell_who_did_what(widgets):
    assert widgets("apply").exit_code == 0
    assert widgets("rollback", "widgets").exit_code == 0
    result = widgets("events", "--json", "--limit", "100")
    assert result.exit_code == 0
    events = json.loads(result.stdout)
    assert {e["actor"] for e in events} == {"tester"}
    moves = [(e["from_state"], e["to_state"]) for e in events if e["kind"] == "state"]
    assert moves == [("pending", "migrating"), ("migrating", "migrated"), ("migrated", "verified"),
                     ("verified", "done"), ("done", "rolling_back"), ("rolling_back", "pending")]
    table = widgets("events", "--limit", "3")
    assert table.exit_code == 0 and "rolled back" in table.output
    assert widgets("events", "--limit", "0").exit_code == 2


def test_production_asks_for_confirmation(widgets, monkeypatch):
    result = widgets("apply", env="production")
    assert result.exit_code == 2
    assert "asks for confirmation before applying all pending steps; pass --yes" in result.output


def test_unset_dsn_variable_is_a_clear_error(tmp_path):
    rollout = Rollout(write_plan(tmp_path, PLAN.format(budget="1s"), FILES), None)
    result = rollout("apply", "--yes", env="production")
    assert result.exit_code == 2
    assert "reads its DSN from $ROLLOUT_TEST_UNSET_URL, which is not set" in result.output


def test_unknown_environment_and_step(widgets):
    assert "no environment 'prod' in" in widgets("status", env="prod").output
    result = widgets("apply", "nope")
    assert result.exit_code == 2 and "no step 'nope'" in result.output and "steps are: widgets" in result.output


def test_unreachable_database_never_shows_the_password(tmp_path):
    rollout = Rollout(write_plan(tmp_path, PLAN.format(budget="1s"), FILES),
                      "postgresql://operator:s3cr3t-pw@127.0.0.1:1/bot?connect_timeout=2")
    for args in (["apply"], ["status"], ["events"], ["verify"], ["rollback", "widgets"]):
        result = rollout(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "cannot connect to environment 'local' at postgresql://operator:***@127.0.0.1:1/bot" in result.output
        assert "s3cr3t-pw" not in result.output


def test_api_is_usable_without_the_cli(tmp_path, dsn):
    plan = load_plan(str(write_plan(tmp_path, PLAN.format(budget="1s"), FILES)))
    seen = []
    assert api.apply(plan, "local", dsn=dsn, actor="library", report=seen.append).finished == ("widgets",)
    assert [s.state for s in api.status(plan, "local", dsn=dsn)] == ["done"]
    assert any(e.kind == "migration.apply" for e in seen)


FINALIZE_PLAN = PLAN.replace("    migrate: steps/widgets\n", """\
    migrate: steps/widgets
    finalize: steps/widgets_contract
    allow:
      - rule: adding-not-nullable-field
        reason: widgets is created by this step and holds two rows; the scan is instant
""")
FINALIZE_FILES = {
    **FILES,
    "steps/widgets_contract/widgets_contract_01_not_null.sql": "ALTER TABLE widgets ALTER COLUMN name SET NOT NULL;\n",
    "steps/widgets_contract/widgets_contract_01_not_null.rollback.sql":
        "ALTER TABLE widgets ALTER COLUMN name DROP NOT NULL;\n",
}


def test_finalize_runs_after_verification_and_rolls_back_first(tmp_path, dsn, db):
    contract = tmp_path / "steps/widgets_contract/widgets_contract_01_not_null.sql"
    widgets = Rollout(write_plan(tmp_path, FINALIZE_PLAN.format(budget="1s"), FINALIZE_FILES), dsn)
    contract.write_text("ALTER TABLE widgets ALTER COLUMN nme SET NOT NULL;\n")
    failed = widgets("apply")
    assert failed.exit_code == 1 and 'column "nme"' in failed.output
    assert json.loads(widgets("status", "--json").stdout)["steps"][0]["phase"] == "finalize"

    contract.write_text(FINALIZE_FILES["steps/widgets_contract/widgets_contract_01_not_null.sql"])
    result = widgets("apply")
    assert result.exit_code == 0, result.output
    assert "resuming after the failure in finalize" in result.output and "finalized; done" in result.output
    nullable = "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'widgets' AND column_name = 'name'"
    assert db.execute(nullable).fetchone()[0] == "NO"
    assert json.loads(widgets("status", "--json").stdout)["steps"][0]["migrations_applied"] == 3

    undone = widgets("rollback", "widgets", "-v")  # each migration, in the order it ran
    assert undone.exit_code == 0
    lines = [line for line in undone.output.splitlines() if "rolled back widgets" in line]
    assert "widgets_contract_01_not_null" in lines[0]  # the contract is undone before the expand
    assert db.execute("SELECT to_regclass('widgets')").fetchone()[0] is None


def test_apply_prints_outcomes_and_a_summary_and_every_statement_with_v(tmp_path, dsn, db):
    widgets = Rollout(write_plan(tmp_path, FINALIZE_PLAN.format(budget="1s"), FINALIZE_FILES), dsn)
    quiet = widgets("apply")
    assert quiet.exit_code == 0, quiet.output
    assert "applied widgets_" not in quiet.output and "preconditions" not in quiet.output
    assert "finalized; done" in quiet.output and quiet.output.rstrip().endswith(
        "1 step done now in local: widgets\nevery requested step is done in local")
    assert widgets("rollback", "widgets").exit_code == 0
    verbose = widgets("apply", "-v")  # also accepted before the command: rollout -v apply
    assert verbose.exit_code == 0, verbose.output
    assert "applied widgets_01" in verbose.output and "applied widgets_contract_01_not_null" in verbose.output
    assert widgets("rollback", "widgets").exit_code == 0
    assert "applied widgets_01" in widgets("-v", "apply").output


WAITING_PLAN = """\
version: 1
environments: {local: {database: embedded}}
flags:
  a_on: {description: a}
  b_on: {description: b}
steps:
  - {id: a, title: a, priority: high, flag: a_on, operations: [{op: sql, up: "CREATE TABLE a (id int)"}]}
  - {id: b, title: b, priority: high, flag: b_on, operations: [{op: sql, up: "CREATE TABLE b (id int)"}]}
  - {id: c, title: c, priority: high, depends_on: [a, b], operations: [{op: sql, up: "CREATE TABLE c (id int)"}]}
"""


def test_the_summary_names_every_step_a_waiting_step_needs(tmp_path, dsn):
    applied = Rollout(write_plan(tmp_path, WAITING_PLAN), dsn)("apply")
    assert applied.exit_code == 0, applied.output
    assert "1 step waits for a and b: c" in applied.output, applied.output
