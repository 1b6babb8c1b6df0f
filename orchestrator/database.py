"""Which database a command talks to, connecting to it, and keeping passwords out of output."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from . import embedded
from .errors import DatabaseUnavailable, UsageError
from .plan import Plan


@dataclass(frozen=True)
class Target:
    """An environment's database: how to reach it, and how to show it without its password."""

    env: str
    conninfo: str
    embedded: bool

    @property
    def display(self) -> str:
        return mask(self.conninfo)

    @property
    def password(self) -> str | None:
        try:
            return conninfo_to_dict(self.conninfo).get("password") or os.environ.get("PGPASSWORD")
        except psycopg.ProgrammingError:
            return None

    def secrets(self) -> set[str]:
        """Every form the password may take in a message: as parsed, and as written in a DSN
        libpq could not parse (a URL whose password holds a bare '%'), decoded or not."""
        found = {self.password or "", os.environ.get("PGPASSWORD", "")}
        for pattern in _PASSWORD_PATTERNS:
            for match in pattern.finditer(self.conninfo):
                raw = match.group(1).strip("'")
                found |= {raw, unquote(raw)}
        return {s for s in found if s}

    def scrub(self, text: str) -> str:
        """Remove the password from any text bound for output."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


_PASSWORD_PATTERNS = (re.compile(r"://[^:/@\s]*:([^@\s]*)@"), re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)"))


def mask(conninfo: str) -> str:
    """user@host:port/dbname, never the password; works for URLs and key=value strings."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    user = parts.get("user", "")
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    secret = ":***" if parts.get("password") else ""
    return f"postgresql://{user}{secret}@{host}:{port}/{parts.get('dbname', '')}"


def resolve_target(plan: Plan, env_name: str, dsn: str | None = None, *, start: bool = True) -> Target:
    """The database of `env_name`: --dsn when given, else the embedded server or $dsn_env."""
    env = plan.environment(env_name)
    if dsn is not None and not dsn.strip():  # `--dsn "$UNSET"`: never fall back to another database
        raise UsageError(f"--dsn is empty; name the database (postgresql://USER:PASSWORD@HOST:PORT/DBNAME), or leave "
                         f"--dsn out to use environment {env_name!r}'s own")
    if dsn:
        return Target(env_name, dsn, embedded=False)
    if env.is_fleet:
        raise UsageError(f"environment {env_name!r} is a fleet: name the database to act on (--target NAME), or use a "
                         "command that acts on the whole fleet (apply, advance, flags set, abort, status, events)")
    if env.database == "embedded":
        info = embedded.start(plan.directory) if start else embedded.running(plan.directory)
        if info is None:
            raise DatabaseUnavailable(f"the embedded server of {env_name!r} is not running; start it with `rollout db start`")
        _ensure_database(info, env_name)
        return Target(env_name, info.url(env_name), embedded=True)
    value = os.environ.get(env.dsn_env or "")
    if not value:
        raise UsageError(
            f"environment {env_name!r} reads its DSN from ${env.dsn_env}, which is not set; "
            f"export {env.dsn_env}=postgresql://USER:PASSWORD@HOST:PORT/DBNAME or pass --dsn"
        )
    return Target(env_name, value, embedded=False)


def connect(target: Target, purpose: str = "rollout") -> psycopg.Connection:
    """An autocommit connection (transactions are explicit), or a clear DatabaseUnavailable."""
    try:
        # prepare_threshold=None: no automatic server-side prepared statements, which a transaction-mode
        # pooler hands to whichever server session runs the next transaction (the kill switch and
        # stage moves work through one)
        return psycopg.connect(
            target.conninfo, autocommit=True, connect_timeout=10, application_name=f"{purpose} [{target.env}]"[:63],
            prepare_threshold=None,
        )
    except psycopg.Error as exc:
        reason = " ".join(target.scrub(str(exc)).split()) or type(exc).__name__  # every line: the first says why
        raise DatabaseUnavailable(
            f"cannot connect to environment {target.env!r} at {target.display}: {reason}. "
            "Check that the server is up and the DSN (user, password, host, database) is right."
        ) from None


def _ensure_database(info: embedded.ServerInfo, name: str) -> None:
    """Each embedded environment gets a database of its own name on the shared server."""
    with psycopg.connect(info.url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another command created it first


def drop_database(plan: Plan, env_name: str) -> None:
    """Drop an embedded environment's database (it is recreated empty on next use)."""
    info = embedded.start(plan.directory)
    with psycopg.connect(info.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(env_name)))
