"""`rollout init` starts a plan that passes `rollout check`, and the commented step works once
uncommented as the comment says."""

from __future__ import annotations

import json

from .conftest import Rollout


def test_init_writes_a_plan_that_checks_and_never_overwrites(tmp_path):
    rollout = Rollout(tmp_path / "rollout.yaml", None)
    made = rollout("init", "--dsn-env", "STAGING_DATABASE_URL", "--dsn-env", "PRODUCTION_DATABASE_URL")
    assert made.exit_code == 0, made.output
    text = (tmp_path / "rollout.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=rollout.schema.json\n")
    assert "staging: {dsn_env: STAGING_DATABASE_URL, after: local}" in text
    assert "production: {dsn_env: PRODUCTION_DATABASE_URL, after: staging, confirm: true}" in text
    assert json.loads((tmp_path / "rollout.schema.json").read_text())["title"] == "rollout plan"
    assert rollout("check").exit_code == 0
    uncommented = text.replace("steps: []", "steps:").replace("\n#  ", "\n  ")
    (tmp_path / "rollout.yaml").write_text(uncommented)
    checked = rollout("check")
    assert checked.exit_code == 0 and "(1 step," in checked.output
    again = rollout("init")
    assert again.exit_code == 2 and "never overwrites" in again.output


def test_init_refuses_variables_that_name_no_environment(tmp_path):
    rollout = Rollout(tmp_path / "rollout.yaml", None)
    assert rollout("init", "--dsn-env", "9BAD").exit_code == 2
    assert rollout("init", "--dsn-env", "LOCAL_DATABASE_URL").exit_code == 2
    assert not (tmp_path / "rollout.yaml").exists()
