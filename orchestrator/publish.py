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
`app.actor` when an application sets it (SET LOCAL), else the request header or JWT claim the
plan's `actor:` names (PostgREST passes both as transaction settings, and supabase-js can send
a header but cannot run SET LOCAL), else `fallback`.

The published shape is recorded in rollout.meta ('flags_api', 'actor'); a command that holds
the environment lock brings the database in line with the plan, and takes it back when the
plan drops a setting.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from . import state
from .errors import UsageError
from .plan import Plan
from .plan_parts import FlagsApi

_NAMES = ("rollout_is_enabled", "rollout_flags")
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
    from_request = [setting.format(sql.Literal("request.headers"), sql.Literal(actor.header))] if actor.header else []
    from_request += [setting.format(sql.Literal("request.jwt.claims"), sql.Literal(actor.claim))] if actor.claim else []
    with conn.transaction():
        conn.execute(sql.SQL(
            "CREATE OR REPLACE FUNCTION rollout.actor(fallback text DEFAULT NULL) RETURNS text LANGUAGE sql STABLE "
            "PARALLEL SAFE AS $$ SELECT coalesce({}) $$").format(sql.SQL(", ").join([
                sql.SQL("nullif(current_setting('app.actor', true), '')"), *from_request, sql.SQL("fallback")])))
        conn.execute("GRANT EXECUTE ON FUNCTION rollout.actor(text) TO PUBLIC")
        sources = ["app.actor", *([f"the request header {actor.header}"] if actor.header else []),
                   *([f"the JWT claim {actor.claim}"] if actor.claim else []), "the fallback"]
        conn.execute(sql.SQL("COMMENT ON FUNCTION rollout.actor(text) IS {}").format(
            sql.Literal("who acts: " + ", else ".join(sources) + " (actor: in rollout.yaml)")))
        state.set_meta(conn, "actor", desired)


def _sync_flags_api(conn: psycopg.Connection, plan: Plan, env: str) -> None:
    """Publish, change or withdraw the flag functions as the environment's `flags_api` says."""
    wanted = plan.environment(env).flags_api
    desired = _recorded_form(wanted, env)
    recorded = state.get_meta(conn, "flags_api")
    if recorded == desired and (wanted is None or not _public_reads(conn)):
        return
    with conn.transaction():
        if recorded:
            _withdraw(conn, recorded)
        if wanted is None:
            conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA rollout TO PUBLIC")  # the default: readable state
        else:
            _publish(conn, wanted, env)
        state.set_meta(conn, "flags_api", desired)


def _recorded_form(api: FlagsApi | None, env: str) -> dict | None:
    if api is None:
        return None
    return {"schema": api.in_schema, "roles": list(api.roles), "readers": list(api.readers), "env": env}


def _public_reads(conn: psycopg.Connection) -> bool:
    """Whether PUBLIC may read rollout's tables again (a schema upgrade grants it)."""
    return conn.execute("SELECT has_table_privilege('public', 'rollout.events', 'SELECT')").fetchone()[0]


def _function(schema: str, name: str) -> sql.Composable:
    return sql.SQL("{}.{}{}").format(sql.Identifier(schema), sql.Identifier(name), sql.SQL(_SIGNATURES[name]))


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
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(function))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(function, roles))
        conn.execute(sql.SQL("COMMENT ON FUNCTION {} IS {}").format(function, sql.Literal(
            f"published by rollout for environment {env} (flags_api in rollout.yaml): evaluates like "
            "rollout.is_enabled")))
    conn.execute("REVOKE SELECT ON ALL TABLES IN SCHEMA rollout FROM PUBLIC")
    if api.readers:
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA rollout TO {}").format(
            sql.SQL(", ").join(map(sql.Identifier, api.readers))))


def _withdraw(conn: psycopg.Connection, recorded: dict) -> None:
    """Drop what an earlier publication made, and take back its readers' grants."""
    for name in _NAMES:
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}").format(_function(recorded["schema"], name)))
    for reader in recorded.get("readers", []):
        if conn.execute("SELECT to_regrole(%s) IS NOT NULL", (f'"{reader}"',)).fetchone()[0]:
            conn.execute(sql.SQL("REVOKE SELECT ON ALL TABLES IN SCHEMA rollout FROM {}").format(
                sql.Identifier(reader)))
