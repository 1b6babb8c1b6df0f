"""A value added with ALTER TYPE ... ADD VALUE, followed by more statements in its transaction."""

from __future__ import annotations

from .context import Context, Finding

NAME = "enum-value-used-in-transaction"
LEVEL = "error"
EVIDENCE = ("PostgreSQL refuses to use an enum value in the transaction that added it ('unsafe use of new "
            "value'); a later statement of the same transactional migration shares that transaction")


def check(ctx: Context) -> list[Finding]:
    findings = []
    by_file: dict[str, list] = {}
    for s in ctx.statements:
        by_file.setdefault(s.file, []).append(s)
    for statements in by_file.values():
        if not statements[0].migration.transactional:
            continue
        for s in statements[:-1]:
            if s.effect.adds_enum_value:
                findings.append(Finding(
                    NAME, LEVEL, "a value added with ALTER TYPE ... ADD VALUE cannot be used until its transaction "
                    "commits, and later statements of this migration share that transaction", s.where, s.effect.sql,
                    f"-- in a migration of its own, before the one that uses the value:\n{s.effect.sql};"))
                break
    return findings
