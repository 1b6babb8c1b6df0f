"""Flags through an HTTP API (PostgREST, Supabase): with `flags_api`, rollout publishes
rollout_is_enabled and rollout_flags into the exposed schema, callable by the plan's roles only,
answering as rollout.is_enabled does; nothing else of rollout becomes readable by those roles.
The application side runs as PostgREST runs a request: a transaction, SET LOCAL ROLE, the
request's settings as transaction-local, no search_path of its own."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg import sql

from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local:
    database: embedded
    API
flags:
  wide: {description: the new shape, default: 30, include: [team-guild], exclude: [grumpy-guild]}
  calm: {description: fully on, default: on}
steps: []
"""


@pytest.fixture
def roles(server, dsn):
    """Supabase's API roles (NOLOGIN: PostgREST switches to them), another role, and a reader."""
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"{kind}_{suffix}" for kind in ("anon", "authenticated", "other", "reader")}
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        for name in names.values():
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    yield names
    with psycopg.connect(dsn, autocommit=True) as owner:
        for name in names.values():
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        for name in names.values():
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_request(dsn: str, role: str, query: str, params=(), headers: dict | None = None):
    """One PostgREST request: BEGIN; SET LOCAL ROLE; the request's settings; the query; COMMIT."""
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT set_config('request.headers', %s, true), set_config('request.jwt.claims', %s, true)",
                     (json.dumps(headers or {}), json.dumps({"role": role})))
        return conn.execute(query, params).fetchall()


def test_the_api_roles_evaluate_flags_and_read_nothing_else(tmp_path, dsn, db, roles):
    api = (f"flags_api: {{schema: public, roles: [{roles['anon']}, {roles['authenticated']}], "
           f"readers: [{roles['reader']}]}}")
    rollout = Rollout(write_plan(tmp_path, PLAN.replace("API", api)), dsn)
    applied = rollout("apply")
    assert applied.exit_code == 0, applied.output
    subjects = ["team-guild", "grumpy-guild"] + [str(1_090_000_000_000_000_000 + i * 104_729) for i in range(5000)]
    expected = db.execute("SELECT array_agg(rollout.is_enabled('wide', s) ORDER BY n) "
                          "FROM unnest(%s::text[]) WITH ORDINALITY AS t (s, n)", (subjects,)).fetchone()[0]
    for role in (roles["anon"], roles["authenticated"]):
        served = as_request(dsn, role, "SELECT array_agg(public.rollout_is_enabled('wide', s) ORDER BY n) "
                                       "FROM unnest(%s::text[]) WITH ORDINALITY AS t (s, n)", (subjects,))[0][0]
        assert served == expected and served[:2] == [True, False]
        assert as_request(dsn, role, "SELECT * FROM public.rollout_flags('team-guild')") == [("calm", True),
                                                                                            ("wide", True)]
    # nothing else: rollout's tables are neither readable nor writable by the API's roles
    for statement in ("SELECT * FROM rollout.flags", "SELECT * FROM rollout.events", "SELECT * FROM rollout.steps",
                      "UPDATE rollout.flags SET percent = 100", "DELETE FROM rollout.flag_targets"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_request(dsn, roles["anon"], statement)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a role the plan does not name
        as_request(dsn, roles["other"], "SELECT public.rollout_is_enabled('wide', '42')")
    assert as_request(dsn, roles["reader"], "SELECT count(*) FROM rollout.flags") == [(2,)]
    definition = db.execute("SELECT prosecdef, proconfig FROM pg_proc WHERE oid = "
                            "'public.rollout_is_enabled(text, text)'::regprocedure").fetchone()
    assert definition == (True, ["search_path=pg_catalog, pg_temp"])
    # the plan drops the setting: the functions go, and rollout's state is readable as before
    rollout = Rollout(write_plan(tmp_path, PLAN.replace("API", "")), dsn)
    assert rollout("apply").exit_code == 0
    assert db.execute("SELECT to_regprocedure('public.rollout_is_enabled(text, text)')").fetchone() == (None,)
    assert as_request(dsn, roles["other"], "SELECT count(*) FROM rollout.flags") == [(2,)]


def test_default_privileges_like_supabases_do_not_open_the_functions_or_the_state(tmp_path, dsn, db, roles):
    """Supabase grants its API roles everything new in public by default privileges: the
    published functions and yoyo's bookkeeping (which lives in public) must not keep that."""
    for kind in ("FUNCTIONS", "TABLES"):
        db.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {} TO {}").format(
            sql.SQL(kind), sql.Identifier(roles["other"])))
    api = f"flags_api: {{schema: public, roles: [{roles['anon']}]}}"
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    step = ("steps:\n  - id: index\n    title: an index\n    priority: low\n    operations:\n"
            "      - {op: create_index, name: items_n, table: items, columns: [n]}\n")
    rollout = Rollout(write_plan(tmp_path, PLAN.replace("API", api).replace("steps: []\n", step)), dsn)
    assert rollout("apply").exit_code == 0  # its first migration creates yoyo's tables, in public
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_request(dsn, roles["other"], "SELECT public.rollout_is_enabled('wide', '42')")
    for statement in ("SELECT * FROM _yoyo_migration", "DELETE FROM _yoyo_migration", "SELECT * FROM rollout.flags"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_request(dsn, roles["other"], statement)
    assert as_request(dsn, roles["anon"], "SELECT public.rollout_is_enabled('calm', '42')") == [(True,)]
    # a function of the application's under the same name is never taken over
    db.execute("DROP FUNCTION public.rollout_flags(text)")
    db.execute("CREATE FUNCTION public.rollout_flags(subject text) RETURNS TABLE (flag text, enabled boolean) "
               "LANGUAGE sql AS $$ SELECT 'mine', true $$")
    refused = rollout("apply")
    assert refused.exit_code == 2 and "exists already and is not rollout's" in refused.output, refused.output
    for kind in ("FUNCTIONS", "TABLES"):
        db.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON {} FROM {}").format(
            sql.SQL(kind), sql.Identifier(roles["other"])))


def test_a_role_or_schema_the_database_lacks_is_named(tmp_path, dsn, db, roles):
    for api, message in (("flags_api: {roles: [no_such_role_x]}", "names the role 'no_such_role_x'"),
                         (f"flags_api: {{schema: api_v1, roles: [{roles['anon']}]}}", "flags_api.schema is 'api_v1'")):
        result = Rollout(write_plan(tmp_path, PLAN.replace("API", api)), dsn)("apply")
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert db.execute("SELECT to_regprocedure('public.rollout_is_enabled(text, text)')").fetchone() == (None,)


ACTOR = """\
version: 1
environments:
  local: {database: embedded}
actor: {header: x-actor, claim: sub}
steps:
  - id: notes
    title: notes that say who wrote them
    priority: high
    operations:
      - op: create_table
        table: notes
        columns:
          - {name: id, type: bigint, primary_key: true}
          - {name: created_by, type: text, not_null: true, default: "rollout.actor('bot')"}
"""


def test_the_actor_comes_from_the_session_the_request_header_or_the_jwt(tmp_path, dsn, db, roles):
    """supabase-js cannot SET LOCAL app.actor, but it can send a header, and PostgREST passes the
    JWT's claims: rollout.actor() takes app.actor, else the plan's claim (verified by PostgREST),
    else its header (any client can send one)."""
    assert Rollout(write_plan(tmp_path, ACTOR), dsn)("apply").exit_code == 0
    db.execute(sql.SQL("GRANT INSERT, SELECT ON notes TO {}").format(sql.Identifier(roles["anon"])))

    def written_by(key: int, headers: dict, claims: dict | None = None, session: str | None = None) -> str:
        with psycopg.connect(dsn) as conn:  # one PostgREST request, with the bot's settings
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(roles["anon"])))
            conn.execute("SELECT set_config('request.headers', %s, true), set_config('request.jwt.claims', %s, true)",
                         (json.dumps(headers), json.dumps(claims or {"role": roles["anon"]})))
            if session is not None:
                conn.execute("SELECT set_config('app.actor', %s, true)", (session,))
            return conn.execute("INSERT INTO notes (id) VALUES (%s) RETURNING created_by", (key,)).fetchone()[0]

    assert written_by(1, {"x-actor": "4242"}) == "4242"
    assert written_by(2, {}, {"sub": "user-77", "role": roles["anon"]}) == "user-77"
    assert written_by(3, {"x-actor": "4242"}, {"sub": "user-77"}) == "user-77"  # a verified claim before a header
    assert written_by(4, {"x-actor": "4242"}, session="app-9") == "app-9"  # a SQL session's app.actor first
    assert written_by(5, {"x-actor": ""}) == "bot"
    with psycopg.connect(dsn, autocommit=True) as plain:  # no request at all: the fallback
        assert plain.execute("SELECT rollout.actor('bot'), rollout.actor()").fetchone() == ("bot", None)
    # the plan names other sources: the next command that holds the environment redefines it
    Rollout(write_plan(tmp_path, ACTOR.replace("actor: {header: x-actor, claim: sub}", "actor: {claim: email}")),
            dsn)("apply")
    assert written_by(6, {"x-actor": "4242"}, {"email": "mod@example.org"}) == "mod@example.org"


def test_the_originals_an_operation_keeps_are_private_when_the_command_ends(tmp_path, dsn, db, roles):
    """Supabase's default privileges give its API roles every new table in public, the originals
    an operation keeps for a rollback included; the command that creates them takes that back
    before it lets go of the environment."""
    db.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {}").format(
        sql.Identifier(roles["anon"])))
    db.execute("CREATE TABLE scores (id int PRIMARY KEY, v numeric)")
    db.execute("INSERT INTO scores VALUES (1, 5), (2, 0.5)")
    plan = PLAN.replace("API", f"flags_api: {{schema: public, roles: [{roles['anon']}]}}").replace("steps: []", """\
steps:
  - id: cap
    title: scores at most 1
    priority: high
    operations:
      - {op: add_constraint, table: scores, name: v_at_most_1, check: v <= 1, remediation: {set: {v: "least(v, 1)"}}}
""")
    applied = Rollout(write_plan(tmp_path, plan), dsn)("apply")
    assert applied.exit_code == 0, applied.output
    assert db.execute("SELECT original FROM _rollout_originals_v_at_most_1").fetchall() == [({"v": 5},)]
    for statement in ("SELECT * FROM _rollout_originals_v_at_most_1", "DELETE FROM _rollout_originals_v_at_most_1"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_request(dsn, roles["anon"], statement)
