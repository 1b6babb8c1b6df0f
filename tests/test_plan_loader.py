"""Loading is pure and strict: every problem located at file:line:column, all at once, exit 2."""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.errors import PlanError
from orchestrator.plan import json_schema
from orchestrator.plan_loader import load_plan

from .conftest import REPO, Rollout, write_plan

MIGRATION = {
    "steps/a/migrate/a_01_create.sql": "CREATE TABLE a (id int);\n",
    "steps/a/migrate/a_01_create.rollback.sql": "DROP TABLE a;\n",
    "steps/b/migrate/b_01_create.sql": "CREATE TABLE b (id int);\n",
    "steps/b/migrate/b_01_create.rollback.sql": "DROP TABLE b;\n",
}

VALID = """\
version: 1
environments:
  local:
    database: embedded
steps:
  - id: a
    title: Step A
    priority: high
    migrate: steps/a/migrate
  - id: b
    title: Step B
    priority: low
    depends_on: [a]
    migrate: steps/b/migrate
"""


def problems(tmp_path, plan: str, files: dict | None = None) -> list[str]:
    path = write_plan(tmp_path, plan, {**MIGRATION, **(files or {})})
    with pytest.raises(PlanError) as caught:
        load_plan(str(path))
    return caught.value.problems


def only(tmp_path, plan: str, files: dict | None = None) -> str:
    found = problems(tmp_path, plan, files)
    assert len(found) == 1, found
    return found[0]


def test_valid_plan_loads_with_migrations_in_order(tmp_path):
    plan = load_plan(str(write_plan(tmp_path, VALID, MIGRATION)))
    assert [s.id for s in plan.order()] == ["a", "b"]
    assert [s.id for s in plan.order("a")] == ["a"]
    assert plan.migrations[("a", "migrate")][0].statements == ("CREATE TABLE a (id int);",)
    assert plan.migrations[("a", "migrate")][0].rollback == ("DROP TABLE a;",)


def test_the_default_plan_loads():
    plan = load_plan(str(REPO / "rollout.yaml"))
    assert {"composite_indexes", "confidence_range", "reputation_range"} <= {s.id for s in plan.steps}


DEFAULTS = """\
version: 1
environments:
  local: {database: embedded}
flags:
  f: {description: f}
  g: {description: g}
  h: {description: h}
rollout:
  stages: [10, 100]
  hold: 5min
  gates:
    - {name: errors, http: {url: "http://localhost:9/errors"}, success: "< 1"}
steps:
  - {id: plain, title: P, priority: high, flag: f, operations: [{op: create_index, name: i, table: t, columns: [a]}]}
  - id: own
    title: O
    priority: high
    flag: g
    rollout:
      stages: [50, 100]
      gates: [{name: latency, http: {url: "http://localhost:9/p99"}, success: "< 300"}]
    operations: [{op: create_index, name: j, table: t, columns: [b]}]
  - {id: marks, title: M, priority: high, flag: h, operations: [{op: soft_delete, tables: [t]}]}
  - {id: unflagged, title: U, priority: high, operations: [{op: create_index, name: k, table: t, columns: [c]}]}
"""


def test_the_plans_rollout_is_every_flagged_steps_default(tmp_path):
    """A step's own stages and hold win; the plan's gates come first, the step's are added; a
    step without `rollout:` takes the plan's, and keeps its operations' gates; an unflagged
    step has none."""
    plan = load_plan(str(write_plan(tmp_path, DEFAULTS)))
    plain, own, marks = (plan.stages(plan.step(name)) for name in ("plain", "own", "marks"))
    assert (plain.stages, plain.hold, [g.name for g in plain.gates]) == ((10, 100), 300_000, ["errors"])
    assert (own.stages, own.hold, [g.name for g in own.gates]) == ((50, 100), 300_000, ["errors", "latency"])
    assert marks.stages == (10, 100) and [c.name for c in marks.checks] == ["t_deletions_name_who"]
    assert plan.stages(plan.step("unflagged")) is None


def test_the_plans_rollout_is_checked_like_a_steps(tmp_path):
    assert "stages must rise and end at 100" in only(tmp_path, DEFAULTS.replace("stages: [10, 100]", "stages: [10, 90]"))
    assert "checks" in only(tmp_path, DEFAULTS.replace("  hold: 5min\n", "  checks: []\n"))
    twice = DEFAULTS.replace("{name: latency,", "{name: errors,")
    assert "two gates are named 'errors' (the plan's rollout: gates hold for this step too)" in only(tmp_path, twice)
    plan_twice = DEFAULTS.replace("  gates:\n", "  gates:\n    - {name: errors, http: {url: \"http://localhost:9/e\"}, success: \"< 1\"}\n")
    assert "duplicate name 'errors' in gates" in only(tmp_path, plan_twice)
    latency = '{name: latency, http: {url: "http://localhost:9/p99"}, success: "< 300"}'
    step_twice = DEFAULTS.replace(f"gates: [{latency}]", f"gates: [{latency}, {latency}]")
    assert "two gates are named 'latency' (twice in this step's gates)" in only(tmp_path, step_twice)


def test_yaml_syntax_error_is_located(tmp_path):
    message = only(tmp_path, VALID.replace("    priority: high", "    priority: [high"))
    assert message.startswith(f"{tmp_path / 'rollout.yaml'}:")
    assert "YAML syntax error" in message
    line = int(message.split(":")[1])
    assert 8 <= line <= 11


def test_unknown_key_suggests_the_right_one(tmp_path):
    message = only(tmp_path, VALID.replace("    priority: high", "    priority: high\n    preconditons: []"))
    assert "rollout.yaml:9:5: steps[0].preconditons: unknown key 'preconditons'; did you mean 'preconditions'?" in message


def test_wrong_types_and_values_quote_the_bad_value(tmp_path):
    found = problems(tmp_path, VALID.replace("title: Step A", "title: 3").replace("priority: low", "priority: urgent"))
    assert any("rollout.yaml:7:12: steps[0].title: input should be a valid string (got 3)" in p for p in found)
    assert any("steps[1].priority" in p and "'high', 'medium' or 'low'" in p and "'urgent'" in p for p in found)


def test_missing_key_names_it(tmp_path):
    message = only(tmp_path, VALID.replace("    title: Step B\n", ""))
    assert "steps[1]: missing required key 'title'" in message
    assert ":10:5:" in message  # the step's mapping starts there


def test_all_problems_are_reported_at_once(tmp_path):
    found = problems(tmp_path, VALID.replace("version: 1", "version: 2").replace("priority: high", "priority: x"))
    assert len(found) == 2


def test_duplicate_step_ids(tmp_path):
    message = only(tmp_path, VALID.replace("id: b", "id: a").replace("depends_on: [a]", "depends_on: []"))
    assert "steps[1].id: duplicate step id 'a' (also steps[0])" in message


def test_duplicate_yaml_keys(tmp_path):
    message = only(tmp_path, VALID.replace("    priority: high", "    priority: high\n    priority: low"))
    assert "rollout.yaml:9:5" in message and "duplicate key 'priority' (first at line 8)" in message


def test_unknown_dependency_suggests(tmp_path):
    message = only(tmp_path, VALID.replace("depends_on: [a]", "depends_on: [aa]"))
    assert "steps[1].depends_on[0]: unknown step 'aa'; did you mean 'a'?" in message


def test_dependency_cycle_names_the_cycle(tmp_path):
    plan = VALID.replace("    migrate: steps/a/migrate", "    depends_on: [b]\n    migrate: steps/a/migrate")
    message = only(tmp_path, plan)
    assert "dependency cycle" in message and ("a -> b -> a" in message or "b -> a -> b" in message)


def test_self_dependency(tmp_path):
    message = only(tmp_path, VALID.replace("depends_on: [a]", "depends_on: [b]"))
    assert "a step cannot depend on itself" in message


def test_missing_migration_folder(tmp_path):
    message = only(tmp_path, VALID.replace("steps/b/migrate", "steps/c/migrate"))
    assert "steps[1].migrate: 'steps/c/migrate' does not exist" in message


def test_missing_check_file(tmp_path):
    plan = VALID.replace("    migrate: steps/a/migrate", "    migrate: steps/a/migrate\n    verify:\n"
                         "      - name: exists\n        file: checks/nope.sql")
    assert "steps[0].verify[0].file: 'checks/nope.sql' does not exist" in only(tmp_path, plan)


def test_unreadable_check_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file; permissions cannot make one unreadable")
    plan = VALID.replace("    migrate: steps/a/migrate", "    migrate: steps/a/migrate\n    verify:\n"
                         "      - name: exists\n        file: checks/secret.sql")
    path = write_plan(tmp_path, plan, {**MIGRATION, "checks/secret.sql": "SELECT 1"})
    os.chmod(tmp_path / "checks/secret.sql", 0)
    with pytest.raises(PlanError, match="cannot read 'checks/secret.sql'"):
        load_plan(str(path))


def test_path_escaping_the_plan_folder(tmp_path):
    plan = VALID.replace("    migrate: steps/a/migrate", "    migrate: steps/a/migrate\n    verify:\n"
                         "      - name: exists\n        file: ../../etc/passwd")
    assert "is outside the plan's folder" in only(tmp_path, plan)


def test_migration_without_rollback(tmp_path):
    files = {"steps/b/migrate/b_02_more.sql": "ALTER TABLE b ADD COLUMN x int;"}
    message = only(tmp_path, VALID, files)
    assert "b_02_more.sql has no rollback file b_02_more.rollback.sql" in message


def test_migration_ids_must_be_unique_across_steps(tmp_path):
    files = {"steps/b/migrate/a_01_create.sql": "SELECT 1;", "steps/b/migrate/a_01_create.rollback.sql": ""}
    assert "migration id 'a_01_create' is also used by a.migrate" in only(tmp_path, VALID, files)


def test_empty_migration_folder(tmp_path):
    (tmp_path / "steps/empty").mkdir(parents=True)
    assert "holds no migrations" in only(tmp_path, VALID.replace("steps/b/migrate", "steps/empty"))


@pytest.mark.parametrize("bad", ["'a; DROP TABLE x'", "'Step\"A'", "'étape'", "'A'"])
def test_step_ids_are_plain_names(tmp_path, bad):
    message = only(tmp_path, VALID.replace("id: a\n", f"id: {bad}\n").replace("depends_on: [a]", "depends_on: []"))
    assert "is not a valid name: use lowercase letters" in message


@pytest.mark.parametrize("value", ["150", "-1", "'half'"])
def test_flag_values_are_on_off_or_a_percentage(tmp_path, value):
    plan = VALID.replace("steps:\n", f"flags:\n  f:\n    description: d\n    default: {value}\nsteps:\n")
    assert "a flag value is on, off or a percentage from 0 to 100" in only(tmp_path, plan)


def test_step_flag_must_be_declared(tmp_path):
    plan = VALID.replace("steps:\n", "flags:\n  messages_write:\n    description: d\nsteps:\n")
    plan = plan.replace("    priority: high\n", "    priority: high\n    flag: messages_writes\n")
    assert "unknown flag 'messages_writes'; did you mean 'messages_write'?" in only(tmp_path, plan)


def test_environment_needs_exactly_one_database(tmp_path):
    message = only(tmp_path, VALID.replace("    database: embedded", "    database: embedded\n    dsn_env: DB_URL"))
    assert "environments.local: an environment needs exactly one of" in message


def test_bad_duration(tmp_path):
    message = only(tmp_path, VALID.replace("steps:\n", "timeouts:\n  lock: 2 weeks\nsteps:\n"))
    assert "timeouts.lock: '2 weeks' is not a duration" in message


def test_alias_bomb_is_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))
    assert "expands to more than" in only(tmp_path, bomb)


def test_oversized_plan_is_refused(tmp_path):
    assert "larger than 1024 KiB" in only(tmp_path, VALID + "#" * (1024 * 1024))


def test_missing_and_empty_plan_files(tmp_path):
    with pytest.raises(PlanError, match="no such file"):
        load_plan(str(tmp_path / "nope.yaml"))
    assert "the plan is empty" in only(tmp_path, "")


def test_check_command_reports_and_exits_2(tmp_path):
    path = write_plan(tmp_path, VALID.replace("depends_on: [a]", "depends_on: [zz]"), MIGRATION)
    result = Rollout(path, None)("check")
    assert result.exit_code == 2
    assert "unknown step 'zz'" in result.output
    good = Rollout(write_plan(tmp_path, VALID, MIGRATION), None)("check")
    assert good.exit_code == 0 and "ok (2 steps, 2 migrations, 1 environment)" in good.output


def test_schema_command_prints_the_shipped_json_schema():
    result = Rollout(REPO / "rollout.yaml", None)("schema")
    assert result.exit_code == 0
    printed = json.loads(result.output)
    assert printed == json_schema()
    shipped = json.loads((REPO / "docs" / "rollout.schema.json").read_text())
    assert shipped == printed, "docs/rollout.schema.json is stale: regenerate it with `rollout schema`"
    assert "additionalProperties" in printed["$defs"]["Step"]
