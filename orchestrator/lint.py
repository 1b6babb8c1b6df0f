"""Lint findings for a step's SQL: squawk's rules, and rollout's own.

Each finding names the danger, what it blocks, and the safe alternative written out from the
operator's own statement. Error-level findings block `rollout plan` (exit 1) and `rollout
apply` (the step does not start) unless the step accepts the rule in `allow:` with a reason.
squawk's timeout rules are left out: rollout sets lock_timeout and statement_timeout itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass

from pglast import enums, parse_sql
from pglast.stream import RawStream

from .analysis import analyze_file
from .plan import Migration, Plan, Step

# squawk rules that block: each takes a lock for as long as a scan or rewrite runs, or
# breaks the running application. The rest of squawk's findings are warnings.
BLOCKING = {
    "constraint-missing-not-valid", "adding-foreign-key-constraint", "require-concurrent-index-creation",
    "require-concurrent-index-deletion", "adding-not-nullable-field", "adding-required-field",
    "changing-column-type", "adding-field-with-default", "disallowed-unique-constraint", "renaming-column",
    "renaming-table", "adding-serial-primary-key-field", "ban-concurrent-index-creation-in-transaction",
    "enum-value-used-in-transaction",
}
HANDLED_BY_ROLLOUT = ("require-lock-timeout", "require-statement-timeout")


@dataclass(frozen=True)
class Finding:
    rule: str
    level: str  # error | warning
    message: str
    where: str  # file:line, or the table for findings from the live database
    statement: str = ""
    alternative: str | None = None
    allowed: str | None = None  # the plan's reason for accepting it

    @property
    def blocking(self) -> bool:
        return self.level == "error" and self.allowed is None

    def as_json(self) -> dict:
        return {"rule": self.rule, "level": self.level, "message": self.message, "where": self.where,
                "statement": self.statement, "alternative": self.alternative, "allowed": self.allowed,
                "blocking": self.blocking}


def squawk_binary() -> str | None:
    """The squawk of this environment's squawk-cli package, else one on PATH."""
    beside = os.path.join(sysconfig.get_path("scripts"), "squawk")
    return beside if os.path.exists(beside) else shutil.which("squawk")


def proven_not_null(plan: Plan, step: Step) -> set[tuple[str, str]]:
    """(table, column) pairs the step proves NOT NULL with a validated CHECK before its SET NOT NULL."""
    checks: dict[str, tuple[str, str]] = {}
    proven: set[tuple[str, str]] = set()
    for phase in ("migrate", "finalize"):
        for migration in plan.migrations.get((step.id, phase), ()):
            proven |= _validated_not_null_checks(migration, checks)
    return proven


def lint_step(plan: Plan, step: Step, pg_version: str = "15") -> list[Finding]:
    """Static findings for every migration of the step (expand and finalize), allowances applied."""
    findings: list[Finding] = []
    proven: set[tuple[str, str]] = set()  # (table, column) with a validated CHECK (column IS NOT NULL)
    checks: dict[str, tuple[str, str]] = {}  # NOT NULL checks added so far: name -> (table, column)
    for phase in ("migrate", "finalize"):
        for migration in plan.migrations.get((step.id, phase), ()):
            findings += [f for f in _squawk(plan, migration, pg_version)
                         if not (f.rule == "adding-not-nullable-field" and _not_null_target(f.statement) in proven)]
            findings += _enum_values(plan, migration)
            proven |= _validated_not_null_checks(migration, checks)
    return accept(step, findings)


def _not_null_target(statement: str) -> tuple[str, str] | None:
    """(table, column) of an ALTER TABLE ... ALTER COLUMN ... SET NOT NULL."""
    try:
        node = parse_sql(statement)[0].stmt
    except Exception:  # noqa: BLE001
        return None
    if type(node).__name__ != "AlterTableStmt":
        return None
    for cmd in node.cmds:
        if cmd.subtype == enums.AlterTableType.AT_SetNotNull:
            return node.relation.relname, cmd.name
    return None


def _validated_not_null_checks(migration: Migration, added: dict[str, tuple[str, str]]) -> set[tuple[str, str]]:
    """The documented way to SET NOT NULL without a scan under ACCESS EXCLUSIVE: a CHECK
    (column IS NOT NULL) added NOT VALID and validated first (in separate migrations, so
    `added` carries the constraints seen so far in the step). Returns the (table, column)
    pairs this file validates."""
    validated: set[tuple[str, str]] = set()
    for statement in migration.statements:
        try:
            node = parse_sql(statement)[0].stmt
        except Exception:  # noqa: BLE001
            continue
        if type(node).__name__ != "AlterTableStmt":
            continue
        for cmd in node.cmds:
            definition = getattr(cmd, "def_", None)
            if cmd.subtype == enums.AlterTableType.AT_AddConstraint and definition.contype == enums.ConstrType.CONSTR_CHECK:
                test = definition.raw_expr
                if (type(test).__name__ == "NullTest" and test.nulltesttype == enums.NullTestType.IS_NOT_NULL
                        and type(test.arg).__name__ == "ColumnRef"):
                    added[definition.conname] = (node.relation.relname, test.arg.fields[-1].sval)
            elif cmd.subtype == enums.AlterTableType.AT_ValidateConstraint and cmd.name in added:
                validated.add(added[cmd.name])
    return validated


def accept(step: Step, findings: list[Finding]) -> list[Finding]:
    """Mark the findings the step's `allow:` accepts, with its reason."""
    reasons = {a.rule: a.reason for a in step.allow}
    return [Finding(**{**f.__dict__, "allowed": reasons.get(f.rule)}) for f in findings]


def _relative(plan: Plan, path: str) -> str:
    return os.path.relpath(path, plan.directory)


def _squawk(plan: Plan, migration: Migration, pg_version: str) -> list[Finding]:
    binary = squawk_binary()
    where = _relative(plan, migration.path)
    if binary is None:
        return [Finding("squawk-missing", "warning", "squawk is not installed (pip install squawk-cli): "
                        "its rules were not checked", where)]
    command = [binary, "--reporter", "json", "--pg-version", pg_version,
               "--exclude", ",".join(HANDLED_BY_ROLLOUT), migration.path]
    if migration.transactional:
        command.insert(1, "--assume-in-transaction")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    try:
        reported = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return [Finding("squawk-failed", "warning", f"squawk failed: {(done.stderr or done.stdout).strip()[:300]}",
                        where)]
    with open(migration.path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    findings = []
    for item in reported:
        rule = item["rule_name"]
        line = item["line"] + 1
        statement = _statement_at(migration, line)
        text = item["message"] + (f" {item['help']}" if item.get("help") else "")
        findings.append(Finding(rule, "error" if rule in BLOCKING else "warning", text, f"{where}:{line}",
                                statement or (lines[line - 1].strip() if line <= len(lines) else ""),
                                alternative(rule, statement)))
    return findings


def _statement_at(migration: Migration, line: int) -> str:
    """The statement of the migration file that covers `line`."""
    effects = analyze_file(migration.path)
    covering = [e for e in effects if e.line <= line]
    return covering[-1].sql if covering else ""


def _enum_values(plan: Plan, migration: Migration) -> list[Finding]:
    """ALTER TYPE ... ADD VALUE commits only with its transaction: a later statement of the same
    transactional migration cannot use the new value (PostgreSQL refuses 'unsafe use')."""
    if not migration.transactional:
        return []
    effects = analyze_file(migration.path)
    for index, effect in enumerate(effects):
        if effect.kind == "ALTER TYPE ADD VALUE" and index < len(effects) - 1:
            return [Finding("enum-value-used-in-transaction", "error",
                            "a value added with ALTER TYPE ... ADD VALUE cannot be used until its transaction "
                            "commits, and later statements of this migration share that transaction",
                            f"{_relative(plan, migration.path)}:{effect.line}", effect.sql,
                            "put the ALTER TYPE ... ADD VALUE statements in a migration of their own, before the "
                            "one that uses the values")]
    return []


def alternative(rule: str, statement: str) -> str | None:
    """The safe way to write `statement`, from the statement itself, for the rules that have one."""
    if not statement:
        return None
    try:
        node = parse_sql(statement)[0].stmt
    except Exception:  # noqa: BLE001 - an unparsable statement simply gets no suggestion
        return None
    kind = type(node).__name__
    if rule in ("constraint-missing-not-valid", "adding-foreign-key-constraint") and kind == "AlterTableStmt":
        constraint = node.cmds[0].def_
        name = constraint.conname or "<name it>"
        constraint.skip_validation, constraint.initially_valid = True, False
        table = RawStream()(node.relation)
        return (f"{RawStream()(node)};\n-- then, in a migration of its own (it scans without blocking writes):\n"
                f"ALTER TABLE {table} VALIDATE CONSTRAINT {name};")
    if rule == "require-concurrent-index-creation" and kind == "IndexStmt":
        node.concurrent, node.if_not_exists = True, True
        return f"-- transactional: false\n{RawStream()(node)};"
    if rule == "require-concurrent-index-deletion" and kind == "DropStmt":
        node.concurrent, node.missing_ok = True, True
        return f"-- transactional: false\n{RawStream()(node)};"
    if rule == "adding-not-nullable-field" and kind == "AlterTableStmt":
        table, column = RawStream()(node.relation), node.cmds[0].name
        check = f"{node.relation.relname}_{column}_not_null"
        return (f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID;\n"
                f"-- next migration:\nALTER TABLE {table} VALIDATE CONSTRAINT {check};\n"
                f"-- next migration (no scan: the validated CHECK proves it):\n"
                f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL;\n"
                f"ALTER TABLE {table} DROP CONSTRAINT {check};")
    if rule == "changing-column-type" and kind == "AlterTableStmt":
        table, column = RawStream()(node.relation), node.cmds[0].name
        new_type = RawStream()(node.cmds[0].def_.typeName)
        return (f"-- expand: a new column, written by a trigger and filled by a backfill\n"
                f"ALTER TABLE {table} ADD COLUMN {column}_new {new_type};\n"
                f"-- backfills: [{{table: {table}, set: {{{column}_new: {column}::{new_type}}}, "
                f"where: {column}_new IS NULL AND {column} IS NOT NULL}}]\n"
                f"-- switch readers behind the step's flag, then contract (finalize):\n"
                f"ALTER TABLE {table} DROP COLUMN {column};\n"
                f"ALTER TABLE {table} RENAME COLUMN {column}_new TO {column};")
    if rule in ("renaming-column", "renaming-table"):
        return ("add the new name beside the old (a new column kept in step by a trigger, or a view), move "
                "readers and writers behind the step's flag, and drop the old name in finalize")
    return None
