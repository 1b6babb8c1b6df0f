"""The bot plan rolled out under a bot that talks to its database only as supabase-js does:
every query a PostgREST request (one short transaction on a pooled connection, SET LOCAL ROLE,
the request's headers and JWT claims as transaction settings, no search_path of its own).

The database is set up as Supabase sets one up: an operator role with Supabase's attributes
(no superuser) owns it, and the API roles get what Supabase's default privileges give them on
everything the operator creates in `public`. The plan publishes the flag functions there.

In every guild the bot asks `rollout_flags(guild)` and takes, flag by flag, the old shape or
the new one: legacy enum values or labels, no actor or the x-actor header, no messages row or
one, hard or soft delete. Between every stage of every rollout it moderates in sixty guilds,
and each row is checked for both shapes: the enum shadow columns hold each row's label,
get_recent_message_count counts a frequency detection under either label,
created_by and updated_by name the actor when one was sent, the captures follow their flags
guild by guild. After the contracts the rows the old bot wrote read as the new shape."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .conftest import Rollout

ADMIN = "500000000000000042"
GUILDS = [str(910_000_000_000_000_000 + i * 7919) for i in range(60)]
ENUMS = {  # flag: (table, column, what the old bot writes, the label it means)
    "canonical_detection_types": ("detection_events", "detection_type", "message", "message_frequency"),
    "canonical_verification_statuses": ("verification_events", "status", "approved", "verified"),
    "canonical_admin_action_types": ("admin_actions", "action_type", "kick", "reject"),
}


@dataclass
class Supabase:
    operator: str  # the DSN rollout runs with
    api: str  # PostgREST's login role: it switches to the request's role
    roles: dict[str, str]  # anon, authenticated, service_role -> this test's role names


@pytest.fixture
def supabase(server):
    suffix = uuid.uuid4().hex[:8]
    roles = {kind: f"{kind}_{suffix}" for kind in ("anon", "authenticated", "service_role")}
    operator, authenticator, database = f"supa_{suffix}", f"authenticator_{suffix}", f"supa_{suffix}"
    ident = sql.Identifier
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE CREATEDB").format(ident(operator)))
        for predefined in ("pg_monitor", "pg_read_all_data", "pg_signal_backend"):
            admin.execute(sql.SQL("GRANT {} TO {}").format(ident(predefined), ident(operator)))
        for kind, role in roles.items():
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN {}").format(
                ident(role), sql.SQL("BYPASSRLS" if kind == "service_role" else "")))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(ident(authenticator)))
        admin.execute(sql.SQL("GRANT {} TO {}").format(sql.SQL(", ").join(map(ident, roles.values())),
                                                      ident(authenticator)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(database), ident(operator)))
    dsn = make_conninfo(server.url(database), user=operator)
    api_roles = sql.SQL(", ").join(map(ident, roles.values()))
    with psycopg.connect(dsn, autocommit=True) as db:  # what Supabase grants its API roles
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(api_roles))
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            db.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {} TO {}").format(
                sql.SQL(kind), api_roles))
    try:
        yield Supabase(dsn, make_conninfo(server.url(database), user=authenticator), roles)
    finally:
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(database)))
            for role in (*roles.values(), authenticator, operator):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))


class PostgREST:
    """Requests as PostgREST runs them, one after another on one pooled connection."""

    def __init__(self, dsn: str, role: str):
        # PostgREST's prepared statements take a JSON body, so a column's new type is met by a new
        # plan; ours take typed values, which a statement prepared before a contract would keep
        self.conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None)
        self.role = role

    def __call__(self, query: str, params=(), *, actor: str | None = None, role: str | None = None) -> list[tuple]:
        role = role or self.role
        with self.conn.transaction():
            self.conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            self.conn.execute("SELECT set_config('request.method', 'POST', true), "
                              "set_config('request.headers', %s, true), set_config('request.jwt.claims', %s, true)",
                              (json.dumps({"x-actor": actor} if actor else {}), json.dumps({"role": role})))
            cursor = self.conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []


@dataclass
class Moderation:
    """What one version of the bot did in one guild: the flags it saw, the rows it wrote."""

    guild: str
    user: str
    new: dict[str, bool]
    detection: uuid.UUID
    case: uuid.UUID
    action: uuid.UUID


def moderate(api: PostgREST, guild: str, round_: int) -> Moderation:
    """The bot handles one flagged message in `guild`, taking each step's shape from its flag."""
    new = dict(api("SELECT flag, enabled FROM public.rollout_flags(%s)", (guild,)))
    shape = {flag: value if new.get(flag) else old for flag, (_, _, old, value) in ENUMS.items()}
    actor = ADMIN if new.get("audit_fields_write") else None  # the old bot sends no x-actor header
    user = f"19{guild[-8:]}{round_:08d}"
    api("INSERT INTO servers (guild_id, admin_channel_id, settings) VALUES (%s, '311', '{\"message_threshold\": 5}') "
        "ON CONFLICT (guild_id) DO UPDATE SET updated_at = now()", (guild,), actor=actor)
    api("INSERT INTO users (discord_id, username) VALUES (%s, 'user') ON CONFLICT (discord_id) DO NOTHING", (user,))
    api("INSERT INTO server_members (server_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (guild, user),
        actor=actor)
    [(detection,)] = api(
        "INSERT INTO detection_events (server_id, user_id, detection_type, confidence, message_id, channel_id, "
        "metadata) VALUES (%s, %s, %s, 0.9, %s, '312', jsonb_build_object('content', 'hello')) RETURNING id",
        (guild, user, shape["canonical_detection_types"], f"37{guild[-8:]}{round_:08d}"))
    # either label is a frequency detection to both versions, before the contract and after it
    assert api("SELECT get_recent_message_count(%s, %s, 3600)", (user, guild)) == [(1,)]
    if new.get("messages_write"):
        api("INSERT INTO messages (server_id, user_id, channel_id, message_id, content_hash, sent_at) "
            "SELECT server_id, user_id, channel_id, message_id, encode(sha256(convert_to(metadata ->> 'content', "
            "'UTF8')), 'hex'), detected_at FROM detection_events WHERE id = %s "
            "ON CONFLICT (server_id, message_id) DO NOTHING", (detection,))
    [(case,)] = api("INSERT INTO verification_events (server_id, user_id, detection_event_id, status) "
                    "VALUES (%s, %s, %s, 'pending') RETURNING id", (guild, user, detection), actor=actor)
    api("UPDATE verification_events SET status = %s, resolved_at = now() WHERE id = %s",
        (shape["canonical_verification_statuses"], case), actor=actor)
    [(action,)] = api("INSERT INTO admin_actions (server_id, user_id, admin_id, verification_event_id, action_type) "
                      "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                      (guild, user, ADMIN, case, shape["canonical_admin_action_types"]), actor=actor)
    api("UPDATE servers SET settings = settings || jsonb_build_object('message_threshold', %s::int) "
        "WHERE guild_id = %s", (round_ + 6, guild), actor=actor)
    if new.get("soft_delete"):
        api("UPDATE server_members SET deleted_at = now(), deleted_by = %s WHERE server_id = %s AND user_id = %s",
            (ADMIN, guild, user), actor=actor)
        visible = api("SELECT count(*) FROM active_server_members WHERE server_id = %s AND user_id = %s",
                      (guild, user))
    else:
        api("DELETE FROM server_members WHERE server_id = %s AND user_id = %s", (guild, user), actor=actor)
        visible = api("SELECT count(*) FROM server_members WHERE server_id = %s AND user_id = %s", (guild, user))
    assert visible == [(0,)]
    return Moderation(guild, user, new, detection, case, action)


def columns(db, table: str) -> set[str]:
    return {name for (name,) in db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (table,))}


def check_both_shapes(db, done: Moderation, service_role: str) -> None:
    """Every row the bot wrote is right for both shapes, as the operator sees it."""
    rows = {"detection_events": done.detection, "verification_events": done.case, "admin_actions": done.action}
    for flag, (table, column, old, label) in ENUMS.items():
        # during the rollout the shadow column holds the label; after the contract the column is the enum
        shadow = f"_rollout_{column}" if f"_rollout_{column}" in columns(db, table) else column
        value = db.execute(sql.SQL("SELECT {}::text FROM {} WHERE id = %s").format(
            sql.Identifier(shadow), sql.Identifier(table)), (rows[table],)).fetchone()[0]
        assert value == label, (done.guild, table, done.new.get(flag), value)
    actor = ADMIN if done.new.get("audit_fields_write") else None
    assert db.execute("SELECT created_by FROM admin_actions WHERE id = %s", (done.action,)).fetchone()[0] == (
        actor or "bot")
    assert db.execute("SELECT updated_by FROM verification_events WHERE id = %s", (done.case,)).fetchone()[0] == (
        actor or "bot")
    messages = db.execute("SELECT count(*) FROM messages AS m JOIN detection_events AS d ON d.message_id = "
                          "m.message_id AND d.server_id = m.server_id WHERE d.id = %s", (done.detection,)).fetchone()[0]
    # the bot writes the message where messages_write is on; where it is off, copy_rows' trigger
    # does, from the expand until the contract
    copied = db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = '_rollout_copy_detection_events_messages'"
                        ).fetchone()[0]
    assert messages == (1 if done.new.get("messages_write") or copied else 0), done
    if db.execute("SELECT to_regclass('server_config_history')").fetchone()[0]:
        history = db.execute("SELECT changed_by FROM server_config_history WHERE server_id = %s AND "
                             "new_settings ->> 'message_threshold' = (SELECT settings ->> 'message_threshold' "
                             "FROM servers WHERE guild_id = %s)", (done.guild, done.guild)).fetchall()
        assert history == ([(actor or service_role,)] if done.new.get("config_history_capture") else []), done
    if db.execute("SELECT to_regclass('audit_logs')").fetchone()[0]:
        audit = db.execute("SELECT action, changed_by FROM audit_logs WHERE table_name = 'admin_actions' "
                           "AND record_id = %s", (str(done.action),)).fetchall()
        assert audit == ([("INSERT", actor or service_role)] if done.new.get("audit_log_capture") else []), done


# (step, its capture trigger and table, a change made with the trigger off, the stage check that
# notices, what mends it): the captures' checks judge what was captured since the flag moved
MISSED_CAPTURES = [
    ("audit_logs", "admin_actions_audit", "admin_actions",
     "INSERT INTO admin_actions (server_id, user_id, admin_id, action_type) VALUES "
     "(%(guild)s, %(user)s, %(admin)s, 'reject')", "admin_actions_are_audited",
     "DELETE FROM admin_actions WHERE server_id = %(guild)s AND id NOT IN "
     "(SELECT record_id::uuid FROM audit_logs WHERE table_name = 'admin_actions')"),
    ("server_config_history", "servers_capture_config_change", "servers",  # judged from a change captured since
     "UPDATE servers SET settings = settings || '{\"missed\": true}' WHERE guild_id = %(guild)s",
     "history_follows_settings", "UPDATE servers SET settings = settings - 'missed' WHERE guild_id = %(guild)s"),
]


def states(rollout: Rollout) -> dict[str, dict]:
    result = rollout("status", "--json")
    assert result.exit_code == 0, result.output
    return {s["id"]: s for s in json.loads(result.stdout)["steps"]}


def test_both_versions_of_a_supabase_bot_work_through_every_rollout_of_the_bot_plan(supabase, bot_plan):
    plan = bot_plan.read_text()
    api_roles = ", ".join(supabase.roles.values())
    plan = plan.replace("    database: embedded ", f"    flags_api: {{schema: public, roles: [{api_roles}]}}\n"
                                                   "    database: embedded ", 1)
    bot_plan.write_text(plan)
    rollout = Rollout(bot_plan, supabase.operator)
    assert rollout("db", "seed", "--rows", "300").exit_code == 0
    api = PostgREST(supabase.api, supabase.roles["service_role"])
    service_role = supabase.roles["service_role"]
    seen: dict[str, set[bool]] = {}
    written: list[Moderation] = []
    blocked_once = False
    missed_once: set[str] = set()
    with psycopg.connect(supabase.operator, autocommit=True) as db:
        for round_ in range(1, 20):
            applied = rollout("apply")
            assert applied.exit_code == 0, applied.output
            for guild in GUILDS:
                done = moderate(api, guild, round_)
                check_both_shapes(db, done, service_role)
                written.append(done)
                for flag, on in done.new.items():
                    seen.setdefault(flag, set()).add(on)
            steps = states(rollout)
            if set(s["state"] for s in steps.values()) == {"done"}:
                break
            advanced = rollout("advance", "--all")
            assert advanced.exit_code == 0, advanced.output
            audit = states(rollout)["audit_fields"]
            if audit["state"] == "rolling_out" and audit["stage"].startswith("100%"):
                # the stage check: a row without its admin, written since the flag moved, holds the contract
                [(stray,)] = api("INSERT INTO admin_actions (server_id, user_id, admin_id, action_type) VALUES "
                                 "(%s, %s, %s, 'reject') RETURNING id", (written[0].guild, written[0].user, ADMIN))
                held = rollout("advance", "audit_fields")
                assert held.exit_code != 0 and "admin_actions_name_their_admin" in held.output, held.output
                db.execute("UPDATE admin_actions SET created_by = admin_id WHERE id = %s", (stray,))
                blocked_once = True
            for step, trigger, table, missed, check, mend in MISSED_CAPTURES:
                capture = states(rollout)[step]
                if capture["state"] == "rolling_out" and capture["stage"].startswith("100%") and step not in missed_once:
                    # a change the capture missed (its trigger off for a moment) holds the contract until mended
                    guild, user = db.execute("SELECT server_id, user_id FROM server_members "
                                             "ORDER BY server_id LIMIT 1").fetchone()  # the workload deletes some
                    db.execute("UPDATE servers SET settings = settings || jsonb_build_object('seen', %s::text) "
                               "WHERE guild_id = %s", (step, guild))  # captured: what the config-history check judges from
                    db.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.Identifier(table),
                                                                                 sql.Identifier(trigger)))
                    db.execute(missed, {"guild": guild, "user": user, "admin": ADMIN})
                    db.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(sql.Identifier(table),
                                                                                sql.Identifier(trigger)))
                    held = rollout("advance", step)
                    assert held.exit_code != 0 and check in held.output, held.output
                    db.execute(mend, {"guild": guild})
                    missed_once.add(step)
        else:
            raise AssertionError(f"the plan did not finish: {states(rollout)}")
        assert blocked_once and missed_once == {step for step, *_ in MISSED_CAPTURES}
        # each flag's old and new shapes were both in use at once, in different guilds
        for flag in ("messages_write", "audit_fields_write", "config_history_capture", "audit_log_capture",
                     "soft_delete", *ENUMS):
            assert seen[flag] == {False, True}, (flag, seen[flag])

        # after the contracts: what the old bot wrote reads as the new shape, through the API too
        for flag, (table, column, old, label) in ENUMS.items():
            assert db.execute(sql.SQL("SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = "
                                      "{}::regclass AND attname = {}").format(sql.Literal(table), sql.Literal(column))
                              ).fetchone()[0] != "text"
            legacy = [m for m in written if not m.new[flag]]
            ids = [{"detection_events": m.detection, "verification_events": m.case,
                    "admin_actions": m.action}[table] for m in legacy]
            assert legacy and api(sql.SQL("SELECT DISTINCT {}::text FROM {} WHERE id = ANY(%s)").format(
                sql.Identifier(column), sql.Identifier(table)), (ids,)) == [(label,)]
        first = written[0]
        rounds = sum(1 for m in written if m.guild == first.guild)
        assert api("SELECT get_recent_message_count(u, %s, 86400) FROM (SELECT DISTINCT user_id AS u FROM "
                   "detection_events WHERE server_id = %s) AS t", (first.guild, first.guild)) == [(1,)] * rounds
        # the old bot's values are refused now, with a clear error
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            api("UPDATE admin_actions SET action_type = 'kick' WHERE id = %s", (first.action,))
        # the API's roles reach the flag functions and nothing else of rollout
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            api("SELECT * FROM rollout.flags", role=supabase.roles["anon"])
        for table in db.execute("SELECT c.oid::regclass::text FROM pg_class AS c WHERE c.relname LIKE '\\_rollout\\_%' "
                                "AND c.relkind = 'r'").fetchall():
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                api(sql.SQL("SELECT * FROM {}").format(sql.SQL(table[0])), role=supabase.roles["anon"])
