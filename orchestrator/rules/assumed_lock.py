"""A statement rollout's table of statements does not know: its lock is assumed, not known."""

from __future__ import annotations

from .context import Context, Finding

NAME = "lock-assumed"
LEVEL = "warning"
EVIDENCE = ("statements outside the table measured in tests/analysis are reported with ACCESS EXCLUSIVE on "
            "every relation they name: never weaker than PostgreSQL's truth, possibly stronger")


def check(ctx: Context) -> list[Finding]:
    return [Finding(NAME, LEVEL, f"{s.effect.kind}: {' '.join(s.effect.notes)}", s.where, s.effect.sql)
            for s in ctx.statements if s.effect.assumed]
