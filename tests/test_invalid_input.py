"""Bad input gets a clear error and exit code 2, and the database is left untouched.

Each file in tests/plans/invalid/ is a broken plan whose first line says the message it must
produce (`# expect: ...`); the arguments and connections below are broken the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import REPO, Rollout, write_plan

INVALID = Path(__file__).parent / "plans" / "invalid"
CASES = sorted(INVALID.glob("*.yaml"))


def untouched(db) -> bool:
    """No schema, table, function or type was created in the database."""
    return db.execute(
        "SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')").fetchone()[0] == 0 and \
        db.execute("SELECT to_regnamespace('rollout') IS NULL").fetchone()[0]


def test_there_are_at_least_40_broken_plans():
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_a_broken_plan_is_refused_with_its_message(path, dsn, db):
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    for command in (["check"], ["apply"], ["plan"]):
        result = Rollout(path, dsn)(*command)
        assert result.exit_code == 2, (command, result.output)
        assert expected in result.output, result.output
        assert f"{path}:" in result.output  # names the file, and the line where the YAML has one
        assert "Traceback" not in result.output
    assert untouched(db)


PLAN = """\
version: 1
environments:
  local: {database: embedded}
  production: {dsn_env: ROLLOUT_TEST_NEVER_SET, confirm: true}
flags:
  f: {description: a flag}
steps:
  - id: a
    title: A
    priority: high
    flag: f
    migrate: steps/a
    backfills:
      - {name: b, table: t, set: {x: "1"}}
"""
FILES = {"steps/a/a_01.sql": "CREATE TABLE t (id int PRIMARY KEY, x text);\n", "steps/a/a_01.rollback.sql": "DROP TABLE t;\n"}


@pytest.mark.parametrize("args, message", [
    (["--env", "prod", "status"], "no environment 'prod' in"),
    (["apply", "nope"], "no step 'nope' in"),
    (["rollback", "nope"], "no step 'nope' in"),
    (["events", "--limit", "0"], "'--limit': 0 is not in the range 1<=x<=1000000"),
    (["events", "--limit", "many"], "'many' is not a valid integer"),
    (["db", "seed", "--rows", "0"], "'--rows': 0 is not in the range 1<=x<=2147483647"),
    (["flags", "set", "f", "half"], "a flag value is on, off or a percentage from 0 to 100 (got 'half')"),
    (["flags", "set", "f", "101"], "a flag value is on, off or a percentage from 0 to 100 (got '101')"),
    (["flags", "set", "g", "on"], "no flag 'g' in"),
    (["advance", "a", "--all"], "name a STEP or pass --all (not both)"),
    (["advance", "--watch", "--interval", "1s"], "name a STEP or pass --all"),
    (["advance", "a", "--interval", "soon"], "--interval: 'soon' is not a duration"),
    (["backfill", "run", "nope"], "no step 'nope' in"),
    (["--env", "production", "status"], "reads its DSN from $ROLLOUT_TEST_NEVER_SET, which is not set"),
    (["--env", "production", "apply", "--yes"], "reads its DSN from $ROLLOUT_TEST_NEVER_SET, which is not set"),
    (["apply", "--no-such-option"], "No such option '--no-such-option'"),
])
def test_bad_arguments_are_refused(tmp_path, dsn, db, args, message):
    path = write_plan(tmp_path, PLAN, FILES)
    use_dsn = "--env" not in args
    result = Rollout(path, dsn if use_dsn else None)(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert untouched(db)


def test_a_missing_plan_file(tmp_path):
    result = Rollout(tmp_path / "nope.yaml", None)("check")
    assert result.exit_code == 2 and "nope.yaml: no such file; create it, or point --plan" in result.output


def test_an_oversized_plan(tmp_path):
    path = tmp_path / "rollout.yaml"
    path.write_text("version: 1\n" + "# padding\n" * 120_000)
    result = Rollout(path, None)("check")
    assert result.exit_code == 2 and "larger than 1024 KiB" in result.output


def test_an_unreachable_database_names_it_without_the_password(tmp_path):
    path = write_plan(tmp_path, PLAN, FILES)
    result = Rollout(path, "postgresql://bot:hunter2-secret@127.0.0.1:1/bot?connect_timeout=2")("apply")
    assert result.exit_code == 2
    assert "cannot connect to environment 'local' at postgresql://bot:***@127.0.0.1:1/bot" in result.output
    assert "hunter2-secret" not in result.output


def test_a_wrong_password_is_masked(tmp_path, password_role):
    role, password, url_with = password_role
    path = write_plan(tmp_path, PLAN, FILES)
    result = Rollout(path, url_with("not-" + password))("apply")
    assert result.exit_code == 2, result.output
    assert "password authentication failed" in result.output
    assert password not in result.output and f"postgresql://{role}:***@" in result.output
    assert Rollout(path, url_with(password))("status").exit_code == 0


def test_repository_plan_is_valid():
    assert Rollout(REPO / "rollout.yaml", None)("check").exit_code == 0
