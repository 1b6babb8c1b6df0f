"""Values an operation kept are put back on rollback through the backfill engine: in key-range
batches, each committed with its checkpoint, so a rollback that stops halfway continues where it
was, and no statement holds the table's rows for the whole restore."""

from __future__ import annotations

import json

import yaml

from ..conftest import Rollout, write_plan
from .harness import Case, plan_for

ROWS = 30_000
POSTS = f"""
CREATE TABLE posts (id bigint PRIMARY KEY, score real, title text);
INSERT INTO posts SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE g / 7.0 END, 't' || g FROM generate_series(1, {ROWS}) AS g;
"""
SNAPSHOT = "SELECT id, score::text, title FROM posts ORDER BY id"


def _events(db, kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    return db.execute("SELECT kind, message FROM rollout.events WHERE step_id = 'change' AND kind = ANY (%s) "
                      "ORDER BY id", (list(kinds),)).fetchall()


def _contracted(case: Case, tmp_path, dsn, db, snapshot: str = SNAPSHOT) -> tuple[Rollout, list]:
    """The case's tables, their rows as they were, and the step applied through its contract."""
    db.execute(case.setup)
    before = db.execute(snapshot).fetchall()
    rollout = Rollout(write_plan(tmp_path, plan_for(case)), dsn)
    for command in (("apply",), ("advance", "change"), ("apply",)):
        result = rollout(*command)
        assert result.exit_code == 0, result.output
    return rollout, before


def test_a_dropped_column_comes_back_in_batches_before_the_flag_goes_off(tmp_path, dsn, db):
    case = Case("drop a column of a large table", POSTS,
                [{"op": "drop_column", "table": "posts", "column": "score", "type": "real"}])
    rollout, before = _contracted(case, tmp_path, dsn, db)
    assert db.execute("SELECT count(*) FROM _rollout_dropped_posts_score").fetchone() == (ROWS - ROWS // 5,)

    preview = json.loads(rollout("plan", "--rollback", "change", "--json").stdout)["steps"][0]
    assert [b["name"] for b in preview["backfills"]] == ["restore_rollout_dropped_posts_score"]
    assert "stays on while the contract is undone" in preview["note"]

    undone = rollout("rollback", "change", "--no-backup")
    assert undone.exit_code == 0, undone.output
    assert db.execute(SNAPSHOT).fetchall() == before
    assert db.execute("SELECT to_regclass('_rollout_dropped_posts_score')").fetchone() == (None,)
    assert db.execute("SELECT count(*) FROM rollout.backfills WHERE step_id = 'change'").fetchone() == (0,)
    # the values are back (the restore is done) before the application is sent to the old shape
    order = [kind for kind, _ in _events(db, ("backfill.start", "backfill.done", "flag.set", "migration.rollback"))]
    restore_done = order.index("backfill.done")
    assert order.index("backfill.start") < restore_done < len(order) - 1 - order[::-1].index("flag.set")
    done = [m for k, m in _events(db, ("backfill.done",)) if "restore_rollout_dropped_posts_score" in m]
    assert done and f"{ROWS - ROWS // 5} rows changed" in done[-1], done


def test_a_restore_stopped_halfway_continues_from_its_checkpoint(tmp_path, dsn, db):
    setup = f"""
    CREATE TABLE members (guild text, member int, score real, PRIMARY KEY (guild, member));
    INSERT INTO members SELECT 'g' || (g % 3), g, g FROM generate_series(1, {ROWS}) AS g;
    """
    case = Case("clamp every row", setup, [{
        "op": "add_constraint", "table": "members", "name": "score_range", "check": "score <= 1",
        "remediation": {"key": ["guild", "member"], "set": {"score": "1"}}}])
    rollout, _ = _contracted(case, tmp_path, dsn, db, "SELECT 1")
    assert db.execute("SELECT count(*) FROM members WHERE score = 1").fetchone() == (ROWS,)
    # a row the restore cannot write, late in the originals' key order: the batches before it commit
    db.execute("""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'row % refused', NEW.member; END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON members FOR EACH ROW WHEN (NEW.guild = 'g2' AND NEW.member = 29999)
            EXECUTE FUNCTION refuse();
    """)
    stopped = rollout("rollback", "change", "--no-backup")
    assert stopped.exit_code != 0 and "restore_rollout_originals_score_range" in stopped.output, stopped.output
    covered = db.execute("SELECT rows_covered FROM rollout.backfills WHERE name = 'restore_rollout_originals_score_range'"
                         ).fetchone()[0]
    assert 0 < covered < ROWS, (stopped.output, db.execute("SELECT name, state, error, cursor FROM rollout.backfills").fetchall())
    assert db.execute("SELECT state FROM rollout.steps WHERE step_id = 'change'").fetchone() == ("rolling_back",)
    assert db.execute("SELECT to_regclass('_rollout_originals_score_range')").fetchone() != (None,)

    db.execute("DROP TRIGGER refuse ON members; DROP FUNCTION refuse()")
    resumed = rollout("rollback", "change", "--no-backup")
    assert resumed.exit_code == 0, resumed.output
    assert any(f"from checkpoint after {covered} rows" in m for _, m in _events(db, ("backfill.resume",)))
    assert db.execute("SELECT count(*) FROM members WHERE score <> member").fetchone() == (0,)
    assert db.execute("SELECT to_regclass('_rollout_originals_score_range')").fetchone() == (None,)


def test_a_restore_names_a_migration_of_its_step(tmp_path):
    from orchestrator.errors import PlanError
    from orchestrator.plan_loader import load_plan
    case = Case("hand-written restore", "", [{"op": "create_index", "name": "i", "table": "t", "columns": ["a"]}])
    plan = yaml.safe_load(plan_for(case))
    plan["steps"][0]["backfills"] = [{"name": "back", "table": "t", "set": {"a": "1"},
                                      "restores": "change__op01_01_nope"}]
    path = write_plan(tmp_path, yaml.safe_dump(plan))
    try:
        load_plan(str(path))
    except PlanError as exc:
        assert "no migration 'change__op01_01_nope' in step 'change'" in str(exc), str(exc)
        assert "did you mean 'change__op01_01_index'" in str(exc), str(exc)
    else:
        raise AssertionError("a restore naming no migration of its step must be refused")


def test_a_type_change_rolled_back_after_its_contract_keeps_the_application_working(tmp_path, dsn, db):
    """The old column is rebuilt under a hidden name, in batches, while the application (its flag
    still on) writes the new one: a write behind the restore's cursor, one ahead of it and an
    insert all reach the old column, across a rollback stopped halfway and run again."""
    setup = f"""
    CREATE TABLE posts (id bigint PRIMARY KEY, amount text);
    INSERT INTO posts SELECT g, CASE WHEN g % 9 = 0 THEN NULL ELSE (g * 3)::text END
    FROM generate_series(1, {ROWS}) AS g;
    """
    case = Case("amount becomes an integer", setup, [{"op": "alter_column", "table": "posts", "column": "amount",
                                                      "type": "integer", "from_type": "text"}])
    snapshot = "SELECT id, amount FROM posts ORDER BY id"
    rollout, before = _contracted(case, tmp_path, dsn, db, snapshot)
    assert db.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'posts'::regclass "
                      "AND attname = 'amount'").fetchone() == ("integer",)
    [job] = json.loads(rollout("plan", "--rollback", "change", "--json").stdout)["steps"][0]["backfills"]
    assert job["name"] == "restore_posts_amount" and "ADD COLUMN IF NOT EXISTS" in job["prepare"], job
    db.execute("""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = 29990 AND to_jsonb(NEW) ->> '_rollout_old_amount' IS NOT NULL THEN
                RAISE EXCEPTION 'row % refused', NEW.id;
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON posts FOR EACH ROW EXECUTE FUNCTION refuse();
    """)
    stopped = rollout("rollback", "change", "--no-backup")
    assert stopped.exit_code != 0 and "restore_posts_amount" in stopped.output, stopped.output
    covered = db.execute("SELECT rows_covered FROM rollout.backfills WHERE name = 'restore_posts_amount'").fetchone()[0]
    assert 0 < covered < ROWS
    # the contract is still in place and the flag still on: the application writes the new shape
    assert db.execute("SELECT enabled, percent FROM rollout.flags WHERE name = 'change_on'").fetchone() == (True, 100)
    db.execute("UPDATE posts SET amount = 7 WHERE id = 1")  # behind the cursor
    db.execute("UPDATE posts SET amount = 9 WHERE id = 29995")  # ahead of it
    db.execute("INSERT INTO posts VALUES (40001, 5)")

    db.execute("DROP TRIGGER refuse ON posts; DROP FUNCTION refuse()")
    resumed = rollout("rollback", "change", "--no-backup")
    assert resumed.exit_code == 0, resumed.output
    expected = {**dict(before), 1: "7", 29995: "9", 40001: "5"}
    assert dict(db.execute(snapshot).fetchall()) == expected
    assert db.execute("SELECT array_agg(attname ORDER BY attname) FROM pg_attribute WHERE attrelid = 'posts'::regclass "
                      "AND attnum > 0 AND NOT attisdropped").fetchone() == (["amount", "id"],)
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'posts'::regclass").fetchone() == (0,)


def test_restores_work_on_a_table_in_another_schema(tmp_path, dsn, db):
    """Generated names (the rebuilt column's trigger, the kept table and its index) live in the
    table's schema."""
    setup = """
    CREATE SCHEMA app;
    CREATE TABLE app.posts (id bigint PRIMARY KEY, amount text, score real, title text);
    INSERT INTO app.posts SELECT g, (g * 3)::text, g / 7.0, 't' || g FROM generate_series(1, 3000) AS g;
    """
    case = Case("three changes in schema app", setup, [
        {"op": "alter_column", "table": "app.posts", "column": "amount", "type": "integer", "from_type": "text"},
        {"op": "drop_column", "table": "app.posts", "column": "score", "type": "real"},
        {"op": "rename_column", "table": "app.posts", "column": "title", "to": "headline", "type": "text"}])
    snapshot = "SELECT id, amount, score, title FROM app.posts ORDER BY id"
    rollout, before = _contracted(case, tmp_path, dsn, db, snapshot)
    undone = rollout("rollback", "change", "--no-backup")
    assert undone.exit_code == 0, undone.output
    assert db.execute(snapshot).fetchall() == before
    assert db.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '\\_rollout%'").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_rollout%'").fetchone() == (0,)
