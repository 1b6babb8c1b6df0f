"""Lint rules: one module a rule, each with its NAME, LEVEL, the EVIDENCE behind it, and a
`check(ctx)` that reads analysed statements (never parses SQL again).

Error-level findings block `rollout plan` (exit 1) and `rollout apply` (the step does not start)
unless the step accepts the rule in `allow:` with a reason. Rollback files are linted like the
files they undo: a rollback that would lock a table for minutes is found before it is needed.
"""

from __future__ import annotations

from dataclasses import replace

from . import assumed_lock, dependents, enum_value, long_lock, squawk, unbatched_dml
from .context import Context, Finding, Statement

RULES = (squawk, long_lock, unbatched_dml, enum_value, dependents, assumed_lock)

__all__ = ["Context", "Finding", "RULES", "Statement", "lint"]


def lint(ctx: Context) -> list[Finding]:
    """Every finding for the statements in `ctx`, with the step's allowances applied, and in a
    generated migration's files the rules its operation's pattern answers (Part.allows)."""
    directions = {s.file: s.direction.value for s in ctx.statements}
    answered = {s.file: s.migration.allows for s in ctx.statements}
    findings = [replace(f, direction=directions.get(f.where.rsplit(":", 1)[0], "apply"))
                for rule in RULES for f in rule.check(ctx)]

    def reason(f):
        accepted = (*answered.get(f.where.rsplit(":", 1)[0], ()), *ctx.step.allow)
        return next((a.reason for a in accepted if a.rule == f.rule and a.direction in (None, f.direction)), None)

    return [f.allow(reason(f)) for f in findings]
