"""One embedded PostgreSQL server per test session; a fresh database per test; no mocks."""

from __future__ import annotations

import os
import shutil
import textwrap
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import make_conninfo

from orchestrator import embedded
from orchestrator.cli import cli

from . import pg15

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The session's server: the embedded PostgreSQL 18, or with ROLLOUT_TEST_POSTGRES=15 a
    PostgreSQL 15 cluster from the machine's binaries (the whole suite then runs on 15)."""
    if os.environ.get("ROLLOUT_TEST_POSTGRES") == "15":
        reason = pg15.unavailable()
        if reason:
            pytest.skip(f"ROLLOUT_TEST_POSTGRES=15, but {reason}")
        cluster = pg15.Cluster()
        yield cluster
        cluster.close()
        return
    home = tmp_path_factory.mktemp("pg")
    info = embedded.start(str(home))
    yield info
    embedded.stop(str(home))


@pytest.fixture
def own_server(tmp_path):
    """An embedded server of the test's own (with a database 'own'), for tests that crash it.
    Yields its folder, for embedded.start() to restart it, and its first ServerInfo."""
    home = tmp_path / "own"
    home.mkdir()
    info = embedded.start(str(home))
    with psycopg.connect(info.url("postgres"), autocommit=True) as admin:
        admin.execute("CREATE DATABASE own")
    yield home, info
    embedded.stop(str(home))


@pytest.fixture(scope="session")
def server_15():
    """A PostgreSQL 15 cluster for the tests that must also pass on the bot's version."""
    reason = pg15.unavailable()
    if reason:
        pytest.skip(reason)
    cluster = pg15.Cluster()
    yield cluster
    cluster.close()


def pytest_report_header(config):
    version = "PostgreSQL 15 (machine)" if os.environ.get("ROLLOUT_TEST_POSTGRES") == "15" else "embedded PostgreSQL 18"
    return f"rollout tests against {version}"


def _databases(server):
    names = []

    def create() -> str:
        names.append(f"t_{uuid.uuid4().hex[:12]}")
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names[-1])))
        return server.url(names[-1])

    yield create
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def new_database(server):
    """Create fresh, empty databases for one test (dropped after it); returns their DSNs."""
    yield from _databases(server)


@pytest.fixture
def new_database_15(server_15):
    yield from _databases(server_15)


@pytest.fixture
def dsn(new_database) -> str:
    """A fresh, empty database for one test."""
    return new_database()


@pytest.fixture
def db(dsn):
    """An autocommit connection to the test's database, for looking at what rollout did."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def bot_plan(tmp_path) -> Path:
    """A copy of the repository's default plan, so a test can change files freely."""
    shutil.copy(REPO / "rollout.yaml", tmp_path / "rollout.yaml")
    shutil.copytree(REPO / "steps", tmp_path / "steps")
    return tmp_path / "rollout.yaml"


def write_plan(directory: Path, plan: str, files: dict[str, str] | None = None) -> Path:
    """Write a plan and the files it names into `directory`."""
    for name, text in (files or {}).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    path = directory / "rollout.yaml"
    path.write_text(textwrap.dedent(plan))
    return path


def env_locks(db) -> int:
    """How many environment locks are held in the database (rollout's lock tables, locked)."""
    return db.execute("""
        SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = 'rollout' AND c.relname LIKE 'lock %' AND l.mode = 'ExclusiveLock' AND l.granted""").fetchone()[0]


class Rollout:
    """Runs the CLI in-process against a plan and a database, as an operator would."""

    def __init__(self, plan: Path, dsn: str | None):
        self.plan, self.dsn = plan, dsn

    def __call__(self, *args: str, env: str = "local", input: str | None = None):
        base = ["--plan", str(self.plan), "--env", env] + (["--dsn", self.dsn] if self.dsn else [])
        result = CliRunner().invoke(cli, base + list(args), input=input, env={"ROLLOUT_ACTOR": "tester"})
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result


@pytest.fixture
def rollout(bot_plan, dsn) -> Rollout:
    return Rollout(bot_plan, dsn)



@pytest.fixture
def password_role(server, dsn):
    """A role that must give its password (a scram-sha-256 rule for it alone in pg_hba.conf,
    ahead of the trust rules the test server otherwise uses). Yields (role, password, url_with)."""
    role, password = f"secret_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    hba = Path(server.data_dir) / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\n" + original)
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        admin.execute("SELECT pg_reload_conf()")
    def url_with(secret: str) -> str:
        return make_conninfo(dsn, user=role, password=secret)

    try:
        yield role, password, url_with
    finally:
        hba.write_text(original)
        with psycopg.connect(dsn, autocommit=True) as owner:  # what the role created in the test's database
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
