"""What the plan publishes into the database for applications: the flag functions where an
HTTP API sees them (PostgREST, Supabase's API), and rollout.actor(), who acts.

PostgREST exposes a few schemas (Supabase: `public`), not `rollout`, and runs each request as
the request's role (`anon`, `authenticated`, `service_role`). With `flags_api` in an
environment, rollout creates in the exposed schema:

    rollout_is_enabled(flag text, subject text) -> boolean            supabase.rpc('rollout_is_enabled', ...)
    rollout_flags(subject text) -> TABLE (flag text, enabled boolean)  every flag of the environment

SECURITY DEFINER with a fixed search_path (they run as the operator, and no caller can
redirect a name they use), EXECUTE granted to the plan's roles only, answering through
rollout.is_enabled (the one SQL evaluator). Nothing else of rollout becomes reachable: in this
mode rollout's tables are no longer readable by PUBLIC, only by the operator and the plan's
`readers`; rollout.is_enabled stays callable by every role (it is SECURITY DEFINER too, so the
plan's own triggers keep evaluating flags for any writer).

rollout.actor(fallback) says who acts, for audit columns and captures: the session's
`app.actor` when an application sets it (SET LOCAL), else the JWT claim, else the request
header the plan's `actor:` names (PostgREST passes both as transaction settings, and
supabase-js can send a header but cannot run SET LOCAL), else `fallback`.

The published shape is recorded in rollout.meta ('flags_api', 'actor'); a command that holds
the environment lock brings the database in line with the plan, and takes it back when the
plan drops a setting.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from . import state
from .errors import UsageError, describe_error
from .migrations import YOYO_TABLES
from .plan import Plan
from .plan_parts import FlagsApi

_NAMES = ("rollout_is_enabled", "rollout_flags")
_MARK = "published by rollout"  # the comment that tells rollout's functions from the application's
_SIGNATURES = {"rollout_is_enabled": "(text, text)", "rollout_flags": "(text)"}


def sync(conn: psycopg.Connection, plan: Plan, env: str) -> None:
    """Bring rollout.actor() and the flag functions in line with the plan. Call with the
    environment lock held."""
    _sync_actor(conn, plan)
    _sync_flags_api(conn, plan, env)


def _sync_actor(conn: psycopg.Connection, plan: Plan) -> None:
    actor = plan.model.actor
    desired = {"header": actor.header, "claim": actor.claim}
    if state.get_meta(conn, "actor") == desired:
        return
    # an empty value says nothing, as an empty app.actor does
    setting = sql.SQL("nullif(nullif(current_setting({}, true), '')::jsonb ->> {}, '')")
    # the JWT's claim before the header: PostgREST verified the token, and any client can send a header
    from_request = [setting.format(sql.Literal("request.jwt.claims"), sql.Literal(actor.claim))] if actor.claim else []
    from_request += [setting.format(sql.Literal("request.headers"), sql.Literal(actor.header))] if actor.header else []
    with conn.transaction():
        conn.execute(sql.SQL(
            "CREATE OR REPLACE FUNCTION rollout.actor(fallback text DEFAULT NULL) RETURNS text LANGUAGE sql STABLE "
            "PARALLEL SAFE AS $$ SELECT coalesce({}) $$").format(sql.SQL(", ").join([
                sql.SQL("nullif(current_setting('app.actor', true), '')"), *from_request, sql.SQL("fallback")])))
        sources = ["app.actor", *([f"the JWT claim {actor.claim}"] if actor.claim else []),
                   *([f"the request header {actor.header}"] if actor.header else []), "the fallback"]
        conn.execute(sql.SQL("COMMENT ON FUNCTION rollout.actor(text) IS {}").format(
            sql.Literal("who acts: " + ", else ".join(sources) + " (actor: in rollout.yaml)")))
        state.set_meta(conn, "actor", desired)


def _sync_flags_api(conn: psycopg.Connection, plan: Plan, env: str) -> None:
    """Publish the flag functions and keep rollout's state private, as the environment's
    `flags_api` says, on every run that holds the environment (so a hand-made grant, a schema
    upgrade's or a default privilege's, does not last); or withdraw an earlier publication."""
    wanted = plan.environment(env).flags_api
    desired = _recorded_form(wanted, env)
    recorded = state.get_meta(conn, "flags_api")
    if wanted is None and recorded is None:
        return
    try:
        with conn.transaction():
            if recorded and recorded != desired:
                _withdraw(conn, recorded)
            if wanted is None:
                for table in _state_tables(conn):  # the default: the state readable by every role
                    conn.execute(sql.SQL("GRANT SELECT ON {} TO PUBLIC").format(table))
            else:
                _publish(conn, wanted, env)
            state.set_meta(conn, "flags_api", desired)
    except psycopg.Error as exc:
        raise UsageError(f"environment {env!r}: flags_api could not be {'applied' if wanted else 'withdrawn'}: "
                         f"{describe_error(exc)}") from None


def _recorded_form(api: FlagsApi | None, env: str) -> dict | None:
    if api is None:
        return None
    return {"schema": api.in_schema, "roles": list(api.roles), "readers": list(api.readers), "env": env}


def _function(schema: str, name: str) -> sql.Composable:
    return sql.SQL("{}.{}{}").format(sql.Identifier(schema), sql.Identifier(name), sql.SQL(_SIGNATURES[name]))


def _state_tables(conn: psycopg.Connection) -> list[sql.Composable]:
    """rollout's tables and yoyo's bookkeeping (which lives in the application's schema)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND (n.nspname = 'rollout' OR c.oid IN (SELECT to_regclass(t) "
        "FROM unnest(%s::text[]) AS t))", (list(YOYO_TABLES),)).fetchall()
    return [sql.Identifier(schema, name) for schema, name in rows]


def _grantees(conn: psycopg.Connection, acl_query: str, target: str) -> list[sql.Composable]:
    """Every role but the owner that holds a privilege on the object, PUBLIC as PUBLIC."""
    return [sql.SQL("PUBLIC") if role is None else sql.Identifier(role)
            for (role,) in conn.execute(acl_query, (target,)).fetchall()]


_TABLE_GRANTEES = ("SELECT DISTINCT r.rolname FROM pg_class AS c, aclexplode(c.relacl) AS a LEFT JOIN pg_roles AS r "
                   "ON r.oid = a.grantee WHERE c.oid = %s::regclass AND a.grantee <> c.relowner")
_FUNCTION_GRANTEES = ("SELECT DISTINCT r.rolname FROM pg_proc AS p, aclexplode(coalesce(p.proacl, acldefault('f', "
                      "p.proowner))) AS a LEFT JOIN pg_roles AS r ON r.oid = a.grantee "
                      "WHERE p.oid = %s::regprocedure AND a.grantee <> p.proowner")


def _publish(conn: psycopg.Connection, api: FlagsApi, env: str) -> None:
    schema, literal_env = api.in_schema, sql.Literal(env)
    missing = [role for role in (*api.roles, *api.readers)
               if not conn.execute("SELECT to_regrole(%s) IS NOT NULL", (f'"{role}"',)).fetchone()[0]]
    if missing:
        raise UsageError(f"environment {env!r}: flags_api names the role {missing[0]!r}, which this database does "
                         "not have; create it, or name the roles that exist (Supabase: anon, authenticated, "
                         "service_role)")
    if not conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (f'"{schema}"',)).fetchone()[0]:
        raise UsageError(f"environment {env!r}: flags_api.schema is {schema!r}, which this database does not have; "
                         "name the schema the API exposes (Supabase: public)")
    for name in _NAMES:  # never take over a function of the application's
        signature = f'"{schema}".{name}{_SIGNATURES[name]}'
        comment = conn.execute("SELECT coalesce(obj_description(to_regprocedure(%s), 'pg_proc'), '') "
                               "WHERE to_regprocedure(%s) IS NOT NULL", (signature, signature)).fetchone()
        if comment is not None and not comment[0].startswith(_MARK):
            raise UsageError(f"environment {env!r}: {schema}.{name}{_SIGNATURES[name]} exists already and is not "
                             "rollout's; rename it, or publish into another schema (flags_api.schema)")
    header = sql.SQL("LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp")
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}.rollout_is_enabled(flag text, subject text) RETURNS boolean {} "
        "AS $$ SELECT rollout.is_enabled(flag, subject, {}) $$").format(sql.Identifier(schema), header, literal_env))
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}.rollout_flags(subject text) RETURNS TABLE (flag text, enabled boolean) {} "
        "AS $$ SELECT f.name, rollout.is_enabled(f.name, subject, f.env) FROM rollout.flags AS f "
        "WHERE f.env = {} ORDER BY f.name $$").format(sql.Identifier(schema), header, literal_env))
    roles = sql.SQL(", ").join(map(sql.Identifier, api.roles))
    for name in _NAMES:
        function = _function(schema, name)
        # PUBLIC's default EXECUTE, and Supabase's default privileges for its API roles, go first
        for grantee in _grantees(conn, _FUNCTION_GRANTEES, f'"{schema}".{name}{_SIGNATURES[name]}'):
            conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM {}").format(function, grantee))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(function, roles))
        conn.execute(sql.SQL("COMMENT ON FUNCTION {} IS {}").format(function, sql.Literal(
            f"{_MARK} for environment {env} (flags_api in rollout.yaml): evaluates like rollout.is_enabled")))
    readers = sql.SQL(", ").join(map(sql.Identifier, api.readers))
    for table in _state_tables(conn):  # the state, and yoyo's bookkeeping, the operator's alone (and readers')
        _revoke_all(conn, table)
        if api.readers:
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(table, readers))
    for table in _kept_tables(conn):  # the originals operations keep for a rollback: the operator's alone
        _revoke_all(conn, table)


def _revoke_all(conn: psycopg.Connection, table: sql.Composable) -> None:
    for grantee in _grantees(conn, _TABLE_GRANTEES, table.as_string(conn)):
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(table, grantee))


def _kept_tables(conn: psycopg.Connection) -> list[sql.Composable]:
    """The tables operations create beside the application's (orchestrator/operations/names.py):
    originals kept for a rollback, which an API role that could write them would corrupt. The
    triggers that write them run as their owner, so no application role needs a grant."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND c.relname LIKE '\\_rollout\\_%' "
        "AND n.nspname NOT IN ('rollout', 'pg_catalog', 'information_schema')").fetchall()
    return [sql.Identifier(schema, name) for schema, name in rows]


def _withdraw(conn: psycopg.Connection, recorded: dict) -> None:
    """Drop what an earlier publication made (its readers' grants go with the next publication,
    or stay as PUBLIC's default)."""
    for name in _NAMES:
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}").format(_function(recorded["schema"], name)))
