"""The repository's plan (rollout.yaml) ends where the hand-written bot plan ends.

Issue 11 rewrites the bot's plan with operations; nothing may be lost on the way. The
reference is the hand-written plan, frozen in tests/plans/handwritten/ (its README says why).
One database is seeded once, with that plan's own `rollout db seed --rows 2000` and a few
legacy rows of every kind the reviewed mappings and remediations handle (LEGACY_ROWS: the
seed's random ~1% of mess may miss one at this size); two copies are made of it (CREATE
DATABASE ... TEMPLATE), so both plans start from the very same rows, generated uuids included.
Each copy is driven through every step of its plan to the end, as an operator would: apply,
advance every flagged step through all its stages, apply again for the contracts, until every
step is done. Then the same application workload runs on both (what the
bot does once every flag is on: upserts with SET LOCAL app.actor, inserts of enum values,
settings changes, soft deletes, hard deletes with their cascades, writes the constraints
refuse), and the two databases are compared:

- the user schema, object by object: schemas, extensions, tables (row-level security, options,
  privileges, comments), columns (position among existing columns, type, NOT NULL, default,
  identity, generated, collation, comment), constraints (definition, validated), indexes
  (definition, valid), triggers (definition, enabled), policies, rules, views (definition,
  options such as security_invoker), sequences, enum types with their labels in order, domains,
  functions (signature, result, language, volatility, strictness, security, configuration,
  body, privileges);
- every row of every user table, matched by primary key;
- the workload's outcome: each statement's row count or error (SQLSTATE, constraint, message);
- get_recent_message_count for a few arguments, including the workload's own detections and
  seeded users with converted 'message' rows;
- the captures: the rows the audit_logs and config-history triggers wrote (a section of their
  own, though they are rows of user tables too).

A second test rolls copies of both finished databases back, step by step to the baseline, and
compares them again with nothing exempt: the originals each plan kept for its rollback must put
back the same values.

Left out of the comparison, and why:
- rollout's own schema `rollout` (step ids, migration ids, events and flag history with their
  times) and yoyo's tables (`_yoyo_migration`, `_yoyo_log`, `_yoyo_version`, `yoyo_lock`: migration
  ids are file names): the bookkeeping of how a plan was applied, which differs between any two
  plans by construction. What the application sees of it, the flags' effect on the capture
  triggers, is compared through the captures.
- the names PostgreSQL 18 gives NOT NULL constraints: `<table>_<column>_not_null`, from the
  column's name when SET NOT NULL ran (kept when the column is renamed), with a digit added when
  a constraint of that name exists. No plan chooses them, and they record history: the
  hand-written plan ends with detection_events_detection_kind_not_null on detection_type (set
  before the swap's rename) and servers_created_by_not_null1 (its CHECK of the same name
  existed then), where an operation, with its own _rollout_ names for the shadow column and the
  CHECK, ends with others. Nullability is compared, and NOT NULL constraints are compared by
  column (definition, validated). PostgreSQL 15 has no such constraints.
- rollback bookkeeping *present in one database only*: tables, functions, types and schemas
  whose names start with `remediation_` (the hand-written plan's tables of original values) or
  `_rollout_` (what rollout generates for operations, orchestrator/operations/names.py), and the
  hand-written enum steps' mapping functions detection_type_of, verification_status_of and
  admin_action_type_of. After the contract nothing in the application's schema uses them (no
  trigger, default, view or function left calls them); they exist so that a rollback after the
  contract restores every original value, and an operation keeps those originals under names
  and in a layout of its own (docs/bot-plan-with-operations.md, step by step). They are listed
  in the output, not failed; when both databases hold one under the same name it is compared
  like anything else. What they are for is compared instead: the rollback test.
  Columns, indexes, constraints and triggers on the application's tables are never exempt,
  whatever their names: the application meets them (SELECT *, to_jsonb(row) in the audit
  capture, write costs).
- values random by nature that both plans generate: a column whose DEFAULT calls a volatile
  function or reads the clock (gen_random_uuid(), now()), in a table the plans create (not in
  the seeded database): messages.id, audit_logs.id and changed_at, server_config_history.id and
  changed_at. Two runs of the same plan differ there. Such tables' rows are matched as a
  multiset of whole rows without those columns. Tables of the seeded database keep every column
  compared: their generated values come from the shared seed, and the workload writes its own
  ids and times explicitly.
- whitespace inside function bodies: runs of spaces and newlines count as one space (a body
  moved from a .sql file into rollout.yaml is indented anew).

Deliberate changes, made to the repository's plan after the hand-written one was frozen, are
named here and applied to the hand-written side before the comparison (DELIBERATE), so that
nothing else may differ:
- issue 16: who acts comes from rollout.actor() (app.actor, else the request header the plan's
  `actor:` names) where the hand-written plan read app.actor alone: the audit_fields defaults,
  set_updated_by, and the config-history and audit-log captures. A SQL session that sets
  app.actor (the workload) gets the same values from both.
- issue 11: updated_by is set by add_column's `on_update`, which gives each of the four tables
  its own trigger function, `<table>_set_updated_by()`, where the hand-written plan's triggers
  (of the same names) share one `set_updated_by()`. Each computes
  `coalesce(rollout.actor(), updated_by, 'bot')` over the row being updated, as the shared one
  did with NEW.updated_by: the rows the workload updates are compared like all others.
- issue 11, later: those triggers skip rollout's own batches (`WHEN` rollout.backfill is unset),
  so a later step's backfill (the enum conversions) no longer stamps every row it visits as
  updated by 'bot'. The hand-written plan's four triggers get the same `WHEN` when its copy is
  made (DELIBERATE_PLAN), so its rows show the same values.

While rollout.yaml is still the hand-written plan, the test compares it with its frozen copy and
must pass. A difference prints the first 20 differing objects and rows of each section.
"""

from __future__ import annotations

import filecmp
import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pglast
import psycopg
import pytest
from psycopg import sql

from . import equivalence as eq
from .conftest import REPO, Rollout

HANDWRITTEN = REPO / "tests" / "plans" / "handwritten"
ROWS = 2000  # detection events: small, so both plans run in seconds; every kind of mess is in it
CAPTURES = ("public.audit_logs", "public.server_config_history")


@dataclass
class Finished:
    """Both databases at the end of their plans, after the workload."""

    server: object
    plans: dict[str, Path]  # "A" (hand-written), "B" (the repository's)
    databases: dict[str, str]  # side -> database name
    seeded_tables: set[str]
    outcomes: dict[str, list]

    def url(self, side: str) -> str:
        return self.server.url(self.databases[side])


def _admin(server):
    return psycopg.connect(server.url("postgres"), autocommit=True)


def _create(server, name: str, template: str | None = None) -> None:
    copy = sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)) if template else sql.SQL("")
    with _admin(server) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}{}").format(sql.Identifier(name), copy))


def _drop(server, name: str) -> None:
    with _admin(server) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# (file under steps/, text, replacement): deliberate changes to the hand-written plan's behaviour
DELIBERATE_PLAN = [
    ("audit_fields/migrate/audit_fields_01_columns.sql", "FOR EACH ROW EXECUTE FUNCTION set_updated_by()",
     "FOR EACH ROW WHEN (coalesce(current_setting('rollout.backfill', true), '') = '') "
     "EXECUTE FUNCTION set_updated_by()"),
]


def _copy_plan(source: Path, destination: Path, changes=()) -> Path:
    """A plan's copy in a temporary folder (applying it writes .rollout/ beside the plan), with
    `changes` made to its steps' files."""
    destination.mkdir(parents=True)
    shutil.copy(source / "rollout.yaml", destination / "rollout.yaml")
    shutil.copytree(source / "steps", destination / "steps")
    for name, text, replacement in changes:
        path = destination / "steps" / name
        assert text in path.read_text(), f"{name} no longer holds {text!r}"
        path.write_text(path.read_text().replace(text, replacement))
    return destination / "rollout.yaml"


def _states(rollout: Rollout) -> dict[str, str]:
    result = rollout("status", "--json")
    assert result.exit_code == 0, result.output
    return {s["id"]: s["state"] for s in json.loads(result.stdout)["steps"]}


def _finish(rollout: Rollout) -> None:
    """Apply, advance every rollout a stage, apply again (the contracts), until all is done."""
    for _ in range(20):
        applied = rollout("apply", "--yes", "--no-backup")
        assert applied.exit_code == 0, applied.output
        if set(_states(rollout).values()) == {"done"}:
            return
        advanced = rollout("advance", "--all")
        assert advanced.exit_code == 0, advanced.output
    raise AssertionError(f"{rollout.plan} did not finish: {_states(rollout)}")


# Legacy rows added to the seeded database (the same in both copies): one of each value every
# reviewed mapping and remediation handles, so that each branch is exercised whatever the
# random seed produced at this size (the seed's own ~1% of mess may miss a kind at 2,000 rows).
LEGACY_ROWS = """
INSERT INTO users (discord_id, username, global_reputation_score) VALUES
    ('180000000000000001', 'legacy_1', 42), ('180000000000000002', 'legacy_2', -3.5),
    ('180000000000000003', 'legacy_3', 'NaN'), ('180000000000000004', 'legacy_4', NULL);
INSERT INTO server_members (server_id, user_id, reputation_score) VALUES
    ('900000000000000001', '180000000000000001', 87), ('900000000000000001', '180000000000000002', -2),
    ('900000000000000001', '180000000000000003', 'NaN'), ('900000000000000001', '180000000000000004', 1.5);
INSERT INTO detection_events (id, server_id, user_id, detection_type, confidence, detected_at, message_id,
                              channel_id, metadata) VALUES
    ('1e000000-0000-0000-0000-000000000001', '900000000000000001', '180000000000000001', ' Message ', 1.2,
     now() - interval '1 day', '370000000000000001', '310000000000000001', '{"content": "legacy one"}'),
    ('1e000000-0000-0000-0000-000000000002', '900000000000000001', '180000000000000001', 'MESSAGE_FREQUENCY', -0.05,
     now() - interval '2 days', '370000000000000002', '310000000000000001', '{"content": "legacy two"}'),
    ('1e000000-0000-0000-0000-000000000003', '900000000000000001', '180000000000000002', 'Suspicious_Content ', 87.5,
     now() - interval '3 days', '370000000000000003', NULL, '{"content": "legacy three"}'),
    ('1e000000-0000-0000-0000-000000000004', '900000000000000001', '180000000000000002', '', 'NaN',
     now() - interval '4 days', NULL, NULL, '{}'),
    ('1e000000-0000-0000-0000-000000000005', NULL, '180000000000000003', 'gpt_analysis', 2.5,
     now() - interval '5 days', '370000000000000005', '310000000000000002', '{"content": "legacy five"}'),
    ('1e000000-0000-0000-0000-000000000006', '900000000000000001', NULL, 'pattern_match', 150,
     now() - interval '6 days', NULL, NULL, '{}');
INSERT INTO verification_events (id, server_id, user_id, detection_event_id, status) VALUES
    ('1c000000-0000-0000-0000-000000000001', '900000000000000001', '180000000000000001',
     '1e000000-0000-0000-0000-000000000001', 'approved'),
    ('1c000000-0000-0000-0000-000000000002', '900000000000000001', '180000000000000001', NULL, 'closed'),
    ('1c000000-0000-0000-0000-000000000003', '900000000000000001', '180000000000000002', NULL, 'PENDING'),
    ('1c000000-0000-0000-0000-000000000004', '900000000000000001', '180000000000000002', NULL, ' Verified'),
    ('1c000000-0000-0000-0000-000000000005', '900000000000000001', '180000000000000003', NULL, 'reopened');
INSERT INTO admin_actions (id, server_id, user_id, admin_id, verification_event_id, action_type) VALUES
    ('1a000000-0000-0000-0000-000000000001', '900000000000000001', '180000000000000001', '500000000000000001',
     '1c000000-0000-0000-0000-000000000001', 'kick'),
    ('1a000000-0000-0000-0000-000000000002', '900000000000000001', '180000000000000001', '500000000000000002',
     '1c000000-0000-0000-0000-000000000002', 'Ban'),
    ('1a000000-0000-0000-0000-000000000003', '900000000000000001', '180000000000000002', '500000000000000003',
     NULL, ' verify ');
"""


# ---------------------------------------------------------------------------------------------
# The application after the rollout


GUILD, GONE_GUILD = "990000000000000001", "990000000000000002"
USER, GONE_USER = "190000000000000001", "190000000000000002"
ADMIN, OTHER_ADMIN = "500000000000000007", "500000000000000011"
EVENTS = [uuid.UUID(int=0xE0 << 120 | n) for n in range(1, 6)]
CASE, GONE_CASE = uuid.UUID(int=0xCA << 120 | 1), uuid.UUID(int=0xCA << 120 | 2)
ACTION, GONE_ACTION = uuid.UUID(int=0xAA << 120 | 1), uuid.UUID(int=0xAA << 120 | 2)


def workload(conn: psycopg.Connection, now) -> list[tuple[str, object]]:
    """What the bot runs once every flag is on, each statement in its own transaction as the
    bot's would be; `now` is one instant shared by both databases, so every time it writes is
    the same. Returns each statement's outcome: its row count, its rows, or its error."""
    outcomes: list[tuple[str, object]] = []
    seeded_guild, seeded_user, other_user = conn.execute(
        "SELECT m.server_id, m.user_id, (SELECT o.user_id FROM server_members AS o WHERE o.server_id = m.server_id "
        "AND o.user_id <> m.user_id ORDER BY o.user_id LIMIT 1) FROM server_members AS m "
        "ORDER BY m.server_id, m.user_id LIMIT 1").fetchone()

    def run(label: str, statement: str, params: dict | None = None, actor: str | None = None) -> None:
        params = {"now": now, "guild": GUILD, "user": USER, "admin": ADMIN, "seeded_guild": seeded_guild,
                  "seeded_user": seeded_user, "other_user": other_user, **(params or {})}
        try:
            with conn.transaction():
                if actor:
                    conn.execute("SELECT set_config('app.actor', %s, true)", (actor,))
                cursor = conn.execute(statement, params)
                outcome = cursor.fetchall() if cursor.description else cursor.rowcount
        except psycopg.Error as exc:
            outcome = {"sqlstate": exc.sqlstate, "constraint": exc.diag.constraint_name,
                       "message": exc.diag.message_primary}
        outcomes.append((label, outcome))

    # a new guild, user and membership: the bot upserts them before each detection
    for guild, channel in ((GUILD, "910000000000000901"), (GONE_GUILD, "910000000000000902")):
        run(f"upsert server {guild}", """
            INSERT INTO servers (guild_id, admin_channel_id, settings, created_at, updated_at)
            VALUES (%(g)s, %(c)s, '{"message_threshold": 5, "min_confidence_threshold": 0.7}', %(now)s, %(now)s)
            ON CONFLICT (guild_id) DO UPDATE SET updated_at = EXCLUDED.updated_at""", {"g": guild, "c": channel},
            actor=ADMIN)
    for user in (USER, GONE_USER):
        run(f"upsert user {user}", """
            INSERT INTO users (discord_id, username, created_at, updated_at, global_reputation_score,
                               account_created_at)
            VALUES (%(u)s, 'user_' || %(u)s, %(now)s, %(now)s, 0.5, %(now)s - interval '3 days')
            ON CONFLICT (discord_id) DO NOTHING""", {"u": user})
    for guild, user in ((GUILD, USER), (GONE_GUILD, GONE_USER), (GUILD, GONE_USER)):
        run(f"join {guild}/{user}", """
            INSERT INTO server_members (server_id, user_id, join_date, reputation_score)
            VALUES (%(g)s, %(u)s, %(now)s, 0.1) ON CONFLICT DO NOTHING""", {"g": guild, "u": user}, actor=ADMIN)

    # detections with the enum's labels, and the messages behind them (messages_write)
    for n, (event, guild, user, kind, age) in enumerate((
            (EVENTS[0], GUILD, USER, "message_frequency", "2 minutes"),
            (EVENTS[1], GUILD, USER, "suspicious_content", "5 minutes"),
            (EVENTS[2], GUILD, USER, "message_frequency", "30 minutes"),
            (EVENTS[3], GONE_GUILD, GONE_USER, "new_account", "1 minute"),
            (EVENTS[4], seeded_guild, seeded_user, "message_frequency", "3 hours"))):
        run(f"detect {event}", """
            INSERT INTO detection_events (id, server_id, user_id, detection_type, confidence, detected_at,
                                          message_id, channel_id, reasons, metadata)
            VALUES (%(id)s, %(g)s, %(u)s, %(kind)s, 0.875, %(now)s - %(age)s::interval, %(m)s, '310000000000000007',
                    ARRAY['score 0.94'], jsonb_build_object('content', 'workload message ' || %(n)s))""",
            {"id": event, "g": guild, "u": user, "kind": kind, "age": age, "m": f"38000000000000000{n}", "n": n})
        run(f"message of {event}", """
            INSERT INTO messages (server_id, user_id, channel_id, message_id, content_hash, sent_at)
            SELECT server_id, user_id, channel_id, message_id,
                   encode(sha256(convert_to(metadata ->> 'content', 'UTF8')), 'hex'), detected_at
            FROM detection_events WHERE id = %(id)s
            ON CONFLICT (server_id, message_id) DO NOTHING""", {"id": event})
    run("message again (ON CONFLICT)", """
        INSERT INTO messages (server_id, user_id, channel_id, message_id, sent_at)
        VALUES (%(guild)s, %(user)s, '310000000000000007', '380000000000000000', %(now)s)
        ON CONFLICT (server_id, message_id) DO NOTHING""")

    # a case, its verification by an admin, the admin's action
    for case, event, guild, user in ((CASE, EVENTS[0], GUILD, USER), (GONE_CASE, EVENTS[3], GONE_GUILD, GONE_USER)):
        run(f"open case {case}", """
            INSERT INTO verification_events (id, server_id, user_id, detection_event_id, thread_id, status,
                                             created_at, updated_at)
            VALUES (%(id)s, %(g)s, %(u)s, %(e)s, '400000000000009999', 'pending', %(now)s, %(now)s)""",
            {"id": case, "g": guild, "u": user, "e": event}, actor=ADMIN)
        run(f"link detection {event}", "UPDATE detection_events SET latest_verification_event_id = %(c)s "
            "WHERE id = %(e)s", {"c": case, "e": event})
    run("verify case", """
        UPDATE verification_events SET status = 'verified', resolved_at = %(now)s + interval '1 minute',
               updated_at = %(now)s + interval '1 minute', notes = 'looked fine'
        WHERE id = %(c)s""", {"c": CASE}, actor=OTHER_ADMIN)
    for action, case, event, guild, user, kind in ((ACTION, CASE, EVENTS[0], GUILD, USER, "verify"),
                                                   (GONE_ACTION, GONE_CASE, EVENTS[3], GONE_GUILD, GONE_USER, "ban")):
        run(f"admin action {action}", """
            INSERT INTO admin_actions (id, server_id, user_id, admin_id, verification_event_id, detection_event_id,
                                       action_type, action_at, previous_status, new_status)
            VALUES (%(id)s, %(g)s, %(u)s, %(a)s, %(c)s, %(e)s, %(kind)s, %(now)s, 'pending', 'verified')""",
            {"id": action, "g": guild, "u": user, "a": OTHER_ADMIN, "c": case, "e": event, "kind": kind},
            actor=OTHER_ADMIN)
    run("admin action on the detection", """
        UPDATE detection_events SET admin_action = 'Verified', admin_action_by = %(a)s, admin_action_at = %(now)s
        WHERE id = %(e)s""", {"a": OTHER_ADMIN, "e": EVENTS[0]})

    # settings: captured in server_config_history (changed_by from app.actor, else the role)
    run("settings change by an admin", """
        UPDATE servers SET settings = settings || '{"message_threshold": 9}' WHERE guild_id = %(seeded_guild)s""",
        actor=ADMIN)
    run("settings change by the bot", """
        UPDATE servers SET settings = settings || '{"min_confidence_threshold": 0.8}' WHERE guild_id = %(guild)s""")
    run("an update that leaves the settings", "UPDATE servers SET is_active = is_active WHERE guild_id = %(guild)s",
        actor=ADMIN)
    run("reputation change", """
        UPDATE server_members SET reputation_score = -0.25, message_count = message_count + 1,
               last_message_at = %(now)s
        WHERE server_id = %(seeded_guild)s AND user_id = %(seeded_user)s""", actor=ADMIN)
    run("global reputation change", "UPDATE users SET global_reputation_score = 0.75, updated_at = %(now)s "
        "WHERE discord_id = %(seeded_user)s")

    # soft delete (soft_delete): marks, the active_* views hide them
    run("soft-delete the action", "UPDATE admin_actions SET deleted_at = %(now)s, deleted_by = %(admin)s "
        "WHERE id = %(a)s", {"a": ACTION}, actor=ADMIN)
    run("soft-delete a seeded case", """
        UPDATE verification_events SET deleted_at = %(now)s, deleted_by = %(admin)s
        WHERE id = (SELECT id FROM verification_events WHERE server_id = %(seeded_guild)s ORDER BY id LIMIT 1)""",
        actor=ADMIN)
    run("soft-delete a seeded member", """
        UPDATE server_members SET deleted_at = %(now)s, deleted_by = %(admin)s
        WHERE server_id = %(seeded_guild)s AND user_id = %(seeded_user)s""", actor=ADMIN)
    run("read through the active views", """
        SELECT (SELECT count(*) FROM active_servers), (SELECT count(*) FROM active_server_members),
               (SELECT count(*) FROM active_verification_events), (SELECT count(*) FROM active_admin_actions)""")
    run("pending cases of a user", """
        SELECT id::text FROM active_verification_events WHERE user_id = %(user)s AND server_id = %(guild)s
        AND status = 'pending' ORDER BY id""")

    # hard deletes: a member, then a whole guild with its cascades (each captured as a DELETE)
    run("remove a seeded member", "DELETE FROM server_members WHERE server_id = %(seeded_guild)s "
        "AND user_id = %(other_user)s", actor=ADMIN)
    run("remove a guild", "DELETE FROM servers WHERE guild_id = %(g)s", {"g": GONE_GUILD}, actor=ADMIN)

    # writes the new schema refuses, each in its own transaction (nothing of them may remain)
    refused = {
        "confidence out of range": """INSERT INTO detection_events (server_id, user_id, detection_type, confidence)
                                      VALUES (%(guild)s, %(user)s, 'suspicious_content', 1.5)""",
        "a legacy detection type": """INSERT INTO detection_events (server_id, user_id, detection_type, confidence)
                                      VALUES (%(guild)s, %(user)s, 'message', 0.5)""",
        "a legacy case status": "UPDATE verification_events SET status = 'approved' WHERE id = %(c)s",
        "a legacy action type": "UPDATE admin_actions SET action_type = 'kick' WHERE id = %(a)s",
        "reputation out of range": """UPDATE server_members SET reputation_score = 2
                                      WHERE server_id = %(guild)s AND user_id = %(user)s""",
        "global reputation out of range": "UPDATE users SET global_reputation_score = -3 WHERE discord_id = %(user)s",
        "no creator": "UPDATE servers SET created_by = NULL WHERE guild_id = %(guild)s",
        "the same message twice": """INSERT INTO messages (server_id, user_id, channel_id, message_id, sent_at)
                                     VALUES (%(guild)s, %(user)s, '1', '380000000000000000', %(now)s)""",
        "a message without channel": """INSERT INTO messages (server_id, user_id, message_id, sent_at)
                                        VALUES (%(guild)s, %(user)s, '389', %(now)s)""",
    }
    for label, statement in refused.items():
        run(label, statement, {"c": CASE, "a": ACTION}, actor=ADMIN)
    return outcomes


def message_count_arguments(conn: psycopg.Connection) -> list[tuple]:
    """Arguments for get_recent_message_count: the workload's detections at several windows, and
    seeded (user, server) pairs with converted 'message' rows, each window's edge far (at least
    10 minutes) from any of their rows, so the seconds between the two databases' calls cannot
    change a count."""
    arguments = [(USER, GUILD, 600), (USER, GUILD, 3600), (USER, GUILD, 86400), (USER, GUILD, None),
                 ("100000000000000000", GUILD, 10**8)]
    pairs = conn.execute("""
        SELECT user_id, server_id, array_agg(extract(epoch FROM now() - detected_at)::bigint ORDER BY detected_at DESC)
        FROM detection_events WHERE detection_type::text = 'message_frequency'
          AND user_id IS NOT NULL AND server_id IS NOT NULL
        GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 4""").fetchall()
    for user, server, ages in pairs:
        arguments.append((user, server, 10**8))
        for young, old in zip(ages, ages[1:]):
            if old - young >= 1200:
                arguments.append((user, server, (young + old) // 2))
                break
    return arguments


def message_counts(conn: psycopg.Connection, arguments: list[tuple]) -> list[tuple[str, object]]:
    return [(f"get_recent_message_count{args}", conn.execute(
        "SELECT get_recent_message_count(%s, %s, %s)", args).fetchone()[0]) for args in arguments]


# ---------------------------------------------------------------------------------------------
# The two databases


@pytest.fixture(scope="module")
def finished(server, tmp_path_factory):
    home = tmp_path_factory.mktemp("equivalence")
    plans = {"A": _copy_plan(HANDWRITTEN, home / "handwritten", DELIBERATE_PLAN), "B": _copy_plan(REPO, home / "repository")}
    tag = uuid.uuid4().hex[:10]
    seeded, databases = f"eq_{tag}_seeded", {"A": f"eq_{tag}_a", "B": f"eq_{tag}_b"}
    created = [seeded]
    try:
        _create(server, seeded)
        seeding = Rollout(plans["A"], server.url(seeded))("db", "seed", "--rows", str(ROWS))
        assert seeding.exit_code == 0, seeding.output
        with psycopg.connect(server.url(seeded)) as conn:
            conn.execute(LEGACY_ROWS)
            seeded_tables = set(eq.user_tables(conn))
        for side, name in databases.items():
            _create(server, name, template=seeded)
            created.append(name)
        for side in ("A", "B"):
            _finish(Rollout(plans[side], server.url(databases[side])))
        with psycopg.connect(server.url(databases["A"]), autocommit=True) as conn:
            now = conn.execute("SELECT date_trunc('second', now())").fetchone()[0]
        outcomes = {}
        for side in ("A", "B"):
            with psycopg.connect(server.url(databases[side]), autocommit=True) as conn:
                outcomes[side] = workload(conn, now)
        yield Finished(server, plans, databases, seeded_tables, outcomes)
    finally:
        for name in created:
            _drop(server, name)


# (pattern, replacement) applied to every text of the hand-written side's schema
DELIBERATE = [
    (re.compile(r"coalesce\(nullif\(current_setting\('app\.actor', true\), ''\), ", re.IGNORECASE),
     "coalesce(rollout.actor(), "),
    (re.compile(re.escape("COALESCE(NULLIF(current_setting('app.actor'::text, true), ''::text), ")),
     "COALESCE(rollout.actor(), "),
]


UPDATED_BY_TABLES = ("servers", "server_members", "verification_events", "admin_actions")


def updated_by_per_table(snapshot: dict) -> dict:
    """Issue 11's deliberate change: add_column's on_update gives each table its own trigger
    function, <table>_set_updated_by(), where the hand-written plan's four triggers share
    set_updated_by(); each computes coalesce(rollout.actor(), updated_by, 'bot') over the row
    being updated, as set_updated_by did with NEW.updated_by."""
    if "function public.set_updated_by()" not in snapshot:
        return snapshot  # rolled back: neither plan's functions are there
    changed = dict(snapshot)
    shared = changed.pop("function public.set_updated_by()")
    for table in UPDATED_BY_TABLES:
        name = f"{table}_set_updated_by"
        changed[f"function public.{name}()"] = {
            **shared, "owner": f"public.{name}()",
            "body": '#variable_conflict use_column BEGIN NEW."updated_by" := (SELECT (coalesce(rollout.actor(), '
                    f"updated_by, 'bot')) FROM (SELECT NEW.*) AS \"{table}\"); RETURN NEW; END"}
        trigger = f"trigger public.{table}.{name}"
        changed[trigger] = {**changed[trigger], "definition": changed[trigger]["definition"].replace(
            "EXECUTE FUNCTION set_updated_by()", f"EXECUTE FUNCTION {name}()")}
    return changed


def as_deliberately_changed(value):
    """The hand-written plan's schema with the DELIBERATE changes made."""
    if isinstance(value, str):
        for pattern, replacement in DELIBERATE:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, dict):
        return {key: as_deliberately_changed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(as_deliberately_changed(item) for item in value)
    return value


def compare(finished: Finished, databases: dict[str, str], *, exempt_bookkeeping: bool,
            masked_tables: set[str] | None = None) -> eq.Report:
    report = eq.Report()
    snapshots = {}
    with psycopg.connect(finished.server.url(databases["A"])) as a, \
            psycopg.connect(finished.server.url(databases["B"])) as b:
        conns = {"A": a, "B": b}
        for side, conn in conns.items():
            snapshots[side] = eq.schema(conn)
        snapshots["A"] = updated_by_per_table(as_deliberately_changed(snapshots["A"]))
        one_sided = eq.compare_schemas(snapshots["A"], snapshots["B"], report, exempt_bookkeeping=exempt_bookkeeping)
        tables = sorted((set(eq.user_tables(a)) | set(eq.user_tables(b))) - one_sided)
        for table in tables:
            present = {side: f"table {table}" in snapshots[side] for side in conns}
            if not all(present.values()):
                continue  # reported with the schema
            masked: set[str] = set()
            if table not in finished.seeded_tables:
                for conn in conns.values():
                    masked |= eq.volatile_default_columns(conn, table)
            section = "captures" if table in CAPTURES else "rows"
            eq.compare_rows(table, eq.rows(a, table, masked), eq.rows(b, table, masked), report, section)
    return report


def test_both_plans_start_from_the_same_baseline():
    """Both are applied to copies of a database seeded by the hand-written plan's files: the
    rewritten plan must not have changed the schema (the line count leaves steps/baseline out),
    and its seed file may only write sample rows (it was made faster for issue 13), never
    schema a step would otherwise have to write."""
    assert filecmp.cmp(HANDWRITTEN / "steps" / "baseline" / "schema.sql", REPO / "steps" / "baseline" / "schema.sql",
                       shallow=False), "steps/baseline/schema.sql differs from the hand-written plan's"
    seed = (REPO / "steps" / "baseline" / "seed.sql").read_text()
    for raw in pglast.parse_sql(seed):
        node = raw.stmt
        kind = type(node).__name__
        temporary = kind == "CreateTableAsStmt" and node.into.rel.relpersistence == "t"
        assert kind in ("InsertStmt", "UpdateStmt", "SelectStmt", "VacuumStmt") or temporary, \
            f"steps/baseline/seed.sql holds a {kind}: the seed writes rows, not schema"


def test_the_repository_plan_ends_where_the_handwritten_plan_ends(finished):
    report = compare(finished, finished.databases, exempt_bookkeeping=True)
    eq.compare_values("workload", finished.outcomes["A"], finished.outcomes["B"], report)
    with psycopg.connect(finished.url("A")) as a, psycopg.connect(finished.url("B")) as b:
        arguments = message_count_arguments(a)
        counts = {"A": message_counts(a, arguments), "B": message_counts(b, arguments)}
        eq.compare_values("get_recent_message_count", counts["A"], counts["B"], report)
        # the comparison is not vacuous: the reference went to the end, and the workload was captured
        assert a.execute("SELECT enum_range(NULL::detection_type)::text").fetchone()[0] == (
            "{message_frequency,suspicious_content,gpt_analysis,new_account,pattern_match}")
        assert a.execute("SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'verification_events'"
                         "::regclass AND attname = 'status'").fetchone()[0] == "verification_status"
        captured = dict(a.execute("SELECT action, count(*) FROM audit_logs GROUP BY 1").fetchall())
        assert captured.get("INSERT", 0) >= 5 and captured.get("UPDATE", 0) >= 5 and captured.get("DELETE", 0) >= 4, \
            captured
        assert a.execute("SELECT count(*) FROM server_config_history").fetchone()[0] == 2
        assert sum(1 for _, n in counts["A"] if n) >= 5, counts["A"]
        assert a.execute("SELECT count(*) FROM remediation_detection_types").fetchone()[0] > 0
    if report.notes:  # shown with -rP, or with the differences when there are some
        print("not compared (rollback bookkeeping on one side only):", *report.notes, sep="\n  ")
    refusals = [o for _, o in finished.outcomes["A"] if isinstance(o, dict)]
    assert len(refusals) == 9, finished.outcomes["A"]
    assert not report, "\n" + report.text(f"hand-written plan ({HANDWRITTEN.relative_to(REPO)})",
                                          "the repository's rollout.yaml")


def test_rolling_back_either_plan_gives_back_the_same_database(finished):
    """After a full rollback both databases are the seeded baseline plus the workload's own
    writes: whatever each plan kept to restore original values (remediation tables, shadow
    columns, mapping functions) must have restored the same values. Nothing is exempt here.

    The workload changes no converted value of a legacy row after the contract, on purpose: the
    hand-written swap rollbacks then put back the stale original (a case 'approved' before the
    rollout and set to 'rejected' after it comes back 'approved'), where convert_to_enum's
    rollback keeps the later value. That difference would be the rewrite's fix, not a loss
    (docs/bot-plan-with-operations.md)."""
    tag = uuid.uuid4().hex[:10]
    copies = {side: f"eq_{tag}_{side.lower()}_back" for side in ("A", "B")}
    try:
        for side, name in copies.items():
            _create(finished.server, name, template=finished.databases[side])
            rollout = Rollout(finished.plans[side], finished.server.url(name))
            for step in reversed(list(_states(rollout))):
                undone = rollout("rollback", step, "--cascade", "--yes", "--no-backup")
                assert undone.exit_code == 0, undone.output
            assert set(_states(rollout).values()) == {"pending"}
        report = compare(finished, copies, exempt_bookkeeping=False)
        with psycopg.connect(finished.server.url(copies["A"])) as a:
            assert a.execute("SELECT to_regtype('detection_type'), to_regclass('messages'), "
                             "to_regclass('remediation_detection_types')").fetchone() == (None, None, None)
            # the originals came back: statuses the enum has no label for are text again
            assert a.execute("SELECT count(*) FROM verification_events WHERE status NOT IN "
                             "('pending', 'verified', 'rejected', 'reopened')").fetchone()[0] > 0
        assert not report, "\n" + report.text(f"hand-written plan ({HANDWRITTEN.relative_to(REPO)}), rolled back",
                                              "the repository's rollout.yaml, rolled back")
    finally:
        for name in copies.values():
            _drop(finished.server, name)
