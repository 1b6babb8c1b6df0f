"""Generated hostile input: whatever a plan file, a duration, a flag value or a name holds,
rollout answers with its own error (a RolloutError: a message and an exit code) or accepts it,
never with a traceback. Hypothesis builds the inputs; no database is needed."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import RolloutError
from orchestrator.flags import parse_value
from orchestrator.plan_parts import parse_duration
from orchestrator.plan_loader import load_plan

BASE = {"version": 1, "environments": {"local": {"database": "embedded"}},
        "steps": [{"id": "a", "title": "A", "priority": "high", "operations": [
            {"op": "create_index", "name": "i", "table": "t", "columns": ["c"]}]}]}

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True), st.text(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=20)
paths = st.lists(st.sampled_from(["version", "environments", "local", "database", "steps", 0, "id", "title",
                                  "operations", "op", "name", "table", "columns", "where", "timeouts", "lock",
                                  "flags", "rollout", "stages", "allow", "backfills", "set"]), min_size=1, max_size=5)


def mutated(path, value) -> dict:
    """BASE with the value at `path` replaced (created where the path does not exist yet)."""
    import copy

    document = copy.deepcopy(BASE)
    node = document
    for key in path[:-1]:
        if isinstance(node, list):
            node = node[0] if node else node
            continue
        if not isinstance(node, dict):
            return document
        node = node.setdefault(key, {}) if not isinstance(node.get(key), (dict, list)) else node[key]
    if isinstance(node, dict):
        node[path[-1] if not isinstance(path[-1], int) else "x"] = value
    elif isinstance(node, list) and node:
        node[0] = value
    return document


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths, values)
def test_any_plan_is_accepted_or_refused_with_rollouts_own_error(tmp_path, path, value):
    plan = tmp_path / "rollout.yaml"
    plan.write_text(yaml.safe_dump(mutated(path, value), allow_unicode=True))
    try:
        load_plan(str(plan))
    except RolloutError as exc:
        assert str(exc) and str(plan) in str(exc)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.text(max_size=30), st.integers(min_value=-2**80, max_value=2**80)))
def test_any_duration_is_milliseconds_or_a_value_error(text):
    try:
        value = parse_duration(text)
    except ValueError:
        return
    assert isinstance(value, int) and value <= 2_147_483_647 or value < 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=12))
def test_any_flag_value_is_a_percentage_or_a_usage_error(text):
    try:
        enabled, percent = parse_value(text)
    except RolloutError:
        return
    assert 0 <= percent <= 100 and enabled == (percent > 0)
