"""The default plan end to end on the bot's database with realistic, messy data: preview,
apply every step through every flag stage to finalize, check the final schema, then roll
everything back and find every original row unchanged."""

from __future__ import annotations

import json

import psycopg

from .conftest import Rollout

BASELINE_TABLES = ("servers", "users", "server_members", "detection_events", "verification_events", "admin_actions")


def checksums(db) -> dict[str, str]:
    """Each baseline table's rows, as JSON of the baseline's columns only (order does not
    matter; columns a step adds are left out), hashed."""
    sums = {}
    for table in BASELINE_TABLES:
        sums[table] = db.execute(
            f"""
            SELECT count(*)::text || ':' || coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '')
            FROM (SELECT (SELECT jsonb_object_agg(key, value) FROM jsonb_each(to_jsonb(t))
                          WHERE key = ANY (%s)) AS r FROM {table} AS t) AS rows
            """, (BASELINE_COLUMNS[table],)).fetchone()[0]
    return sums


BASELINE_COLUMNS: dict[str, list[str]] = {}


def remember_baseline_columns(db) -> None:
    for table in BASELINE_TABLES:
        BASELINE_COLUMNS[table] = [r[0] for r in db.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (table,))]


def states(rollout: Rollout) -> dict[str, str]:
    return {s["id"]: s["state"] for s in json.loads(rollout("status", "--json").stdout)["steps"]}


def apply_to_the_end(rollout: Rollout) -> None:
    """What an operator (or cron) does: apply, advance every rollout, until all is done."""
    for _ in range(20):
        applied = rollout("apply")
        assert applied.exit_code == 0, applied.output
        if set(states(rollout).values()) == {"done"}:
            return
        advanced = rollout("advance", "--all")
        assert advanced.exit_code == 0, advanced.output
    raise AssertionError(f"the plan did not finish: {states(rollout)}")


def test_the_bot_plan_end_to_end(rollout, db):
    run_the_bot_plan(rollout, db)


def test_the_bot_plan_end_to_end_on_postgresql_15(bot_plan, new_database_15):
    """The bot's production version. Skipped, saying why, when the machine has no PostgreSQL 15."""
    dsn = new_database_15()
    with psycopg.connect(dsn, autocommit=True) as db:
        assert db.execute("SHOW server_version_num").fetchone()[0].startswith("15")
        run_the_bot_plan(Rollout(bot_plan, dsn), db)


def run_the_bot_plan(rollout: Rollout, db) -> None:
    assert rollout("db", "seed", "--rows", "4000").exit_code == 0
    remember_baseline_columns(db)
    original = checksums(db)

    preview = rollout("plan", "--json")
    assert preview.exit_code == 0, preview.output
    assert json.loads(preview.stdout)["wrote_nothing"]

    apply_to_the_end(rollout)
    column_type = lambda table, column: db.execute(  # noqa: E731
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
        (table, column)).fetchone()[0]
    assert column_type("detection_events", "detection_type") == "detection_type"
    assert column_type("verification_events", "status") == "verification_status"
    assert column_type("admin_actions", "action_type") == "admin_action_type"
    assert db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_verification_events_status'::regclass"
                      ).fetchone()[0] is True
    assert db.execute("SELECT enum_range(NULL::detection_type)::text").fetchone()[0] == (
        "{message_frequency,suspicious_content,gpt_analysis,new_account,pattern_match}")
    assert db.execute("SELECT count(*) FROM pg_constraint WHERE conname IN ('chk_confidence_range', "
                      "'chk_reputation_range', 'chk_global_reputation_range') AND convalidated").fetchone()[0] == 3
    indexes = dict(db.execute("SELECT c.relname, x.indisvalid FROM pg_index AS x JOIN pg_class AS c "
                              "ON c.oid = x.indexrelid WHERE c.relname LIKE 'idx_%_user_server_%'").fetchall())
    assert indexes == {"idx_detection_events_user_server_type": True,
                       "idx_verification_events_user_server_status": True,
                       "idx_verification_events_live_user_server_status": True}
    assert "detection_type" in db.execute("SELECT pg_get_indexdef('idx_detection_events_user_server_type'::regclass)"
                                          ).fetchone()[0]
    # get_recent_message_count works on the enum: the 'message' rows became 'message_frequency'
    user, server = db.execute("SELECT user_id, server_id FROM detection_events WHERE detection_type = "
                              "'message_frequency' AND user_id IS NOT NULL AND server_id IS NOT NULL "
                              "LIMIT 1").fetchone()
    assert db.execute("SELECT get_recent_message_count(%s, %s, 100000000)", (user, server)).fetchone()[0] >= 1
    assert db.execute("SELECT count(*) FROM _rollout_originals_detection_events_detection_type").fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM messages WHERE content_hash IS NULL OR metadata ? 'content'"
                      ).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM admin_actions WHERE created_by <> admin_id").fetchone()[0] == 0
    assert db.execute("SELECT is_nullable FROM information_schema.columns WHERE table_name = 'servers' "
                      "AND column_name = 'created_by'").fetchone()[0] == "NO"
    guild = db.execute("SELECT guild_id FROM servers LIMIT 1").fetchone()[0]
    with db.transaction():  # the bot changing a setting, as admin 42
        db.execute("SET LOCAL app.actor = '42'")
        db.execute("UPDATE servers SET settings = settings || '{\"message_threshold\": 9}' WHERE guild_id = %s",
                   (guild,))
    history = db.execute("SELECT changed_by, old_settings ->> 'message_threshold', new_settings ->> "
                         "'message_threshold' FROM server_config_history WHERE server_id = %s", (guild,)).fetchall()
    assert history == [("42", "5", "9")]
    audit = db.execute("SELECT action, changed_by, record_id FROM audit_logs WHERE table_name = 'servers'").fetchall()
    assert audit == [("UPDATE", "42", guild)]
    assert db.execute("SELECT updated_by FROM servers WHERE guild_id = %s", (guild,)).fetchone()[0] == "42"
    original = {**original, "servers": checksums(db)["servers"]}  # the change above is the application's
    db.execute("UPDATE admin_actions SET deleted_at = now(), deleted_by = '42' WHERE id = "
               "(SELECT id FROM admin_actions LIMIT 1)")
    assert db.execute("SELECT (SELECT count(*) FROM admin_actions) - (SELECT count(*) FROM active_admin_actions)"
                      ).fetchone()[0] == 1
    db.execute("UPDATE admin_actions SET deleted_at = NULL, deleted_by = NULL")  # undelete: one UPDATE
    verified = rollout("verify")
    assert verified.exit_code == 0, verified.output

    for step in reversed(list(states(rollout))):
        undone = rollout("rollback", step, "--cascade")
        assert undone.exit_code == 0, undone.output
    assert set(states(rollout).values()) == {"pending"}
    assert checksums(db) == original
    assert db.execute("SELECT to_regtype('detection_type'), "
                      "to_regclass('_rollout_originals_detection_events_detection_type')").fetchone() == (None, None)
