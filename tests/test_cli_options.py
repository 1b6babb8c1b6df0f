"""The global options work on either side of the command's name, as operators type them."""

from __future__ import annotations

from click.testing import CliRunner

from orchestrator.cli import cli

from .conftest import write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
  other: {dsn_env: OTHER_DATABASE_URL}
flags:
  f: {description: a flag}
steps:
  - id: a
    title: A
    priority: high
    migrate: steps/a
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), env={"ROLLOUT_ACTOR": ""})


def test_env_plan_dsn_and_actor_after_the_command(tmp_path, dsn, db):
    path = str(write_plan(tmp_path, PLAN, {"steps/a/0001_a.sql": "SELECT 1;\n",
                                           "steps/a/0001_a.rollback.sql": "SELECT 1;\n"}))
    assert run("--plan", path, "--dsn", dsn, "--actor", "zed", "flags", "set", "f", "10").exit_code == 0
    assert run("flags", "set", "f", "off", "--plan", path, "--dsn", dsn, "--actor", "amy").exit_code == 0
    actors = [row[0] for row in db.execute("SELECT actor FROM rollout.flag_history ORDER BY id")]
    assert actors[-2:] == ["zed", "amy"]
    moved = run("status", "--plan", path, "--env", "other")
    assert moved.exit_code == 2 and "$OTHER_DATABASE_URL" in moved.output  # --env after the command counted
