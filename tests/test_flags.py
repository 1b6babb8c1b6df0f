"""Flags and staged rollouts on a real PostgreSQL: evaluators agree, history, kill switch,
advance / abort / watch, finalize only at 100%, and the promotion gate between environments."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest
from openfeature import api as openfeature
from openfeature.evaluation_context import EvaluationContext

from orchestrator.client import FlagClient, RolloutProvider
from orchestrator.flags import bucket, evaluate

from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {{database: embedded}}
  staging: {{dsn_env: ROLLOUT_TEST_STAGING}}
  production: {{dsn_env: ROLLOUT_TEST_PRODUCTION, after: staging, confirm: true}}
flags:
  notes_write:
    description: the application writes notes
    default: off
  dark_mode:
    description: an unrelated flag
    default: 25
    environments: {{staging: on}}
steps:
  - id: notes
    title: a notes table
    priority: high
    flag: notes_write
    rollout:
      stages: [10, 50, 100]
      hold: {hold}
      checks:
        - name: notes_receive_rows
          sql: SELECT 'no notes yet' AS problem WHERE NOT EXISTS (SELECT 1 FROM notes)
    migrate: steps/notes
    finalize: steps/notes_contract
"""
FILES = {
    "steps/notes/notes_01.sql": "CREATE TABLE notes (id serial PRIMARY KEY, body text);\n",
    "steps/notes/notes_01.rollback.sql": "DROP TABLE notes;\n",
    # SET NOT NULL the safe way: a validated CHECK first, so the SET NOT NULL needs no scan
    "steps/notes_contract/notes_contract_01.sql":
        "ALTER TABLE notes ADD CONSTRAINT notes_body_not_null CHECK (body IS NOT NULL) NOT VALID;\n",
    "steps/notes_contract/notes_contract_01.rollback.sql": "ALTER TABLE notes DROP CONSTRAINT notes_body_not_null;\n",
    "steps/notes_contract/notes_contract_02.sql": "ALTER TABLE notes VALIDATE CONSTRAINT notes_body_not_null;\n",
    "steps/notes_contract/notes_contract_02.rollback.sql": "-- nothing: validation only marks the constraint\n",
    "steps/notes_contract/notes_contract_03.sql":
        "ALTER TABLE notes ALTER COLUMN body SET NOT NULL;\nALTER TABLE notes DROP CONSTRAINT notes_body_not_null;\n",
    "steps/notes_contract/notes_contract_03.rollback.sql":
        "ALTER TABLE notes ALTER COLUMN body DROP NOT NULL;\n"
        "ALTER TABLE notes ADD CONSTRAINT notes_body_not_null CHECK (body IS NOT NULL) NOT VALID;\n",
}


@pytest.fixture
def notes(tmp_path, dsn) -> Rollout:
    return Rollout(write_plan(tmp_path, PLAN.format(hold="0"), FILES), dsn)


def step_status(rollout: Rollout) -> dict:
    return json.loads(rollout("status", "--json").stdout)["steps"][0]


def flag(rollout: Rollout, name: str = "notes_write") -> str:
    return rollout("flags", "get", name).stdout.splitlines()[0]  # the value; its targets follow


def test_the_three_evaluators_agree_bit_for_bit(notes, dsn, db):
    assert notes("apply").exit_code == 0
    subjects = [str(900_000_000_000_000_000 + i * 7919) for i in range(100_000)]
    sql_buckets = db.execute("SELECT array_agg(rollout.bucket('notes_write', s) ORDER BY n) "
                             "FROM unnest(%s::text[]) WITH ORDINALITY AS t (s, n)", (subjects,)).fetchone()[0]
    assert sql_buckets == [bucket("notes_write", s) for s in subjects]

    # thousands of targeted subjects, ahead of the percentage (never ahead of off)
    included, excluded = subjects[:3000:2], subjects[1:3000:2]
    assert notes("flags", "target", "notes_write", "--include", ",".join(included),
                 "--exclude", ",".join(excluded)).exit_code == 0
    openfeature.set_provider(RolloutProvider(client := FlagClient(dsn, refresh_seconds=60)))
    try:
        of = openfeature.get_client()
        for value in ("10", "50", "0", "on"):
            assert notes("flags", "set", "notes_write", value).exit_code == 0
            client.refresh()
            in_sql = db.execute("SELECT array_agg(rollout.is_enabled('notes_write', s) ORDER BY n) "
                                "FROM unnest(%s::text[]) WITH ORDINALITY AS t (s, n)", (subjects,)).fetchone()[0]
            in_python = [client.is_enabled("notes_write", s) for s in subjects]
            assert in_python == in_sql, value
            sample = subjects[:10] + subjects[::1000]
            details = [of.get_boolean_details("notes_write", False, EvaluationContext(targeting_key=s))
                       for s in sample]
            assert [d.value for d in details] == in_python[:10] + in_python[::1000], value
            reasons = {d.reason for d in details[:10]}
            assert reasons == ({"DISABLED"} if value == "0" else {"TARGETING_MATCH"}), (value, reasons)
            if value != "0":
                assert all(in_python[:3000:2]) and not any(in_python[1:3000:2]), value
        assert in_python[3000:] == [True] * (len(subjects) - 3000)  # 'on'
    finally:
        openfeature.shutdown()


def test_targets_are_set_recorded_shown_and_kept_in_step_with_the_plan(tmp_path, dsn, db):
    plan = PLAN.replace("    description: the application writes notes\n",
                        "    description: the application writes notes\n    include: [team-guild]\n")
    rollout = Rollout(write_plan(tmp_path, plan.format(hold="0"), FILES), dsn)
    assert rollout("flags", "set", "notes_write", "10").exit_code == 0  # the plan's target is stored with it
    targeted = rollout("flags", "target", "notes_write", "--include", "a, b", "--exclude", "c", "--reason", "canary")
    assert targeted.exit_code == 0 and "1 always out" in targeted.output, targeted.output
    got = rollout("flags", "get", "notes_write", "--subject", "c")
    assert got.output.splitlines() == ["10%", "always in: a, b, team-guild", "always out: c", "c: off (targeted)"]
    assert db.execute("SELECT rollout.is_enabled('notes_write', 'team-guild'), rollout.is_enabled('notes_write', "
                      "'a'), rollout.is_enabled('notes_write', 'c')").fetchone() == (True, True, False)
    listed = {f["name"]: f for f in json.loads(rollout("flags", "list", "--json").output)["flags"]}
    assert listed["notes_write"]["include"] == ["a", "b", "team-guild"] and listed["notes_write"]["exclude"] == ["c"]
    # the plan's targets change in the plan only
    refused = rollout("flags", "target", "notes_write", "--remove", "team-guild")
    assert refused.exit_code == 2 and "targeted by the plan" in refused.output, refused.output
    assert rollout("flags", "target", "notes_write", "--remove", "b").exit_code == 0
    assert rollout("flags", "set", "notes_write", "off").exit_code == 0
    assert db.execute("SELECT rollout.is_enabled('notes_write', 'team-guild')").fetchone() == (False,)  # off is off
    history = json.loads(rollout("flags", "history", "notes_write", "--json").output)
    assert [(h["targets"], h["reason"]) for h in history if h["targets"]] == [
        ({"include": ["team-guild"]}, "the plan's targets"), ({"include": ["a", "b"], "exclude": ["c"]}, "canary"),
        ({"remove": ["b"]}, None)]
    events = [e["message"] for e in json.loads(rollout("events", "--json").output) if e["kind"] == "flag.targeted"]
    assert events == ["flag notes_write: +in a, b; +out c (canary)", "flag notes_write: -b"]
    # a target the plan no longer names is dropped by the next command; the operator's stay
    rollout = Rollout(write_plan(tmp_path, PLAN.format(hold="0"), FILES), dsn)
    assert rollout("flags", "set", "notes_write", "50").exit_code == 0
    assert db.execute("SELECT array_agg(subject ORDER BY subject) FROM rollout.flag_targets").fetchone() == (["a", "c"],)
    # a flag on at 0% (only a hand edit makes one) is off for everyone, targets too, in SQL as in Python
    db.execute("UPDATE rollout.flags SET enabled = true, percent = 0 WHERE name = 'notes_write'")
    assert db.execute("SELECT rollout.is_enabled('notes_write', 'a')").fetchone() == (False,)
    assert not evaluate("notes_write", True, 0, "a", {"a": True})
    for bad, message in ((("--include", "x\x1by"), "printable"), ((), "name the subjects"),
                         (("--include", "a", "--exclude", "a"), "given twice")):
        result = rollout("flags", "target", "notes_write", *bad)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_an_excluded_subject_keeps_the_contract_away(notes, db):
    assert notes("apply").exit_code == 0
    db.execute("INSERT INTO notes (body) VALUES ('hello')")
    for _ in range(3):
        assert notes("advance", "notes").exit_code == 0
    assert notes("flags", "target", "notes_write", "--exclude", "guild-on-the-old-shape").exit_code == 0
    held = notes("advance", "notes")  # nothing failed: the contract waits
    assert held.exit_code == 0 and "always excludes 1 subject (guild-on-the-old-shape" in held.output, held.output
    assert step_status(notes)["state"] == "rolling_out"
    # a watch waits too (it neither aborts nor turns the flag off), and goes on once the subject is back
    watch = subprocess.Popen([sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan",
                              str(notes.plan), "--dsn", notes.dsn, "advance", "notes", "--watch", "--interval", "50ms"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)
    assert watch.poll() is None and flag(notes) == "on" and step_status(notes)["state"] == "rolling_out"
    assert notes("flags", "target", "notes_write", "--remove", "guild-on-the-old-shape").exit_code == 0
    output, _ = watch.communicate(timeout=60)
    assert watch.returncode == 0 and step_status(notes)["state"] == "done", output
    # after the contract no subject may be sent back to the old shape
    late = notes("flags", "target", "notes_write", "--exclude", "guild-on-the-old-shape")
    assert late.exit_code == 2 and "notes ran its contract" in late.output, late.output


def test_bucketing_is_sticky_and_accurate():
    subjects = [str(10_000 + i) for i in range(100_000)]
    at_10 = {s for s in subjects if evaluate("f", True, 10, s)}
    at_50 = {s for s in subjects if evaluate("f", True, 50, s)}
    assert at_10 <= at_50
    assert abs(len(at_10) / len(subjects) - 0.10) < 0.01
    assert abs(len(at_50) / len(subjects) - 0.50) < 0.01
    assert not evaluate("f", False, 100, "x") and evaluate("f", True, 100, None) and not evaluate("f", True, 50, None)


def test_history_records_every_change(notes, db):
    assert notes("flags", "set", "notes_write", "10", "--reason", "canary").exit_code == 0
    assert notes("flags", "set", "notes_write", "off", "--reason", "errors spiked").exit_code == 0
    history = json.loads(notes("flags", "history", "notes_write", "--json").stdout)
    assert [(h["old"], h["new"], h["reason"], h["actor"]) for h in history] == [
        (None, "off", "plan default", "tester"), ("off", "10%", "canary", "tester"),
        ("10%", "off", "errors spiked", "tester")]
    events = json.loads(notes("events", "--json").stdout)
    assert [e["message"] for e in events if e["kind"] == "flag.set"] == [
        "flag notes_write: off -> 10% (canary)", "flag notes_write: 10% -> off (errors spiked)"]
    listed = {f["name"]: f for f in json.loads(notes("flags", "list", "--json").stdout)["flags"]}
    assert listed["notes_write"]["value"] == "off" and listed["dark_mode"]["value"] == "25%"


def test_flag_values_and_names_are_checked(notes):
    assert notes("flags", "set", "notes_write", "150").exit_code == 2
    assert "a flag value is on, off or a percentage" in notes("flags", "set", "notes_write", "half").output
    unknown = notes("flags", "set", "notes_wirte", "on")
    assert unknown.exit_code == 2 and "no flag 'notes_wirte'" in unknown.output


def test_kill_switch_reaches_the_client_within_its_interval_and_sql_at_once(notes, dsn, db):
    assert notes("flags", "set", "notes_write", "on").exit_code == 0
    with FlagClient(dsn, refresh_seconds=0.2) as client:
        assert client.is_enabled("notes_write", "42")
        assert notes("flags", "set", "notes_write", "off").exit_code == 0
        assert db.execute("SELECT rollout.is_enabled('notes_write', '42')").fetchone()[0] is False
        started = time.monotonic()
        while client.is_enabled("notes_write", "42"):
            assert time.monotonic() - started < 1.0, "the client must see the kill switch within its interval"
            time.sleep(0.02)


def test_flags_set_works_while_another_operator_holds_the_environment(notes, dsn):
    from orchestrator.locks import acquire_env_lock

    assert notes("apply").exit_code == 0
    with psycopg.connect(dsn, autocommit=True) as other, acquire_env_lock(other, "local"):
        assert notes("apply").exit_code == 3
        assert notes("flags", "set", "notes_write", "off", "--reason", "incident").exit_code == 0


def test_staged_rollout_advance_refuse_finalize_abort(notes, db):
    applied = notes("apply")
    assert applied.exit_code == 0
    assert "1 step rolling out (not started): notes" in applied.output
    assert step_status(notes)["state"] == "rolling_out" and flag(notes) == "off"

    first = notes("advance", "notes")
    assert first.exit_code == 0 and "flag notes_write at 10%" in first.output
    assert flag(notes) == "10%" and step_status(notes)["stage"] == "10% (1/3)"

    refused = notes("advance", "notes")
    assert refused.exit_code == 1 and "notes_receive_rows: found 1 row" in refused.output
    assert flag(notes) == "10%"

    db.execute("INSERT INTO notes (body) VALUES ('hello')")
    assert notes("advance", "notes").exit_code == 0 and flag(notes) == "50%"
    early = notes("apply")  # at 50%: the contract must not run yet
    assert early.exit_code == 0 and "rolling out (50%)" in early.output
    assert db.execute("SELECT is_nullable FROM information_schema.columns WHERE table_name = 'notes' "
                      "AND column_name = 'body'").fetchone()[0] == "YES"

    aborted = notes("abort", "notes", "--reason", "latency up")
    assert aborted.exit_code == 0 and "rollout aborted: flag notes_write off (was 50%): latency up" in aborted.output
    assert flag(notes) == "off" and step_status(notes)["state"] == "aborted"
    assert notes("abort", "notes").exit_code == 2  # nothing in progress now

    restarted = notes("advance", "notes")
    assert restarted.exit_code == 0 and "restarted after an abort" in restarted.output and flag(notes) == "10%"
    assert notes("advance", "--all").exit_code == 0 and flag(notes) == "50%"
    assert notes("advance", "--all").exit_code == 0 and flag(notes) == "on"
    done = notes("apply")  # at 100% with its checks passing: apply runs the contract
    assert done.exit_code == 0 and "finalized; done" in done.output
    assert step_status(notes)["state"] == "done"
    assert db.execute("SELECT is_nullable FROM information_schema.columns WHERE table_name = 'notes' "
                      "AND column_name = 'body'").fetchone()[0] == "NO"
    again = notes("advance", "--all")
    assert again.exit_code == 0 and "no rollout in progress" in again.output


def test_hold_time_keeps_a_stage(tmp_path, dsn, db):
    rollout = Rollout(write_plan(tmp_path, PLAN.format(hold="1s"), FILES), dsn)
    assert rollout("apply").exit_code == 0
    db.execute("INSERT INTO notes (body) VALUES ('x')")
    assert rollout("advance", "notes").exit_code == 0
    held = rollout("advance", "notes")
    assert held.exit_code == 0 and "holding at 10% for" in held.output and flag(rollout) == "10%"
    time.sleep(1.1)
    assert rollout("advance", "notes").exit_code == 0 and flag(rollout) == "50%"


def test_watch_advances_to_done(notes, db):
    assert notes("apply").exit_code == 0
    db.execute("INSERT INTO notes (body) VALUES ('x')")
    watched = notes("advance", "notes", "--watch", "--interval", "50ms")
    assert watched.exit_code == 0, watched.output
    assert "finalized" in watched.output and step_status(notes)["state"] == "done" and flag(notes) == "on"


def test_watch_aborts_on_the_first_failed_check(notes, db):
    assert notes("apply").exit_code == 0
    watched = notes("advance", "notes", "--watch", "--interval", "50ms")
    assert watched.exit_code == 1
    assert "the rollout was aborted and flag notes_write is off" in watched.output
    assert flag(notes) == "off" and step_status(notes)["state"] == "aborted"


def test_promotion_gate_between_environments(notes, new_database, monkeypatch):
    staging, production = new_database(), new_database()
    monkeypatch.setenv("ROLLOUT_TEST_STAGING", staging)
    plan = notes.plan
    prod, stage = Rollout(plan, production), Rollout(plan, None)
    refused = prod("apply", "--yes", env="production")
    assert refused.exit_code == 1
    assert "comes after 'staging', where these steps are not done: notes (pending)" in refused.output

    assert stage("apply", env="staging").exit_code == 0
    assert prod("apply", "--yes", env="production").exit_code == 1  # rolling out in staging is not done
    forced = prod("apply", "--yes", "--force", env="production")
    assert forced.exit_code == 0 and "(--force)" in forced.output
    assert any(e["kind"] == "promotion.forced" for e in json.loads(prod("events", "--json", env="production").stdout))

    with psycopg.connect(staging, autocommit=True) as db:
        db.execute("INSERT INTO notes (body) VALUES ('x')")
    for _ in range(3):
        assert stage("advance", "notes", env="staging").exit_code == 0
    assert stage("apply", env="staging").exit_code == 0
    assert json.loads(stage("status", "--json", env="staging").stdout)["steps"][0]["state"] == "done"
    prod_fresh = Rollout(plan, new_database())
    assert prod_fresh("apply", "--yes", env="production").exit_code == 0


def test_flag_defaults_per_environment(notes, new_database, monkeypatch):
    monkeypatch.setenv("ROLLOUT_TEST_STAGING", new_database())
    assert Rollout(notes.plan, None)("flags", "get", "dark_mode", env="staging").stdout.strip() == "on"
    local = notes("flags", "get", "dark_mode", "--subject", "12345")
    assert local.stdout.splitlines()[0] == "25%" and "bucket" in local.output


@pytest.mark.parametrize("old, new", [
    ("stages: [10, 50, 100]", "stages: [50, 10, 100]", ),
    ("stages: [10, 50, 100]", "stages: [10, 50]", ),
    ("    flag: notes_write\n", "", ),
])
def test_rollout_plan_errors(tmp_path, old, new):
    text = PLAN.format(hold="0").replace(old, new)
    result = Rollout(write_plan(tmp_path, text, FILES), None)("check")
    assert result.exit_code == 2
    assert "stages must rise and end at 100" in result.output or "a staged rollout needs the step's 'flag:'" in result.output


def test_promotion_gate_when_upstream_cannot_be_read(notes, new_database, monkeypatch):
    monkeypatch.delenv("ROLLOUT_TEST_STAGING", raising=False)
    prod = Rollout(notes.plan, new_database())
    refused = prod("apply", "--yes", env="production")
    assert refused.exit_code == 1
    assert "staging cannot be read" in refused.output and "$ROLLOUT_TEST_STAGING, which is not set" in refused.output
    assert prod("apply", "--yes", "--force", env="production").exit_code == 0


@pytest.mark.parametrize("after, message", [("qa", "unknown environment 'qa'"),
                                            ("production", "an environment cannot come after itself")])
def test_after_must_name_another_environment(tmp_path, after, message):
    text = PLAN.format(hold="0").replace("after: staging", f"after: {after}")
    result = Rollout(write_plan(tmp_path, text, FILES), None)("check")
    assert result.exit_code == 2 and f"environments.production.after: {message}" in result.output


def test_after_cycles_are_refused(tmp_path):
    text = PLAN.format(hold="0").replace("staging: {dsn_env: ROLLOUT_TEST_STAGING}",
                                         "staging: {dsn_env: ROLLOUT_TEST_STAGING, after: production}")
    result = Rollout(write_plan(tmp_path, text, FILES), None)("check")
    assert result.exit_code == 2 and "environments wait for each other: staging -> production -> staging" in result.output
