"""Objects in the database that stop working when a statement drops, renames or retypes what
they use: views, rules, policies, triggers and their functions, generated columns, indexes and
foreign keys (found by orchestrator/dependents.py in the live catalog)."""

from __future__ import annotations

import re

from .. import dependents as catalog
from .context import Context, Finding

NAME = "dependents-at-risk"
LEVEL = "error"
EVIDENCE = ("the catalog's dependencies (pg_depend) and the PL/pgSQL and SQL bodies of functions, parsed by "
            "PostgreSQL's own parsers; tests/test_dependents.py shows PostgreSQL failing the way each finding says")


def _action(effect) -> str | None:
    if effect.retypes:
        return "retype"
    if effect.loses_data:
        return "drop"
    if effect.breaks_old_readers:
        return "rename"
    return None


def check(ctx: Context) -> list[Finding]:
    return [f for direction in {s.direction for s in ctx.statements} for f in _check(ctx, direction)]


def _check(ctx: Context, statement_direction) -> list[Finding]:
    replaced = {name.split(".")[-1].strip('"') for s in ctx.statements if s.direction == statement_direction
                for name in s.effect.functions_defined + s.effect.functions_dropped + s.effect.defines}
    findings = []
    for s in ctx.statements:
        if s.direction != statement_direction:
            continue
        action = _action(s.effect)
        if action is None or s.effect.table is None:
            continue
        found = catalog.find_dependents(ctx.conn, s.effect.table, s.effect.columns if action != "drop" or
                                        s.effect.columns else (), action=action)
        at_risk = [d for d in found if not _replaced(d, replaced)]
        what = f"{s.effect.table}.{', '.join(s.effect.columns)}" if s.effect.columns else s.effect.table
        for level, group in (("error", [d for d in at_risk if _breaks(d)]),
                             ("warning", [d for d in at_risk if not _breaks(d)])):
            if group:
                listed = "; ".join(d.name + (f" ({d.detail})" if d.detail else "") for d in group)
                verb = "breaks what uses it" if level == "error" else "silently takes with it"
                findings.append(Finding(NAME, level, f"{s.effect.kind} on {what} {verb}: {listed}", s.where,
                                        s.effect.sql, None))
    return findings


def _breaks(dependent) -> bool:
    """An object that makes the statement fail, or fails itself afterwards. An index or a
    constraint PostgreSQL drops along with the column is lost, not broken, and a function that
    converts a retyped value at run time only may break: both are warnings."""
    lost = dependent.kind in ("index", "check constraint", "statistics", "unique constraint") and \
        "dropped with" in dependent.detail
    return not lost and "may break" not in dependent.detail


def _replaced(dependent, names: set[str]) -> bool:
    """An object the step itself creates again, replaces or drops: its risk is the step's own."""
    return any(token.strip('"') in names for token in re.findall(r'"[^"]+"|[A-Za-z_][\w$]*', dependent.name))
