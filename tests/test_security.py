"""Least privilege and secrets: the application's role reads and evaluates but never writes
rollout's state; a password in a DSN appears nowhere rollout writes."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
flags:
  notes_write: {description: the application writes notes, default: 50}
steps:
  - id: notes
    title: notes
    priority: high
    flag: notes_write
    rollout: {stages: [50, 100]}
    migrate: steps/notes
    backfills:
      - {name: fill, table: notes, set: {body: "'x'"}, where: body IS NULL}
    verify:
      - {name: filled, sql: SELECT id FROM notes WHERE body IS NULL}
"""
FILES = {
    "steps/notes/notes_01.sql": "CREATE TABLE notes (id int PRIMARY KEY, body text);\n"
                                "INSERT INTO notes SELECT g FROM generate_series(1, 50) AS g;\n",
    "steps/notes/notes_01.rollback.sql": "DROP TABLE notes;\n",
}


@pytest.fixture
def app_role(server, dsn):
    """The application's own role: it can log in, and nothing more was granted to it."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield role, make_conninfo(dsn, user=role)
    with psycopg.connect(dsn, autocommit=True) as owner:
        owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_application_role_reads_and_evaluates_but_cannot_write(tmp_path, dsn, app_role):
    role, app_dsn = app_role
    operator = Rollout(write_plan(tmp_path, PLAN, FILES), dsn)
    assert operator("apply").exit_code == 0
    with psycopg.connect(app_dsn, autocommit=True) as app:
        assert app.execute("SELECT current_user").fetchone()[0] == role
        assert app.execute("SELECT rollout.is_enabled('notes_write', '42') IS NOT NULL").fetchone()[0]
        assert app.execute("SELECT state FROM rollout.steps WHERE step_id = 'notes'").fetchone()[0] == "rolling_out"
        assert app.execute("SELECT count(*) FROM rollout.events").fetchone()[0] > 0
        for statement in ("UPDATE rollout.flags SET percent = 100",
                          "INSERT INTO rollout.flags (env, name, enabled, percent, updated_by) VALUES ('local', 'x', true, 1, 'me')",
                          "UPDATE rollout.steps SET state = 'done'",
                          "DELETE FROM rollout.flag_history",
                          "INSERT INTO rollout.events (env, actor, kind, message) VALUES ('local', 'me', 'x', 'forged')",
                          "UPDATE rollout.backfills SET requested = 'cancel'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
    app_cli = Rollout(operator.plan, app_dsn)
    denied = app_cli("flags", "set", "notes_write", "off")
    assert denied.exit_code == 2 and "permission denied for table" in denied.output
    assert "this database role may not do that" in denied.output
    assert "Traceback" not in denied.output
    assert app_cli("status").exit_code == 0 and app_cli("flags", "list").exit_code == 0
    assert operator("flags", "set", "notes_write", "off").exit_code == 0


def test_a_password_never_appears_in_output_events_or_logs(tmp_path, server, password_role):
    role, password, url_with = password_role
    path = write_plan(tmp_path, PLAN, FILES)
    rollout = Rollout(path, url_with(password))
    commands = [
        ["check"], ["schema"], ["plan"], ["plan", "--json"], ["apply"], ["status"], ["status", "--json"],
        ["verify"], ["verify", "notes"], ["events"], ["events", "--json"], ["flags", "list"],
        ["flags", "get", "notes_write", "--subject", "7"], ["flags", "set", "notes_write", "on", "--reason", "r"],
        ["flags", "history", "notes_write"], ["advance", "--all"], ["advance", "notes"], ["abort", "notes"],
        ["backfill", "status"], ["backfill", "status", "notes", "--json"], ["backfill", "pause", "notes"],
        ["backfill", "resume", "notes"], ["backfill", "cancel", "notes"], ["backfill", "run", "notes"],
        ["rollback", "notes"], ["db", "seed", "--rows", "1"], ["apply", "nope"],
    ]
    for args in commands:
        result = rollout(*args)
        assert password not in result.output, args
        assert "Traceback" not in result.output, (args, result.output)
    wrong = Rollout(path, url_with("not-" + password))("apply")
    assert wrong.exit_code == 2 and password not in wrong.output
    with psycopg.connect(url_with(password), autocommit=True) as db:
        stored = db.execute("SELECT string_agg(t::text, ' ') FROM rollout.events AS t").fetchone()[0]
        stored += db.execute("SELECT coalesce(string_agg(t::text, ' '), '') FROM rollout.runs AS t").fetchone()[0]
    assert password not in stored
    for log in Path(server.data_dir).parent.glob("**/log"):
        if log.is_file():
            assert password not in log.read_text(errors="replace")


def test_the_application_role_cannot_take_the_environment_lock_or_keep_operators_out(tmp_path, dsn, app_role):
    """The environment lock is a table lock only the operator role may take: the application's role
    is refused it, and whatever it holds (every lock it may take on rollout's objects, an advisory
    lock on any key) leaves the operator free to work."""
    from orchestrator.errors import PermissionDenied
    from orchestrator.locks import acquire_env_lock, env_lock_table

    role, app_dsn = app_role
    operator = Rollout(write_plan(tmp_path, PLAN, FILES), dsn)
    assert operator("apply").exit_code == 0
    table = sql.Identifier("rollout", env_lock_table("local"))
    with psycopg.connect(app_dsn, autocommit=True) as app:
        for mode in ("ACCESS SHARE", "ROW SHARE", "EXCLUSIVE", "ACCESS EXCLUSIVE"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
                app.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(table, sql.SQL(mode)))
        with pytest.raises(PermissionDenied, match="may not take environment 'local'"):
            acquire_env_lock(app, "local")
        app.execute("BEGIN")  # the application's role holds what it can: the tables it may read, advisory keys
        app.execute("LOCK TABLE rollout.steps, rollout.flags IN ACCESS SHARE MODE")
        app.execute("SELECT pg_advisory_lock(k) FROM generate_series(-100, 100) AS k")
        result = operator("rollback", "notes", "--yes")
        assert result.exit_code == 0, result.output
        app.execute("ROLLBACK")
    result = Rollout(operator.plan, app_dsn)("apply")
    assert result.exit_code == 2 and "may not" in result.output and "Traceback" not in result.output


def test_the_application_role_runs_the_flag_server_once_the_flags_are_stored(tmp_path, dsn, app_role):
    from .test_flag_server import Served

    role, app_dsn = app_role
    operator = Rollout(write_plan(tmp_path, PLAN, FILES), dsn)
    assert operator("apply").exit_code == 0  # stores the flags: from now on the server only reads
    server = Served(operator.plan, app_dsn)
    try:
        status, _, answer = server.evaluate("notes_write", "42")
        with psycopg.connect(app_dsn, autocommit=True) as app:
            in_sql = app.execute("SELECT rollout.is_enabled('notes_write', '42')").fetchone()[0]
        assert status == 200 and answer["value"] is in_sql, answer
        metrics = server.request("GET", "/metrics", key=None)[2].decode()
        assert 'rollout_step_state{state="rolling_out",step="notes"} 1.0' in metrics
    finally:
        server.process.terminate()  # systemd's stop: a clean end, not an interruption
        output, _ = server.process.communicate(timeout=30)
    assert server.process.returncode == 0 and "stopped serving the flags of local" in output, output


def test_the_bot_plan_runs_under_a_role_with_supabases_attributes(server, bot_plan):
    """Supabase's operator role, `postgres`, is no superuser: NOSUPERUSER, CREATEROLE, CREATEDB,
    owner of the bot's tables, member of the predefined roles Supabase grants it. The whole bot
    plan (seed, preview, apply through every stage and contract with its backups, verify,
    rollback of every step) runs as such a role."""
    from .test_bot_plan import run_the_bot_plan

    role, database = f"supa_{uuid.uuid4().hex[:8]}", f"supa_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE CREATEDB").format(sql.Identifier(role)))
        for predefined in ("pg_monitor", "pg_read_all_data", "pg_signal_backend"):
            admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(predefined), sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
    dsn = make_conninfo(server.url(database), user=role)
    try:
        with psycopg.connect(dsn, autocommit=True) as db:
            assert db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
            run_the_bot_plan(Rollout(bot_plan, dsn), db)
    finally:
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_blocker_of_another_role_is_named_without_its_hidden_query(server, tmp_path):
    """Without pg_read_all_stats PostgreSQL hides other roles' sessions: the lock report says so,
    and still names the session, instead of failing or printing nothing."""
    from .test_apply import FILES as WIDGET_FILES, PLAN as WIDGET_PLAN

    role, database = f"plain_{uuid.uuid4().hex[:8]}", f"plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEDB").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
    try:
        widgets = Rollout(write_plan(tmp_path, WIDGET_PLAN.format(budget="600ms"), WIDGET_FILES),
                          make_conninfo(server.url(database), user=role))
        assert widgets("apply").exit_code == 0
        with psycopg.connect(server.url(database)) as blocker:  # the superuser: a session this role cannot see
            pid = blocker.info.backend_pid
            blocker.execute("LOCK TABLE widgets IN ACCESS SHARE MODE")
            result = widgets("rollback", "widgets")
            blocker.rollback()
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert (f"blocked by pid {pid}" in result.output
                and "its query is hidden from this role" in result.output), result.output
    finally:
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
