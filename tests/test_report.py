"""`rollout plan --format markdown` for a pull request, and `--changed-since` to report only the
steps a change touched (in a real git repository)."""

from __future__ import annotations

import subprocess

from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
steps:
  - id: one
    title: index one
    priority: high
    migrate: steps/one
  - id: two
    title: index two
    priority: high
    migrate: steps/two
"""
FILES = {"steps/one/one_01.sql": "CREATE INDEX t_a ON t (a);\n", "steps/one/one_01.rollback.sql": "SELECT 1;\n",
         "steps/two/two_01.sql": "SELECT 1;\n", "steps/two/two_01.rollback.sql": "SELECT 1;\n"}


def git(folder, *args):
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"})


def test_markdown_report_leads_with_the_verdict_and_escapes_text(tmp_path, dsn, db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, a int)")
    rollout = Rollout(write_plan(tmp_path, PLAN.replace("index one", "index | one <b>"), FILES), dsn)
    report = rollout("plan", "--format", "markdown")
    assert report.exit_code == 1  # the plain CREATE INDEX blocks, as in the text output
    lines = report.output.splitlines()
    assert lines[0] == "### rollout plan: ❌ blocked"
    assert "| `public.t` | SHARE | writes and DDL (reads go on) | one: steps/one/one_01.sql:1 |" in report.output
    assert "- `one` require-concurrent-index-creation at `steps/one/one_01.sql:1`" in report.output
    assert "index \\| one &lt;b>" in report.output and "<b>" not in report.output


def test_changed_since_reports_only_the_steps_a_change_touched(tmp_path, dsn, db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, a int)")
    path = write_plan(tmp_path, PLAN, FILES)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    rollout = Rollout(path, dsn)
    import json

    def reported():
        return [s["id"] for s in json.loads(rollout("plan", "--json", "--changed-since", "HEAD").output)["steps"]]

    assert reported() == []
    (tmp_path / "steps/two/two_01.sql").write_text("SELECT 2;\n")
    assert reported() == ["two"]
    path.write_text(path.read_text().replace("title: index one", "title: index uno"))
    assert reported() == ["one", "two"]
    assert rollout("plan", "--changed-since", "no-such-ref").exit_code == 2
