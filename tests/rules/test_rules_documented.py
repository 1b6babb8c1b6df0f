"""Every lint rule is documented in docs/plan.md with its level, and every blocking squawk rule
is listed there: the reference cannot fall behind the code."""

from __future__ import annotations

from pathlib import Path

from orchestrator.rules import RULES, squawk

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "plan.md").read_text()


def test_every_rule_is_in_the_reference_with_its_level_and_evidence():
    for rule in RULES:
        if rule is squawk:
            continue
        row = next((line for line in DOCS.splitlines() if line.startswith(f"| `{rule.NAME}` |")), None)
        assert row is not None, f"docs/plan.md has no row for {rule.NAME}"
        assert f"| {rule.LEVEL}" in row and rule.EVIDENCE
    for name in squawk.BLOCKING:
        assert f"`{name}`" in DOCS, f"docs/plan.md does not list squawk's {name} as blocking"
