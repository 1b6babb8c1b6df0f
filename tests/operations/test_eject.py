"""`rollout eject`: operations become files the plan names, and a database where the step is
half applied carries on as if nothing happened."""

from __future__ import annotations

import json

from orchestrator.plan_loader import load_plan

from ..conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
flags:
  feed_v2: {description: the new feed}
steps:
  # the feed's indexes and a rule
  - id: feed
    title: feed
    priority: high
    flag: feed_v2
    operations:
      - op: create_index   # the feed reads by date
        name: posts_created
        table: posts
        columns: [created_at]
      - op: add_constraint
        table: posts
        name: title_set
        not_null: title
      - op: drop_index
        name: posts_old
        table: posts
        columns: [title]
"""
SETUP = """
CREATE TABLE posts (id bigint PRIMARY KEY, title text, created_at timestamptz DEFAULT now());
CREATE INDEX posts_old ON posts (title);
INSERT INTO posts (id, title) SELECT g, 'p' || g FROM generate_series(1, 100) AS g;
"""


def test_eject_keeps_applied_migrations_applied(tmp_path, dsn, db):
    db.execute(SETUP)
    path = write_plan(tmp_path, PLAN)
    rollout = Rollout(path, dsn)
    assert rollout("apply").exit_code == 0  # expand done; the contract waits for the flag
    ejected = rollout("eject", "feed")
    assert ejected.exit_code == 0, ejected.output
    text = path.read_text()
    assert "operations" not in text and "migrate: steps/feed/migrate" in text and "finalize: steps/feed/finalize" in text
    assert "# the feed's indexes and a rule" in text  # the plan's comments stay
    assert "title_has_no_nulls" in text  # the precondition the operation implied is written out
    files = sorted(p.name for p in (tmp_path / "steps" / "feed" / "finalize").iterdir())
    assert files == ["feed__op03_01_drop_index.rollback.sql", "feed__op03_01_drop_index.sql"]
    assert "DROP INDEX CONCURRENTLY IF EXISTS" in (tmp_path / "steps/feed/finalize/feed__op03_01_drop_index.sql").read_text()
    step = json.loads(rollout("status", "--json").output)["steps"][0]
    assert (step["migrations_applied"], step["migrations_total"]) == (4, 5)  # the files kept their ids
    assert rollout("advance", "feed").exit_code == 0
    finished = rollout("apply")
    assert finished.exit_code == 0, finished.output
    assert db.execute("SELECT to_regclass('posts_old')").fetchone() == (None,)
    assert rollout("eject", "feed").exit_code == 2  # nothing left to eject


def test_eject_refuses_to_overwrite(tmp_path, dsn, db):
    path = write_plan(tmp_path, PLAN, {"steps/feed/migrate/feed__op01_01_index.sql": "SELECT 1;\n"})
    before = path.read_text()
    result = Rollout(path, dsn)("eject", "feed")
    assert result.exit_code == 2 and "never overwrites" in result.output
    assert path.read_text() == before


def test_a_step_of_contract_operations_alone_ejects_to_a_finalize_folder(tmp_path, dsn, db):
    plan = PLAN.replace("""    operations:
      - op: create_index   # the feed reads by date
        name: posts_created
        table: posts
        columns: [created_at]
      - op: add_constraint
        table: posts
        name: title_set
        not_null: title
""", "    operations:\n")
    path = write_plan(tmp_path, plan)
    ejected = Rollout(path, dsn)("eject", "feed")
    assert ejected.exit_code == 0, ejected.output
    text = path.read_text()
    assert "finalize: steps/feed/finalize" in text and "migrate:" not in text
    assert Rollout(path, dsn)("check").exit_code == 0


def test_a_conversion_with_indexes_ejects_its_rollback_only_migrations(tmp_path, dsn, db):
    db.execute("CREATE TABLE tickets (id bigint PRIMARY KEY, status text NOT NULL);"
               "CREATE INDEX tickets_status ON tickets (status);"
               "INSERT INTO tickets SELECT g, CASE WHEN g % 2 = 0 THEN 'open' ELSE 'Closed ' END "
               "FROM generate_series(1, 50) AS g")
    plan = """\
version: 1
environments:
  local: {database: embedded}
steps:
  - id: statuses
    title: statuses
    priority: high
    operations:
      - op: create_enum
        name: ticket_status
        values: [open, closed]
      - op: convert_to_enum
        table: tickets
        column: status
        type: ticket_status
        mapping: {}
        fold: true
        not_null: true
        indexes:
          - {name: tickets_status, columns: [status]}
"""
    path = write_plan(tmp_path, plan)
    rollout = Rollout(path, dsn)
    assert rollout("apply").exit_code == 0  # expand and backfill
    ejected = rollout("eject", "statuses")
    assert ejected.exit_code == 0, ejected.output
    assert rollout("check").exit_code == 0
    finished = rollout("apply")
    assert finished.exit_code == 0, finished.output
    assert db.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                      "WHERE attrelid = 'tickets'::regclass AND attname = 'status'").fetchone() == ("ticket_status",)


def test_an_ejected_drop_column_still_restores_its_values_in_batches(tmp_path, dsn, db):
    db.execute(SETUP)
    before = db.execute("SELECT id, title FROM posts ORDER BY id").fetchall()
    plan = PLAN.split("    operations:")[0] + ("    operations:\n"
                                                "      - {op: drop_column, table: posts, column: title, type: text}\n")
    path = write_plan(tmp_path, plan)
    rollout = Rollout(path, dsn)
    for command in (("apply",), ("advance", "feed"), ("apply",)):
        assert rollout(*command).exit_code == 0
    ejected = rollout("eject", "feed")
    assert ejected.exit_code == 0, ejected.output
    assert "restores: feed__op01_01_drop_column" in path.read_text()  # the restore job, written out with its file
    undone = rollout("rollback", "feed", "--no-backup")
    assert undone.exit_code == 0, undone.output
    assert db.execute("SELECT id, title FROM posts ORDER BY id").fetchall() == before
    assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'backfill.done' "
                      "AND message LIKE 'backfill restore_rollout_dropped_posts_title done%'").fetchone() == (1,)


def test_eject_writes_the_gates_of_a_step_without_rollout(tmp_path, dsn, db):
    """A flagged step without `rollout:` keeps its operations' gates when ejected: they become
    the step's rollout checks, and its stages stay the plan's."""
    db.execute("CREATE TABLE authors (id bigint PRIMARY KEY, name text)")
    plan = PLAN.split("steps:")[0] + "rollout: {stages: [50, 100]}\nsteps:\n" + """\
  - id: marks
    title: marks
    priority: high
    flag: feed_v2
    operations:
      - {op: soft_delete, tables: [authors]}
"""
    path = write_plan(tmp_path, plan)
    ejected = Rollout(path, dsn)("eject", "marks")
    assert ejected.exit_code == 0, ejected.output
    ejected_plan = load_plan(str(path))
    stages = ejected_plan.stages(ejected_plan.step("marks"))
    assert stages.stages == (50, 100) and [c.name for c in stages.checks] == ["authors_deletions_name_who"]


def test_eject_leaves_the_rest_of_the_plan_as_it_was_written(tmp_path, dsn, db):
    """Only the ejected step's lines change: a comment after its operations, the next step's
    multi-line flow mapping and the comments between steps stay as written."""
    db.execute(SETUP)
    rest = """\
      # more indexes may come here

  # the next step, written compactly
  - {id: later, title: later, priority: low, depends_on: [feed],
     operations: [{op: create_index, name: posts_title, table: posts,
                   columns: [title]}]}
"""
    path = write_plan(tmp_path, PLAN + rest)
    ejected = Rollout(path, dsn)("eject", "feed")
    assert ejected.exit_code == 0, ejected.output
    text = path.read_text()
    assert text.startswith(PLAN[:PLAN.index("  - id: feed")]) and text.endswith(rest), text
    assert load_plan(str(path)).step("later").operations
