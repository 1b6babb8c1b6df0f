"""An environment's starting point: the bootstrap schema for an empty database, and sample data."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime

import pglast
import psycopg
from pglast import ast
from psycopg import sql

from . import bulk_load, state
from .errors import StepFailed, UsageError, describe_error
from .migrations import YOYO_TABLES
from .session import Session


def bootstrap_if_empty(session: Session) -> None:
    """Apply the environment's `bootstrap:` SQL once, and only to a database without tables."""
    env = session.plan.environment(session.env)
    if env.bootstrap is None or state.get_meta(session.conn, "bootstrap") is not None:
        return
    path = os.path.join(session.plan.directory, env.bootstrap)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    tables = session.conn.execute(
        """
        SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm') AND c.relname <> ALL (%s)
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'rollout') AND n.nspname NOT LIKE 'pg\\_%%'
        """,
        (list(YOYO_TABLES),),  # rollout's own (yoyo's) do not make a database "not empty"
    ).fetchone()[0]
    record = {"file": env.bootstrap, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    with session.conn.transaction():
        if tables:
            state.set_meta(session.conn, "bootstrap", {**record, "skipped": f"database already had {tables} tables"})
            session.record("bootstrap.skipped", f"bootstrap {env.bootstrap} skipped: the database already has "
                           f"{tables} tables, so it is taken as the starting point")
            return
        _run_file(session, env.bootstrap, text)
        state.set_meta(session.conn, "bootstrap", record)
        session.record("bootstrap", f"applied bootstrap {env.bootstrap} to the empty database")


def seed(session: Session, rows: int) -> None:
    """Run the environment's `seed:` SQL with current_setting('rollout.seed_rows') = rows."""
    env = session.plan.environment(session.env)
    if env.seed is None:
        raise UsageError(f"environment {session.env!r} declares no 'seed:' file in {session.plan.path}")
    bootstrap_if_empty(session)
    applied = sorted(step for step, current in state.step_states(session.conn, session.env).items()
                     if current.state != state.PENDING)
    if applied:
        reset = "`rollout db reset --yes`, then " if env.database == "embedded" else "start from a fresh database, then "
        raise UsageError(f"{env.seed} fills the bootstrap schema, but steps have changed it here already "
                         f"({', '.join(applied[:3])}{', ...' if len(applied) > 3 else ''}): {reset}`rollout db seed`")
    with open(os.path.join(session.plan.directory, env.seed), encoding="utf-8") as handle:
        text = handle.read()
    with session.conn.transaction():
        session.conn.execute("SELECT set_config('rollout.seed_rows', %s, true)", (str(rows),))
        aside = bulk_load.set_aside(session.conn)  # as PostgreSQL's manual advises for a bulk load
        _run_seed(session, env.seed, text)
        started = time.monotonic()
        try:
            bulk_load.rebuild(session.conn, aside)
        except psycopg.Error as exc:  # the rows break a key
            raise StepFailed(f"{env.seed} wrote rows the schema refuses once its keys and indexes are rebuilt: "
                             f"{describe_error(exc)}. Fix the file and run the same command again (nothing of it "
                             "was kept)") from None
        if aside.foreign_keys or aside.indexes:
            _progress(session, f"seed: {len(aside.indexes)} indexes and {len(aside.foreign_keys)} foreign keys "
                               f"rebuilt over the new rows ({time.monotonic() - started:.1f} s)")
        session.record("seed", f"seeded sample data from {env.seed} (rollout.seed_rows = {rows:,})", detail={"rows": rows})


def _run_seed(session: Session, name: str, text: str) -> None:
    """Run the seed file statement by statement (one transaction all the same), showing each
    table it fills as it goes: a million-row seed takes a while, and silence looks like a hang."""
    try:
        pieces = pglast.split(text, with_parser=True, only_slices=True)
    except pglast.parser.ParseError:
        pieces = [slice(0, len(text))]  # PostgreSQL's own error will name the line
    for piece in pieces:
        started = time.monotonic()
        rowcount = _run_file(session, name, text, piece)
        written = _written(text[piece], rowcount)
        if written and rowcount > 0:
            _progress(session, f"seed: {written} ({time.monotonic() - started:.1f} s)")


def _progress(session: Session, message: str) -> None:
    session.report(state.Event(at=datetime.now().astimezone(), env=session.env, actor=session.actor, kind="seed",
                               message=message))


def _written(statement: str, rowcount: int) -> str | None:
    """What an INSERT or UPDATE did, e.g. 'users +4,000 rows'; None for other statements."""
    try:
        node = pglast.parse_sql(statement)[0].stmt
    except pglast.parser.ParseError:  # syntax newer than pglast's parser: PostgreSQL ran it
        return None
    if isinstance(node, ast.InsertStmt):
        return f"{node.relation.relname} +{rowcount:,} rows"
    if isinstance(node, ast.UpdateStmt):
        return f"{node.relation.relname}: {rowcount:,} rows updated"
    return None


def _run_file(session: Session, name: str, text: str, piece: slice | None = None) -> int:
    """Run a bootstrap or seed file, or the `piece` of it; PostgreSQL's error names the file and
    its line. Returns the rows the last statement touched."""
    piece = piece or slice(0, len(text))
    try:
        return session.conn.execute(sql.SQL(text[piece])).rowcount  # noqa: S608 - the plan's own file
    except psycopg.Error as exc:
        raise StepFailed(f"{name} failed: {describe_error(exc, text, piece.start)}. Fix the file and run the "
                         "same command again (nothing of it was kept)") from None
