"""The dry run as a Markdown report for a pull request comment, and the steps a change touches.

`markdown(preview)` puts the verdict first (steps, blocking findings, the strongest lock taken
on each table, the estimates that matter) and folds the details of each step; text from the
plan and the database is escaped so it cannot break the table or the comment.
`changed_steps(plan, ref)` asks git which files changed since `ref` and maps them to the steps
that use them, so CI reports only the steps a pull request changes.
"""

from __future__ import annotations

import os
import subprocess

import yaml

from .analysis import Lock
from .errors import UsageError
from .plan import Plan


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace("`", "'")


def markdown(preview) -> str:
    steps = [s for s in preview.steps if s.statements or s.findings or s.preconditions or s.backfills]
    blocking = [(s, f) for s in steps for f in s.findings if f.blocking]
    failing = [(s, r) for s in steps for r, deferred in s.preconditions if not r.ok and deferred is None]
    verdict = "❌ blocked" if preview.blocking else "✅ nothing blocks"
    out = [f"### rollout plan: {verdict}", "",
           f"{len(steps)} step(s) to run in `{preview.env}` (PostgreSQL {preview.server_version}); "
           f"{len(blocking)} blocking finding(s), {len(failing)} failing precondition(s); the preview wrote "
           f"{'nothing' if preview.wrote_nothing else 'SOMETHING (a bug)'}.", ""]
    strongest: dict[str, tuple[Lock, str]] = {}
    for step in steps:
        for s in step.statements:
            for held in s.effect.locks:
                if held.relation not in strongest or held.lock > strongest[held.relation][0]:
                    strongest[held.relation] = (held.lock, f"{step.id}: {s.where}")
    if strongest:
        out += ["| table | strongest lock | blocks | where |", "|---|---|---|---|"]
        out += [f"| `{_cell(t)}` | {lock.label} | {lock.blocks} | {_cell(where)} |"
                for t, (lock, where) in sorted(strongest.items(), key=lambda kv: -kv[1][0])]
        out.append("")
    if blocking or failing:
        out += ["**Must be fixed (or accepted with `allow:`):**", ""]
        out += [f"- `{step.id}` {f.rule} at `{_cell(f.where)}`: {_cell(f.message)}" for step, f in blocking]
        out += [f"- `{step.id}` precondition {_cell(r.summary())}" for step, r in failing]
        out.append("")
    for step in steps:
        estimates = [s.estimate for s in step.statements if s.estimate]
        out += [f"<details><summary><code>{_cell(step.id)}</code> [{step.state}] {_cell(step.title)}"
                f"{' — ' + _cell('; '.join(estimates[:2])) if estimates else ''}</summary>", ""]
        for s in step.statements:
            locks = "; ".join(f"{r.lock.label} on {r.relation}" for r in s.effect.locks) or "no table lock"
            traits = ", ".join(t for t, on in (("scans", s.effect.scans), ("rewrites", s.effect.rewrites),
                                                ("outside a transaction", not s.effect.transactional)) if on)
            out.append(f"- `{_cell(s.where)}` {_cell(s.effect.kind)}: {_cell(locks)}"
                       f"{' (' + traits + ')' if traits else ''}{'; ' + _cell(s.estimate) if s.estimate else ''}")
        for b in step.backfills:
            out.append(f"- backfill `{_cell(b.name)}` on `{_cell(b.table)}`: ~{b.rows or '?'} rows, {b.estimate or ''}")
        for f in step.findings:
            mark = "❌" if f.blocking else ("☑️ allowed" if f.allowed else "⚠️")
            out.append(f"- {mark} {f.rule} at `{_cell(f.where)}`: {_cell(f.message)}")
        out += ["", "</details>", ""]
    return "\n".join(out)


def changed_steps(plan: Plan, ref: str) -> set[str]:
    """The steps whose files or whose entry in the plan changed since the git revision `ref`."""
    folder = plan.directory
    try:
        top = _git(folder, "rev-parse", "--show-toplevel").strip()
        changed = {os.path.normpath(os.path.join(top, line))
                   for line in _git(folder, "diff", "--name-only", ref, "--", ".").splitlines() if line}
        changed |= {os.path.normpath(os.path.join(folder, line))
                    for line in _git(folder, "ls-files", "--others", "--exclude-standard").splitlines() if line}
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UsageError(f"--changed-since {ref}: git could not tell what changed ({_reason(exc)}); run it in the "
                         "plan's repository, with that revision fetched") from None
    steps = set()
    for step in plan.steps:
        folders = [os.path.join(folder, f) for f in (step.migrate, step.finalize) if f]
        files = [os.path.join(folder, c.file) for c in step.preconditions + step.verify if c.file]
        if any(p == f or p.startswith(d + os.sep) for p in changed for f in files for d in folders) or \
                any(p.startswith(d + os.sep) for p in changed for d in folders):
            steps.add(step.id)
    if os.path.normpath(os.path.abspath(plan.path)) in changed:
        steps |= _changed_entries(plan, ref, top)
    return steps


def _changed_entries(plan: Plan, ref: str, top: str) -> set[str]:
    """Steps whose YAML entry differs from the one at `ref` (a new step counts as changed)."""
    relative = os.path.relpath(os.path.abspath(plan.path), top)
    try:
        before = yaml.safe_load(_git(plan.directory, "show", f"{ref}:{relative}")) or {}
    except (subprocess.CalledProcessError, yaml.YAMLError):
        return {s.id for s in plan.steps}  # no readable plan at that revision: every step is new
    with open(plan.path, encoding="utf-8") as handle:
        after = yaml.safe_load(handle) or {}
    old = {s.get("id"): s for s in before.get("steps") or [] if isinstance(s, dict)}
    return {s["id"] for s in after.get("steps") or [] if isinstance(s, dict) and old.get(s.get("id")) != s}


def _git(folder: str, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True, timeout=60).stdout


def _reason(exc: Exception) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return (exc.stderr or "").strip().splitlines()[-1] if exc.stderr else f"exit {exc.returncode}"
    return str(exc)
