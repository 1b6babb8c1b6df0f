"""The embedded environment end to end: the commands a newcomer runs, with no DSN anywhere."""

from __future__ import annotations

import pytest

import json

from orchestrator import embedded

from .conftest import Rollout, write_plan


def test_db_commands_and_apply_on_the_embedded_server(bot_plan):
    rollout = Rollout(bot_plan, None)
    home = str(bot_plan.parent)
    try:
        started = rollout("db", "start")
        assert started.exit_code == 0, started.output
        assert embedded.running(home) is not None
        url = rollout("db", "url").stdout.strip()
        assert url.startswith("postgresql://postgres@/local?host=")
        assert rollout("db", "status").exit_code == 0

        seeded = rollout("db", "seed", "--rows", "2000")
        assert seeded.exit_code == 0, seeded.output
        assert "applied bootstrap steps/baseline/schema.sql" in seeded.output

        applied = rollout("apply")
        assert applied.exit_code == 0, applied.output
        steps = json.loads(rollout("status", "--json").stdout)["steps"]
        assert {s["state"] for s in steps if s["flag"] is None} == {"done"}
        # flagged steps wait for `rollout advance`; steps that depend on them wait too
        assert {s["state"] for s in steps if s["flag"]} <= {"rolling_out", "pending"}

        assert rollout("db", "reset").exit_code == 2  # no terminal, no --yes
        assert rollout("db", "reset", "--yes").exit_code == 0
        steps = json.loads(rollout("status", "--json").stdout)["steps"]
        assert {s["state"] for s in steps} == {"pending"}
    finally:
        stopped = rollout("db", "stop")
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    assert embedded.running(home) is None
    assert rollout("db", "status").exit_code == 1
    assert (bot_plan.parent / ".rollout" / "pgdata" / "PG_VERSION").exists()


def test_db_commands_refuse_non_embedded_environments(bot_plan):
    result = Rollout(bot_plan, None)("db", "url", env="production")
    assert result.exit_code == 2 and "is not embedded" in result.output


def test_seed_holds_the_realistic_mess_of_baseline_md(rollout, db):
    result = rollout("db", "seed", "--rows", "5000")
    assert result.exit_code == 0, result.output
    # each table it fills is shown as it goes, not only at the end
    for line in ("seed: detection_events +5,000 rows", "seed: verification_events +500 rows",
                 "indexes and 12 foreign keys rebuilt over the new rows"):
        assert line in result.output
    count = lambda query: db.execute(query).fetchone()[0]  # noqa: E731
    assert count("SELECT count(*) FROM detection_events") == 5000
    assert count("SELECT count(*) FROM servers") >= 3 and count("SELECT count(*) FROM users") >= 20
    assert count("SELECT count(*) FROM verification_events") == 500
    assert count("SELECT count(*) FROM admin_actions") > 0
    assert count("SELECT count(*) FROM detection_events WHERE detection_type NOT IN "
                 "('message_frequency', 'suspicious_content', 'gpt_analysis', 'new_account', 'pattern_match')") > 0
    assert count("SELECT count(*) FROM detection_events WHERE detection_type = 'message'") > 0
    assert count("SELECT count(*) FROM detection_events WHERE confidence > 1 OR confidence < 0") > 0
    assert count("SELECT count(*) FROM detection_events WHERE confidence > 2") > 0  # stored as percentages
    assert count("SELECT count(*) FROM server_members WHERE reputation_score NOT BETWEEN -1 AND 1") > 0
    assert count("SELECT count(*) FROM verification_events WHERE status NOT IN "
                 "('pending', 'verified', 'rejected', 'reopened')") > 0
    assert count("SELECT count(*) FROM admin_actions WHERE action_type NOT IN "
                 "('verify', 'reject', 'ban', 'reopen', 'create_thread')") > 0
    assert count("SELECT count(*) FROM detection_events WHERE server_id IS NULL OR user_id IS NULL") > 0
    assert count("SELECT count(*) FROM detection_events WHERE admin_action IN ('Verified', 'Banned', 'Ignored')") > 0
    assert count("SELECT count(*) FROM detection_events WHERE latest_verification_event_id IS NOT NULL") == 500
    # the baseline's function still works on it
    assert db.execute("SELECT get_recent_message_count('x', 'y', 60)").fetchone()[0] == 0
    # seeding twice adds rows rather than failing
    assert rollout("db", "seed", "--rows", "100").exit_code == 0
    assert count("SELECT count(*) FROM detection_events") == 5100


def test_a_failing_seed_statement_names_its_line_and_keeps_nothing(bot_plan, rollout, db):
    seed = bot_plan.parent / "steps" / "baseline" / "seed.sql"
    lines = seed.read_text().splitlines()
    broken = next(n for n, line in enumerate(lines) if line.startswith("INSERT INTO detection_events"))
    lines.insert(broken, "INSERT INTO users (no_such_column) VALUES (1);")
    seed.write_text("\n".join(lines) + "\n")
    result = rollout("db", "seed", "--rows", "1000")
    assert result.exit_code == 1
    assert f'column "no_such_column" of relation "users" does not exist' in result.output
    assert f"at line {broken + 1}" in result.output
    assert "seed: users +" in result.output  # the statements before it ran...
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0  # ...and were rolled back with it


def test_seed_rejects_a_bad_row_count(rollout):
    result = rollout("db", "seed", "--rows", "0")
    assert result.exit_code == 2 and "'--rows': 0 is not in the range" in result.output


def test_rls_policies_and_function_of_the_baseline(rollout, db):
    assert rollout("apply", "composite_indexes").exit_code == 0
    policies = db.execute("SELECT count(*) FROM pg_policies WHERE policyname = 'Full access for service role'")
    assert policies.fetchone()[0] == 6
    rls = db.execute("SELECT count(*) FROM pg_class WHERE relrowsecurity AND relname IN ('servers', 'users', "
                     "'server_members', 'detection_events', 'verification_events', 'admin_actions')")
    assert rls.fetchone()[0] == 6


def test_a_project_copied_by_root_starts_and_a_foreign_data_directory_is_explained(tmp_path):
    import shutil

    from orchestrator import embedded
    from orchestrator.errors import DatabaseUnavailable

    original = tmp_path / "original"
    original.mkdir()
    embedded.start(str(original))
    embedded.stop(str(original))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)  # as cp -r: the files now belong to whoever copied them
    try:
        assert embedded.start(str(copy)).pid > 0
    finally:
        embedded.stop(str(copy))
    (copy / ".rollout" / "pgdata" / "PG_VERSION").write_text("9\n")
    with pytest.raises(DatabaseUnavailable, match="holds a PostgreSQL 9 database"):
        embedded.start(str(copy))


def test_seed_rebuilds_the_keys_and_indexes_it_set_aside(bot_plan, rollout, db):
    """db seed drops foreign keys and secondary indexes for the load and rebuilds them after:
    the schema ends exactly as it began, and rows that break a key are refused, naming it."""
    schema = ("SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE connamespace = "
              "'public'::regnamespace UNION ALL SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), "
              "indisvalid FROM pg_index WHERE indrelid::regclass::text NOT LIKE 'pg_%' ORDER BY 1, 2")
    assert rollout("db", "seed", "--rows", "1000").exit_code == 0
    before = db.execute(schema).fetchall()
    assert len(before) > 20
    assert rollout("db", "seed", "--rows", "1000").exit_code == 0  # additive: the same again, on top
    assert db.execute(schema).fetchall() == before
    rows = db.execute("SELECT count(*) FROM detection_events").fetchone()[0]
    seed = bot_plan.parent / "steps" / "baseline" / "seed.sql"
    seed.write_text(seed.read_text() + "\nINSERT INTO detection_events (server_id, detection_type, confidence) "
                                       "VALUES ('no such server', 'message', 0.5);\n")
    refused = rollout("db", "seed", "--rows", "1000")
    assert refused.exit_code == 1, refused.output
    assert "refuses once its keys and indexes are rebuilt" in refused.output, refused.output
    assert 'violates foreign key constraint "detection_events_server_id_fkey"' in refused.output, refused.output
    assert db.execute("SELECT count(*) FROM detection_events").fetchone()[0] == rows  # nothing of it kept
    assert db.execute(schema).fetchall() == before


BULK_SCHEMA = """
CREATE TABLE owners (id bigint PRIMARY KEY);
CREATE TABLE pets (id bigint PRIMARY KEY, owner_id bigint REFERENCES owners (id), name text);
CREATE INDEX pets_owner ON pets (owner_id);
CREATE INDEX pets_name_lower ON pets (lower(name)) WHERE name IS NOT NULL;
CREATE TABLE legacy (id bigint PRIMARY KEY, owner_id bigint);
INSERT INTO legacy VALUES (1, 999);
ALTER TABLE legacy ADD CONSTRAINT legacy_owner FOREIGN KEY (owner_id) REFERENCES owners (id) NOT VALID;
CREATE TABLE events (id bigint, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE event_notes (id bigint PRIMARY KEY, event_id bigint, at date, FOREIGN KEY (event_id, at) REFERENCES events);
"""


def test_seed_sets_aside_only_what_it_can_rebuild_exactly(tmp_path, dsn, db):
    plan = write_plan(tmp_path, "version: 1\nenvironments:\n  local: {database: embedded, bootstrap: schema.sql, "
                      "seed: seed.sql}\nsteps: []\n", {
                          "schema.sql": BULK_SCHEMA,
                          "seed.sql": "INSERT INTO pets SELECT g, g, 'pet ' || g FROM generate_series(1, 100) AS g;\n"
                                      "INSERT INTO owners SELECT g FROM generate_series(1, 100) AS g;\n"
                                      "INSERT INTO event_notes VALUES (1, NULL, NULL);\n"})
    rollout = Rollout(plan, dsn)
    schema = ("SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE connamespace = "
              "'public'::regnamespace UNION ALL SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), "
              "indisvalid FROM pg_index WHERE indrelid::regclass::text NOT LIKE 'pg_%' ORDER BY 1, 2")
    seeded = rollout("db", "seed", "--rows", "1")  # pets name owners the seed writes after them
    assert seeded.exit_code == 0, seeded.output
    assert "2 indexes and 1 foreign keys rebuilt" in seeded.output, seeded.output  # pets' only
    after = db.execute(schema).fetchall()
    assert ("legacy_owner", "FOREIGN KEY (owner_id) REFERENCES owners(id) NOT VALID", False) in after
    assert ("pets_owner_id_fkey", "FOREIGN KEY (owner_id) REFERENCES owners(id)", True) in after
    assert db.execute("SELECT count(*) FROM pets").fetchone()[0] == 100
