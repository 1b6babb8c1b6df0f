"""squawk's rules, run once for every file a preview needs, with rollout's judgement on top:
which ones block, the safe alternative for each, and the findings PostgreSQL's own facts
contradict (a type change or a default that does not rewrite, a SET NOT NULL a validated CHECK
already proves) are dropped. squawk's timeout rules are left out: rollout sets lock_timeout and
statement_timeout itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from functools import lru_cache

from .alternatives import ALTERNATIVES
from .context import Context, Finding, Statement

# squawk rules that block: each takes a lock for as long as a scan or rewrite runs, or breaks the
# running application. The rest of squawk's findings are warnings.
BLOCKING = {
    "constraint-missing-not-valid", "adding-foreign-key-constraint", "require-concurrent-index-creation",
    "require-concurrent-index-deletion", "adding-not-nullable-field", "adding-required-field",
    "changing-column-type", "adding-field-with-default", "disallowed-unique-constraint", "renaming-column",
    "renaming-table", "adding-serial-primary-key-field", "ban-concurrent-index-creation-in-transaction",
}
HANDLED_BY_ROLLOUT = ("require-lock-timeout", "require-statement-timeout")
# Rules about a rewrite or a scan: dropped when the resolved statement does neither.
NEEDS_REWRITE = {"changing-column-type", "adding-field-with-default"}
NEEDS_SCAN = {"adding-not-nullable-field"}

_reports: dict[tuple, list[dict]] = {}  # (path, text, transactional, version) -> squawk's findings


@lru_cache(maxsize=1)
def binary() -> str | None:
    """The squawk of this environment's squawk-cli package, else one on PATH."""
    beside = os.path.join(sysconfig.get_path("scripts"), "squawk")
    return beside if os.path.exists(beside) else shutil.which("squawk")


def prefetch(files: list[tuple[str, str, bool]], pg_version: str) -> None:
    """Run squawk once over every (path, text, transactional) not seen yet: one process for the
    files that run in a transaction, one for those that do not. A generated migration has no
    file: its text is written to a temporary one for squawk to read."""
    program = binary()
    if program is None:
        return
    with tempfile.TemporaryDirectory(prefix="rollout-squawk-") as scratch:
        for in_transaction in (True, False):
            todo = {}  # the path squawk reads -> (path, text)
            for path, text, tx in files:
                if tx != in_transaction or (path, text, tx, pg_version) in _reports:
                    continue
                on_disk = path if os.path.isfile(path) else os.path.join(scratch, os.path.basename(path))
                if on_disk != path:
                    with open(on_disk, "w", encoding="utf-8") as handle:
                        handle.write(text)
                todo[os.path.abspath(on_disk)] = (path, text)
            if not todo:
                continue
            command = [program, "--reporter", "json", "--pg-version", pg_version,
                       "--exclude", ",".join(HANDLED_BY_ROLLOUT), *sorted(todo)]
            if in_transaction:
                command.insert(1, "--assume-in-transaction")
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            try:
                found = json.loads(done.stdout or "[]")
            except json.JSONDecodeError:
                found = [{"file": read, "rule_name": "squawk-failed", "line": 0, "help": None,
                          "message": f"squawk failed: {(done.stderr or done.stdout).strip()[:300]}"} for read in todo]
            by_file: dict[str, list[dict]] = {read: [] for read in todo}
            for item in found:
                by_file.setdefault(os.path.abspath(item["file"]), []).append(item)
            for read, (path, text) in todo.items():
                _reports[(path, text, in_transaction, pg_version)] = by_file.get(read, [])


def check(ctx: Context) -> list[Finding]:
    if binary() is None:
        return [Finding("squawk-missing", "warning", "squawk is not installed (pip install squawk-cli): its rules "
                        "were not checked", ctx.plan.path)]
    files = {}
    for s in ctx.statements:
        path, text = s.migration.source(s.direction)
        files[(path, text, s.migration.transactional)] = s.file
    prefetch(list(files), ctx.pg_version)
    findings = []
    for (path, text, tx), relative in files.items():
        statements = [s for s in ctx.statements if s.file == relative]
        for item in _reports.get((path, text, tx, ctx.pg_version), ()):
            finding = _finding(item, relative, statements)
            if finding is not None:
                findings.append(finding)
    return findings


def _finding(item: dict, relative: str, statements: list[Statement]) -> Finding | None:
    rule = item["rule_name"]
    line = item["line"] + 1
    covering = [s for s in statements if s.effect.line <= line]
    statement = covering[-1] if covering else None
    effect = statement.effect if statement else None
    if effect is not None and ((rule in NEEDS_REWRITE and not effect.rewrites)
                               or (rule in NEEDS_SCAN and not effect.scans)):
        return None
    level = "error" if rule in BLOCKING else "warning"
    if level == "warning" and statement is not None and statement.migration.generated:
        return None  # rollout wrote it on purpose (a rollback's DROP COLUMN, say): a warning tells nobody anything
    text = item["message"] + (f" {item['help']}" if item.get("help") else "")
    make = ALTERNATIVES.get(rule)
    alternative = make(statement) if make and statement else None
    return Finding(rule, level, text, f"{relative}:{line}",
                   effect.sql if effect else "", alternative)
