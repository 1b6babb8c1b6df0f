"""A step's flag follows the step: rollback turns it off before the schema goes, through the
kill switch abort uses; a flag shared with a step that needs it on stops the rollback; status
reports a flag whose value disagrees with its step's state."""

from __future__ import annotations

import json

import pytest

from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
flags:
  notes_write:
    description: the application writes notes
    default: off
  shared_write:
    description: the application writes alpha and beta
    default: off
steps:
  - id: notes
    title: a notes table
    priority: high
    flag: notes_write
    rollout:
      stages: [10, 50, 100]
    migrate: steps/notes
  - id: alpha
    title: an alpha table
    priority: medium
    flag: shared_write
    migrate: steps/alpha
  - id: beta
    title: a beta table
    priority: medium
    flag: shared_write
    rollout:
      stages: [50, 100]
    migrate: steps/beta
"""
FILES = {
    "steps/notes/notes_01.sql": "CREATE TABLE notes (id serial PRIMARY KEY, body text);\n",
    "steps/notes/notes_01.rollback.sql": "DROP TABLE notes;\n",
    # the flag as the application would read it while the column goes, seen by the rollback itself
    "steps/notes/notes_02.sql": "ALTER TABLE notes ADD COLUMN lang text;\n",
    "steps/notes/notes_02.rollback.sql":
        "CREATE TABLE IF NOT EXISTS witness (enabled boolean, percent smallint);\n"
        "INSERT INTO witness (enabled, percent) SELECT enabled, percent FROM rollout.flags "
        "WHERE env = 'local' AND name = 'notes_write';\nALTER TABLE notes DROP COLUMN lang;\n",
    "steps/alpha/alpha_01.sql": "CREATE TABLE alpha (id int PRIMARY KEY);\n",
    "steps/alpha/alpha_01.rollback.sql": "DROP TABLE alpha;\n",
    "steps/beta/beta_01.sql": "CREATE TABLE beta (id int PRIMARY KEY);\n",
    "steps/beta/beta_01.rollback.sql": "DROP TABLE beta;\n",
}


@pytest.fixture
def rollout(tmp_path, dsn) -> Rollout:
    return Rollout(write_plan(tmp_path, PLAN, FILES), dsn)


def step(rollout: Rollout, step_id: str) -> dict:
    result = rollout("status", "--json")
    assert result.exit_code == 0, result.output
    return next(s for s in json.loads(result.stdout)["steps"] if s["id"] == step_id)


def flag(rollout: Rollout, name: str = "notes_write") -> str:
    return rollout("flags", "get", name).stdout.strip()


def history(rollout: Rollout, name: str = "notes_write") -> list[tuple]:
    changes = json.loads(rollout("flags", "history", name, "--json").stdout)
    return [(c["old"], c["new"], c["reason"], c["actor"]) for c in changes]


def test_rollback_mid_rollout_turns_the_flag_off_before_undoing_migrations(rollout, db):
    assert rollout("apply", "notes").exit_code == 0
    assert rollout("advance", "notes").exit_code == 0 and rollout("advance", "notes").exit_code == 0
    assert flag(rollout) == "50%" and step(rollout, "notes")["stage"] == "50% (2/3)"

    undone = rollout("rollback", "notes", "--no-backup", "--actor", "carol")
    assert undone.exit_code == 0, undone.output
    assert "flag notes_write: 50% -> off (rollback of notes)" in undone.output
    assert flag(rollout) == "off" and step(rollout, "notes")["state"] == "pending"
    assert history(rollout)[-1] == ("50%", "off", "rollback of notes", "carol")
    # the rollback migration, run while the column still existed, already saw the flag off
    assert db.execute("SELECT enabled, percent FROM witness").fetchall() == [(False, 0)]

    events = db.execute("SELECT id, at, actor, kind, to_state, message FROM rollout.events "
                        "WHERE step_id = 'notes' AND run_id = (SELECT max(id) FROM rollout.runs) ORDER BY id").fetchall()
    kinds = [(kind, to_state) for _, _, _, kind, to_state, _ in events]
    assert kinds == [("flag.set", None), ("state", "rolling_back"), ("migration.rollback", None),
                     ("migration.rollback", None), ("state", "pending")]
    flag_event = events[0]
    assert flag_event[2] == "carol" and flag_event[5] == "flag notes_write: 50% -> off (rollback of notes)"
    changed_at = db.execute("SELECT max(at) FROM rollout.flag_history WHERE name = 'notes_write'").fetchone()[0]
    first_undo = events[2][1]
    assert flag_event[1] <= events[1][1] <= first_undo and changed_at <= first_undo

    # the report: the next apply starts the rollout again with the flag off, and says so
    assert rollout("apply", "notes").exit_code == 0
    again = step(rollout, "notes")
    assert again["stage"] == "not started (0/3)"
    assert (again["flag_value"], again["flag_expected"], again["flag_mismatch"]) == ("off", "off", None)


def test_rollback_of_an_aborted_step_writes_no_second_off(rollout):
    assert rollout("apply", "notes").exit_code == 0
    assert rollout("advance", "notes").exit_code == 0
    assert rollout("abort", "notes", "--reason", "latency up").exit_code == 0
    assert rollout("rollback", "notes").exit_code == 0
    assert [(old, new, reason) for old, new, reason, _ in history(rollout)] == [
        (None, "off", "plan default"), ("off", "10%", "rollout of notes: stage 1/3"), ("10%", "off", "latency up")]


def test_status_reports_a_flag_that_disagrees_with_its_step(rollout):
    assert rollout("apply", "notes").exit_code == 0
    assert rollout("flags", "set", "notes_write", "10").exit_code == 0
    assert step(rollout, "notes")["flag_mismatch"] == "flag notes_write at 10%, not started (0/3) expects off"

    assert rollout("advance", "notes").exit_code == 0  # stage 1/3: 10%, as the flag already is
    assert step(rollout, "notes")["flag_mismatch"] is None
    assert rollout("flags", "set", "notes_write", "50", "--reason", "by hand").exit_code == 0
    row = step(rollout, "notes")
    assert (row["flag_value"], row["flag_expected"]) == ("50%", "10%")
    assert row["flag_mismatch"] == "flag notes_write at 50%, stage 1/3 expects 10%"
    table = rollout("status")
    assert table.exit_code == 0 and "✗ flag notes_write at 50%, stage 1/3 expects 10%" in table.stdout

    assert rollout("abort", "notes").exit_code == 0
    assert step(rollout, "notes")["flag_mismatch"] is None
    assert rollout("flags", "set", "notes_write", "on").exit_code == 0
    assert step(rollout, "notes")["flag_mismatch"] == "flag notes_write is on, aborted expects off"

    assert rollout("rollback", "notes").exit_code == 0  # turns it off again
    assert step(rollout, "notes")["flag_mismatch"] is None
    assert rollout("flags", "set", "notes_write", "on").exit_code == 0
    assert step(rollout, "notes")["flag_mismatch"] == "flag notes_write is on, pending expects off"
    assert "✗ flag notes_write is on, pending expects off" in rollout("status").stdout

    assert rollout("flags", "set", "notes_write", "off").exit_code == 0
    assert rollout("apply", "notes").exit_code == 0
    for _ in range(4):  # three stages, then the finalize
        assert rollout("advance", "notes").exit_code == 0
    assert step(rollout, "notes")["state"] == "done" and step(rollout, "notes")["flag_mismatch"] is None
    assert rollout("flags", "set", "notes_write", "off").exit_code == 0
    assert step(rollout, "notes")["flag_mismatch"] == "flag notes_write is off, done expects on"


def test_a_flag_shared_with_a_done_step_stops_the_rollback(rollout, db):
    assert rollout("apply").exit_code == 0
    assert rollout("advance", "alpha").exit_code == 0 and flag(rollout, "shared_write") == "on"
    assert rollout("advance", "alpha").exit_code == 0 and step(rollout, "alpha")["state"] == "done"
    before = history(rollout, "shared_write")

    refused = rollout("rollback", "beta")
    assert refused.exit_code == 2
    assert "cannot roll back 'beta': its flag shared_write also switches alpha (done), which needs it on" in refused.output
    assert "Roll them back together with `rollout rollback beta --cascade`, or alpha first" in refused.output
    assert step(rollout, "beta")["state"] == "rolling_out" and flag(rollout, "shared_write") == "on"
    assert history(rollout, "shared_write") == before
    assert db.execute("SELECT to_regclass('beta') IS NOT NULL").fetchone()[0]

    # beta has not started its rollout: it does not need the flag on, so alpha may go first
    undone = rollout("rollback", "alpha")
    assert undone.exit_code == 0, undone.output
    assert flag(rollout, "shared_write") == "off"
    assert history(rollout, "shared_write")[-1] == ("on", "off", "rollback of alpha", "tester")
    assert rollout("rollback", "beta").exit_code == 0
    assert len(history(rollout, "shared_write")) == len(before) + 1  # already off: no second entry


def test_advance_never_moves_a_flag_set_by_hand(tmp_path, dsn, db):
    plan = write_plan(tmp_path, """\
version: 1
environments:
  local: {database: embedded}
flags:
  f: {description: a flag}
steps:
  - id: a
    title: A
    priority: high
    flag: f
    rollout: {stages: [10, 50, 100]}
    migrate: steps/a
""", {"steps/a/0001_a.sql": "SELECT 1;\n", "steps/a/0001_a.rollback.sql": "SELECT 1;\n"})
    rollout = Rollout(plan, dsn)
    assert rollout("apply").exit_code == 0 and rollout("advance", "a").exit_code == 0  # 10%
    assert rollout("flags", "set", "f", "on").exit_code == 0  # by hand, past the next stage (50%)
    refused = rollout("advance", "a")
    assert refused.exit_code == 1 and "flag f is on, past the rollout's next stage (50%)" in refused.output
    assert db.execute("SELECT percent FROM rollout.flags WHERE name = 'f'").fetchone() == (100,)  # not moved back
    assert rollout("flags", "set", "f", "10").exit_code == 0
    assert rollout("advance", "a").exit_code == 0
    assert db.execute("SELECT percent FROM rollout.flags WHERE name = 'f'").fetchone() == (50,)
