"""The dry run and lock-safe execution on a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess

from orchestrator import embedded

from .conftest import Rollout, write_plan


def snapshot(db) -> dict:
    """Everything a write would change: the catalog, tuple counters, rollout's and yoyo's rows."""
    db.execute("SELECT pg_stat_force_next_flush()")
    rows = lambda q: db.execute(q).fetchall()  # noqa: E731
    snap = {
        "class": rows("SELECT oid, relname, relfilenode, relkind FROM pg_class ORDER BY oid"),
        "constraint": rows("SELECT oid, conname, convalidated FROM pg_constraint ORDER BY oid"),
        "index": rows("SELECT indexrelid, indisvalid FROM pg_index ORDER BY 1"),
        "tuples": rows("SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_all_tables "
                       "WHERE schemaname NOT IN ('pg_catalog', 'pg_toast', 'information_schema') ORDER BY 1"),
    }
    if db.execute("SELECT to_regclass('rollout.events')").fetchone()[0]:
        snap["rollout"] = rows("SELECT (SELECT count(*) FROM rollout.events), (SELECT count(*) FROM rollout.runs), "
                               "(SELECT string_agg(step_id || state, ',' ORDER BY step_id) FROM rollout.steps)")
    return snap


def test_a_dry_run_writes_nothing(rollout, db):
    assert rollout("db", "seed", "--rows", "2000").exit_code == 0
    assert rollout("apply", "composite_indexes").exit_code == 0
    before = snapshot(db)
    result = rollout("plan", "--json")
    assert result.exit_code == 0, result.output
    preview = json.loads(result.stdout)
    assert preview["wrote_nothing"] is True
    assert snapshot(db) == before
    text = rollout("plan")
    assert "wrote nothing (no transaction id was assigned)" in text.output
    assert snapshot(db) == before


def test_a_dry_run_on_an_empty_database_does_not_bootstrap(rollout, db):
    result = rollout("plan", "--json")
    preview = json.loads(result.stdout)
    assert preview["bootstrap"] == "steps/baseline/schema.sql" and preview["wrote_nothing"]
    assert db.execute("SELECT to_regnamespace('rollout'), to_regclass('servers')").fetchone() == (None, None)


def test_the_preview_states_each_statement_lock_and_risk(rollout, db):
    assert rollout("db", "seed", "--rows", "2000").exit_code == 0
    preview = json.loads(rollout("plan", "--json").stdout)
    steps = {s["id"]: s for s in preview["steps"]}
    index = steps["composite_indexes"]["statements"][1]
    assert index["kind"] == "CREATE INDEX CONCURRENTLY" and index["lock"] == "SHARE UPDATE EXCLUSIVE"
    assert index["table"] == "public.detection_events" and index["transactional"] is False and index["scans"] is True
    assert index["blocks"] == "DDL and VACUUM (reads and writes go on)"
    assert index["table_size"]["rows"] > 1000 and "new index" in index["estimate"]
    assert index["file"] == "steps/composite_indexes/migrate/composite_indexes_02_detection_events.sql"
    add, validate = steps["confidence_range"]["statements"]
    assert (add["lock"], add["scans"], add["exempt_from_statement_timeout"]) == ("ACCESS EXCLUSIVE", False, False)
    assert (validate["lock"], validate["scans"], validate["exempt_from_statement_timeout"]) == (
        "SHARE UPDATE EXCLUSIVE", True, True)
    precondition = steps["confidence_range"]["preconditions"][0]
    assert precondition["found"] > 0 and precondition["deferred"] == "runs after remediate_confidence"
    assert preview["blocking"] is False
    assert steps["remediate_confidence"]["description"].startswith("Detection confidence is")


BAD = """\
version: 1
environments:
  local: {{database: embedded}}
steps:
  - id: change
    title: a risky change
    priority: high
    migrate: steps/change
{extra}
"""


def risky(tmp_path, dsn, sql: str, extra: str = "", rollback: str = "SELECT 1;\n") -> Rollout:
    files = {"steps/change/change_01.sql": sql, "steps/change/change_01.rollback.sql": rollback}
    return Rollout(write_plan(tmp_path, BAD.format(extra=extra), files), dsn)


def big_table(db, rows: int = 120_000) -> None:
    db.execute("CREATE TABLE big (id bigint PRIMARY KEY, v int, note text)")
    db.execute("INSERT INTO big SELECT g, g, 'row ' || g FROM generate_series(1, %s) AS g", (rows,))
    db.execute("ANALYZE big")


def test_a_blocking_finding_stops_plan_and_apply_until_allowed(tmp_path, dsn, db):
    big_table(db, 1000)
    change = risky(tmp_path, dsn, "CREATE INDEX big_v ON big (v);\n", rollback="DROP INDEX big_v;\n")
    planned = change("plan")
    assert planned.exit_code == 1
    assert "error require-concurrent-index-creation (steps/change/change_01.sql:1)" in planned.output
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS big_v ON big (v)" in planned.output  # from the user's statement
    # the rollback file is linted too: its DROP INDEX would block reads while it waits
    assert "error require-concurrent-index-deletion (steps/change/change_01.rollback.sql:1)" in planned.output
    refused = change("apply")
    assert refused.exit_code == 1 and "was not started: 2 blocking finding(s)" in refused.output
    assert db.execute("SELECT to_regclass('big_v')").fetchone()[0] is None

    allowed = risky(tmp_path, dsn, "CREATE INDEX big_v ON big (v);\n", rollback="DROP INDEX big_v;\n",
                    extra="    allow:\n      - rule: require-concurrent-index-creation\n"
                          "        reason: big is written once a day, at night\n"
                          "      - rule: require-concurrent-index-deletion\n        direction: rollback\n"
                          "        reason: the same night window\n")
    shown = allowed("plan")
    assert shown.exit_code == 0 and "allowed require-concurrent-index-creation" in shown.output
    assert "accepted: big is written once a day, at night" in shown.output
    assert allowed("apply").exit_code == 0
    assert db.execute("SELECT to_regclass('big_v')").fetchone()[0] is not None


def test_a_failing_precondition_blocks_the_preview(tmp_path, dsn, db):
    change = risky(tmp_path, dsn, "SELECT 1;\n", extra="    preconditions:\n      - name: never\n"
                                                      "        sql: SELECT 'always fails' AS why\n")
    result = change("plan")
    assert result.exit_code == 1 and "✗ precondition never: found 1 row (first 1: why='always fails')" in result.output


def test_long_locks_on_large_tables_are_errors_with_estimates(tmp_path, dsn, db):
    big_table(db)
    change = risky(tmp_path, dsn, "ALTER TABLE big ALTER COLUMN v TYPE bigint;\n")
    preview = json.loads(change("plan", "--json").stdout)
    findings = {f["rule"]: f for f in preview["steps"][0]["findings"]}
    assert findings["changing-column-type"]["blocking"]
    assert "ADD COLUMN v_new bigint" in findings["changing-column-type"]["alternative"]
    long_lock = findings["long-lock-on-large-table"]
    assert long_lock["blocking"] and "~120,000 rows" in long_lock["message"] and "rewrites" in long_lock["message"]
    statement = preview["steps"][0]["statements"][0]
    assert statement["rewrites"] and statement["breaks_old_readers"] and not statement["loses_data"]
    assert statement["estimate"].startswith("rewrite of ~120,000 rows")

    brief = risky(tmp_path, dsn, "ALTER TABLE big ADD COLUMN flag boolean;\n",
                  rollback="ALTER TABLE big DROP COLUMN flag;\n")
    preview = json.loads(brief("plan", "--json").stdout)
    findings = preview["steps"][0]["findings"]
    assert [f["rule"] for f in findings if f["direction"] == "apply"] == ["access-exclusive-on-large-table"]
    assert {f["rule"] for f in findings if f["direction"] == "rollback"} == {"ban-drop-column",
                                                                             "access-exclusive-on-large-table"}
    assert preview["blocking"] is False


def test_an_unbatched_update_of_a_large_table_is_an_error(tmp_path, dsn, db):
    big_table(db)
    preview = json.loads(risky(tmp_path, dsn, "UPDATE big SET note = upper(note);\n")("plan", "--json").stdout)
    finding = next(f for f in preview["steps"][0]["findings"] if f["rule"] == "unbatched-update-on-large-table")
    assert finding["blocking"] and "~120,000 rows" in finding["message"]
    assert "backfills:\n  - name: big_batched\n    table: big\n    set:\n      note: 'upper(note)'" in finding["alternative"]
    # PostgreSQL's estimate judges it, not the shape of the WHERE
    bounded = risky(tmp_path, dsn, "UPDATE big SET note = upper(note) WHERE id > 0;\n")("plan", "--json")
    assert "unbatched-update-on-large-table" in [f["rule"] for f in json.loads(bounded.stdout)["steps"][0]["findings"]]
    narrow = risky(tmp_path, dsn, "UPDATE big SET note = upper(note) WHERE id < 100;\n")("plan", "--json")
    assert "unbatched-update-on-large-table" not in [f["rule"] for f in json.loads(narrow.stdout)["steps"][0]["findings"]]


def test_dependent_objects_at_risk(rollout, db, tmp_path):
    assert rollout("apply", "composite_indexes").exit_code == 0  # bootstraps the bot's schema
    dsn = rollout.dsn
    rename = "ALTER TABLE detection_events RENAME COLUMN detection_type TO kind;\n"
    at_risk = json.loads(risky(tmp_path, dsn, rename)("plan", "--json").stdout)["steps"][0]
    risk = next(f for f in at_risk["findings"] if f["rule"] == "dependents-at-risk")
    assert risk["blocking"] and "function public.get_recent_message_count(text, text, integer)" in risk["message"]
    assert "line 8: detection_type" in risk["message"]

    fixed = rename + ("CREATE OR REPLACE FUNCTION get_recent_message_count(p_user_id text, p_server_id text, "
                      "p_timeframe_seconds integer) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;\n")
    handled = json.loads(risky(tmp_path, dsn, fixed)("plan", "--json").stdout)["steps"][0]
    assert "dependents-at-risk" not in [f["rule"] for f in handled["findings"]]

    retype = "ALTER TABLE detection_events ALTER COLUMN detection_type TYPE varchar(64);\n"
    maybe = json.loads(risky(tmp_path, dsn, retype)("plan", "--json").stdout)["steps"][0]
    risk = next(f for f in maybe["findings"] if f["rule"] == "dependents-at-risk")
    assert risk["level"] == "warning" and "may break" in risk["message"]


def test_enum_values_used_in_their_own_transaction_are_an_error(tmp_path, dsn, db):
    db.execute("CREATE TYPE mood AS ENUM ('ok')")
    db.execute("CREATE TABLE feelings (id int PRIMARY KEY, m mood)")
    change = risky(tmp_path, dsn, "ALTER TYPE mood ADD VALUE 'great';\nINSERT INTO feelings VALUES (1, 'great');\n")
    planned = change("plan")
    assert planned.exit_code == 1 and "enum-value-used-in-transaction" in planned.output
    assert "in a migration of its own, before the one that uses the value" in planned.output


def test_validate_runs_without_statement_timeout_and_others_keep_it(tmp_path, dsn, db):
    db.execute("CREATE FUNCTION slow_ok(int) RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(0.002) IS NOT NULL'")
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT g, g FROM generate_series(1, 150) AS g")
    timeouts = "timeouts:\n  statement: 100ms\nsteps:\n"
    plan = BAD.replace("steps:\n", timeouts).format(extra="")
    files = {
        "steps/change/change_01.sql": "ALTER TABLE t ADD CONSTRAINT t_slow CHECK (slow_ok(v)) NOT VALID;\n",
        "steps/change/change_01.rollback.sql": "ALTER TABLE t DROP CONSTRAINT t_slow;\n",
        "steps/change/change_02.sql": "ALTER TABLE t VALIDATE CONSTRAINT t_slow;\n",  # ~300 ms: exempt
        "steps/change/change_02.rollback.sql": "SELECT 1;\n",
    }
    rollout = Rollout(write_plan(tmp_path, plan, files), dsn)
    assert rollout("apply").exit_code == 0
    assert db.execute("SELECT convalidated FROM pg_constraint WHERE conname = 't_slow'").fetchone()[0] is True
    assert rollout("rollback", "change").exit_code == 0
    slow = {**files, "steps/change/change_02.sql": "UPDATE t SET v = v WHERE slow_ok(v);\n"}  # not exempt
    failed = Rollout(write_plan(tmp_path, plan, slow), dsn)("apply")
    assert failed.exit_code == 1 and "canceling statement due to statement timeout" in failed.output


def test_destructive_statements_are_backed_up_first(tmp_path, dsn, db):
    big_table(db, 500)
    drop = risky(tmp_path, dsn, "ALTER TABLE big DROP COLUMN note;\n", rollback="ALTER TABLE big ADD COLUMN note text;\n",
                 extra="    allow:\n      - rule: ban-drop-column\n        reason: note is unused since v2\n")
    preview = json.loads(drop("plan", "--json").stdout)
    assert preview["steps"][0]["statements"][0]["backup_before"] is True
    result = drop("apply")
    assert result.exit_code == 0, result.output
    folder = tmp_path / ".rollout" / "backups" / "local"
    dumps = list(folder.glob("*.dump"))
    assert len(dumps) == 1 and "backed up big to .rollout/backups/local/" in result.output
    listing = subprocess.run([embedded.binary("pg_restore"), "--list", str(dumps[0])], capture_output=True, text=True)
    assert "TABLE DATA public big" in listing.stdout
    restored = subprocess.run([embedded.binary("pg_restore"), "--data-only", "--file", "-", str(dumps[0])],
                              capture_output=True, text=True).stdout
    assert "row 500" in restored  # the dropped column's values are in the dump

    assert drop("rollback", "change", "--no-backup").exit_code == 0
    assert len(list(folder.glob("*.dump"))) == 1


def test_a_plan_with_a_bad_statement_is_reported_not_crashed(tmp_path, dsn):
    result = risky(tmp_path, dsn, "ALTER TABLE WHERE;\n")("plan", "--json")
    statement = json.loads(result.stdout)["steps"][0]["statements"][0]
    assert statement["kind"] == "unparsed" and "cannot parse" in statement["notes"][0]



def test_type_changes_postgresql_makes_without_a_rewrite_are_not_findings(tmp_path, dsn, db):
    db.execute("CREATE TABLE posts (id bigint PRIMARY KEY, title varchar(255), price numeric(8, 2), at timestamp)")
    db.execute("INSERT INTO posts SELECT g, 'post ' || g, g, now() FROM generate_series(1, 1000) AS g")
    for change in ("title TYPE text", "title TYPE varchar(300)", "price TYPE numeric(12, 2)"):
        preview = json.loads(risky(tmp_path, dsn, f"ALTER TABLE posts ALTER COLUMN {change};\n")("plan", "--json").stdout)
        statement, findings = preview["steps"][0]["statements"][0], preview["steps"][0]["findings"]
        assert not statement["rewrites"] and "changing-column-type" not in [f["rule"] for f in findings], change
        # and PostgreSQL agrees: the table keeps its file
        with db.transaction(force_rollback=True):
            before = db.execute("SELECT relfilenode FROM pg_class WHERE relname = 'posts'").fetchone()
            db.execute(f"ALTER TABLE posts ALTER COLUMN {change}")
            assert db.execute("SELECT relfilenode FROM pg_class WHERE relname = 'posts'").fetchone() == before
    narrowing = risky(tmp_path, dsn, "ALTER TABLE posts ALTER COLUMN title TYPE varchar(20);\n")("plan", "--json")
    findings = json.loads(narrowing.stdout)["steps"][0]["findings"]
    assert "changing-column-type" in [f["rule"] for f in findings]


def test_a_rollback_is_previewed_with_its_locks_backups_and_findings(tmp_path, dsn, db):
    big_table(db, 1000)
    change = risky(tmp_path, dsn, "ALTER TABLE big ADD COLUMN flag boolean;\n",
                   rollback="UPDATE big SET note = NULL;\nALTER TABLE big DROP COLUMN flag;\n",
                   extra="    allow:\n      - rule: ban-drop-column\n        reason: the column is new\n")
    nothing = json.loads(change("plan", "--rollback", "change", "--json").stdout)
    assert nothing["direction"] == "rollback" and nothing["steps"][0]["statements"] == []
    assert change("apply").exit_code == 0
    shown = change("plan", "--rollback", "change")
    assert "[migrate, rollback] steps/change/change_01.rollback.sql:2" in shown.output
    assert "ACCESS EXCLUSIVE on public.big" in shown.output and "backup: pg_dump of public.big" in shown.output
    preview = json.loads(change("plan", "--rollback", "change", "--json").stdout)
    update, drop = preview["steps"][0]["statements"]
    assert update["unbounded"] and update["direction"] == "rollback" and drop["loses_data"]
    assert preview["wrote_nothing"]
    assert change("plan", "--rollback").exit_code == 2
