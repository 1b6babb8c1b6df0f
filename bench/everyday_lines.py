"""Twelve everyday schema changes, written for rollout (bench/everyday/rollout.yaml, with
operations) and for pgroll (bench/everyday/pgroll/, its YAML migrations): lines side by side.

Both are counted the same way: non-blank lines that are not comments (for rollout, the rule of
bench/plan_lines.py, which also leaves out step and flag descriptions; this plan has none).
rollout's lines per change are those of its step; the plan's head (version, environments,
flags) is counted once, in the total. pgroll's are its migration file's. Lines depend on layout
(rollout's plan uses YAML flow mappings, pgroll's files the block style of its examples), so a
second measure does not: the scalars written (every key and every value), per change too.

    python bench/everyday_lines.py
"""

from __future__ import annotations

import bisect
from pathlib import Path

import yaml

from plan_lines import count_yaml

HERE = Path(__file__).resolve().parent / "everyday"


def pgroll_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))


def scalars(node: yaml.Node) -> int:
    """Keys and values written, whatever the layout."""
    if isinstance(node, yaml.ScalarNode):
        return 1
    if isinstance(node, yaml.MappingNode):
        return sum(scalars(k) + scalars(v) for k, v in node.value)
    return sum(scalars(item) for item in node.value)


def rollout_scalars_by_step(plan: Path) -> tuple[int, dict[str, int]]:
    root = yaml.compose(plan.read_text(), Loader=yaml.SafeLoader)
    steps = next(v for k, v in root.value if k.value == "steps")
    by_step = {next(v.value for k, v in s.value if k.value == "id"): scalars(s) for s in steps.value}
    return scalars(root) - sum(by_step.values()), by_step


def rollout_lines_by_step(plan: Path) -> tuple[int, dict[str, int]]:
    """(the head's lines, each step's lines), by plan_lines' rule, split at each step's first line."""
    text = plan.read_text()
    total, _, _ = count_yaml(text)
    lines = text.split("\n")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    steps = next(v for k, v in root.value if k.value == "steps").value
    starts = [s.start_mark.line for s in steps]
    ids = [next(v.value for k, v in s.value if k.value == "id") for s in steps]
    head, per_step = 0, dict.fromkeys(ids, 0)
    for number, line in enumerate(lines):
        if not line.strip() or line.strip().startswith("#"):
            continue
        at = bisect.bisect_right(starts, number) - 1
        if at < 0:
            head += 1
        else:
            per_step[ids[at]] += 1
    assert head + sum(per_step.values()) == total, "the split must add up to plan_lines' count"
    return head, per_step


def main() -> int:
    head, steps = rollout_lines_by_step(HERE / "rollout.yaml")
    scalar_head, step_scalars = rollout_scalars_by_step(HERE / "rollout.yaml")
    migrations = sorted((HERE / "pgroll").glob("*.yaml"))
    assert len(migrations) == len(steps) == 12
    print(f"{'change':<20} {'lines: rollout':>14} {'pgroll':>7} {'scalars: rollout':>17} {'pgroll':>7}")
    theirs = [(pgroll_lines(m), scalars(yaml.compose(m.read_text(), Loader=yaml.SafeLoader))) for m in migrations]
    for (step, ours), (lines, written) in zip(steps.items(), theirs):
        print(f"{step:<20} {ours:>14} {lines:>7} {step_scalars[step]:>17} {written:>7}")
    print(f"{'(plan head)':<20} {head:>14} {0:>7} {scalar_head:>17} {0:>7}")
    ours_lines, ours_scalars = head + sum(steps.values()), scalar_head + sum(step_scalars.values())
    their_lines, their_scalars = sum(t[0] for t in theirs), sum(t[1] for t in theirs)
    print(f"{'total':<20} {ours_lines:>14} {their_lines:>7} {ours_scalars:>17} {their_scalars:>7}")
    print(f"rollout_lines={ours_lines} pgroll_lines={their_lines} lines_ratio={ours_lines / their_lines:.2f} "
          f"rollout_scalars={ours_scalars} pgroll_scalars={their_scalars} "
          f"scalars_ratio={ours_scalars / their_scalars:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
