"""The step state machine: apply, roll back and verify steps through a Session.

apply:    pending -> (preconditions) -> migrating -> migrated -> (verify) -> verified
          -> [finalizing ->] done
rollback: any applied state -> rolling_back -> pending
Each phase commits its own progress, so a run killed anywhere continues from the last commit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psycopg

from . import state
from .backfill import BackfillStopped, Engine
from .checks import CheckResult, run_check
from .errors import StepFailed, UsageError
from .migrations import applied_hashes, run_migration
from .plan import Check, Migration, Step
from .session import Session
from .state import DONE, FAILED, FINALIZING, MIGRATED, MIGRATING, PENDING, ROLLING_BACK, VERIFIED


@dataclass(frozen=True)
class StepReport:
    step_id: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def apply(session: Session, target: str | None = None) -> list[str]:
    """Bring every step (or `target` and what it depends on) to done, in dependency order."""
    finished = []
    for step in session.plan.order(target):
        if _apply_step(session, step):
            finished.append(step.id)
    return finished


def _apply_step(session: Session, step: Step) -> bool:
    current = session.state_of(step.id)
    if current.state == DONE:
        return False
    if current.state == ROLLING_BACK:
        raise StepFailed(f"step {step.id!r} was being rolled back when that run stopped; "
                         f"finish with `rollout rollback {step.id}` before applying it again")
    if current.state == PENDING:
        _require(session, step, "preconditions", step.preconditions)
        held = f"preconditions hold ({len(step.preconditions)})" if step.preconditions else "no preconditions"
        session.transition(step.id, MIGRATING, f"{held}; migrating")
    elif current.state == FAILED:
        resume = FINALIZING if current.phase == "finalize" else MIGRATING
        session.transition(step.id, resume, f"resuming after the failure in {current.phase}")
    elif current.state in (MIGRATING, FINALIZING):
        session.record("resume", f"continuing {current.state}, where an earlier run stopped", step_id=step.id)

    while (now := session.state_of(step.id).state) != DONE:
        if now == MIGRATING:
            count = _run_migrations(session, step, "migrate", "apply")
            session.transition(step.id, MIGRATED, f"expand migrations applied ({count} now)")
        elif now == MIGRATED:
            run_backfills(session, step)
            report = check_step(session, step, record=False)
            if not report.ok:
                failures = "; ".join(r.summary() for r in report.results if not r.ok)
                session.transition(step.id, FAILED, f"verification failed: {failures}", phase="verify",
                                   error=failures, detail={"results": [r.as_json() for r in report.results]})
                raise StepFailed(f"step {step.id!r}: verification failed: {failures}. Fix the cause and run "
                                 "`rollout apply` again, or `rollout rollback` the step")
            session.transition(step.id, VERIFIED, f"verified ({len(report.results)} checks passed)",
                               detail={"results": [r.as_json() for r in report.results]})
        elif now == VERIFIED:
            if step.finalize:
                session.transition(step.id, FINALIZING, "finalizing (contract migrations)")
            else:
                session.transition(step.id, DONE, "done")
        elif now == FINALIZING:
            _run_migrations(session, step, "finalize", "apply")
            session.transition(step.id, DONE, "finalized; done")
        else:
            raise state.InvalidTransition(f"step {step.id!r} is {now}, which apply cannot continue from")
    return True


def _require(session: Session, step: Step, kind: str, checks: tuple[Check, ...]) -> None:
    """Run checks before anything changes; on failure record what they found and stop."""
    results = [_check(session, step, check, kind) for check in checks]
    failed = [r for r in results if not r.ok]
    if failed:
        summary = "; ".join(r.summary() for r in failed)
        session.record(f"{kind}.failed", f"{kind} failed: {summary}", step_id=step.id, ok=False,
                       detail={"results": [r.as_json() for r in results]})
        raise StepFailed(f"step {step.id!r}: {kind} failed, nothing was changed: {summary}. "
                         f"Fix the data (or the check in {session.plan.path}) and run `rollout apply` again")


def _check(session: Session, step: Step, check: Check, kind: str) -> CheckResult:
    result = run_check(session.conn, check, session.plan.timeouts(step))
    session.report(session.event(f"{kind}.check", f"{kind} {result.summary()}", step_id=step.id,
                                 ok=result.ok))
    return result


def check_step(session: Session, step: Step, *, record: bool = True) -> StepReport:
    """Run a step's verification checks; record the outcome unless a state change will."""
    results = tuple(_check(session, step, check, "verify") for check in step.verify)
    report = StepReport(step.id, results)
    if record:
            session.record("verify.passed" if report.ok else "verify.failed",
                       f"verification {'passed' if report.ok else 'failed'}", step_id=step.id, ok=report.ok,
                       detail={"results": [r.as_json() for r in results]})
    return report


def _run_migrations(session: Session, step: Step, phase: str, direction: str) -> int:
    """Run the phase's migrations not yet run in this direction; returns how many ran."""
    migrations = session.plan.migrations.get((step.id, phase), ())
    applied = applied_hashes(session.conn)
    todo = [m for m in migrations if m.hash not in applied] if direction == "apply" else [
        m for m in reversed(migrations) if m.hash in applied]
    for migration in todo:
        _run_one(session, step, migration, phase, direction)
    return len(todo)


def _run_one(session: Session, step: Step, migration: Migration, phase: str, direction: str) -> None:
    verb = "applied" if direction == "apply" else "rolled back"
    relative = os.path.relpath(migration.path, session.plan.directory)
    started = time.monotonic()
    try:
        run_migration(
            session.conn, session.backend, migration, direction, session.plan.timeouts(step),
            record=lambda: session.record(
                f"migration.{direction}", f"{verb} {migration.id} ({time.monotonic() - started:.2f}s)",
                step_id=step.id, detail={"migration": migration.id, "phase": phase}),
            on_retry=lambda attempt, pause: session.report(session.event(
                "lock.retry", f"{migration.id} hit lock_timeout (attempt {attempt}); retrying in "
                f"{pause * 1000:.0f}ms", step_id=step.id, ok=False)),
            on_cleanup=lambda index: session.record(
                "cleanup", f"dropped invalid index {index} left by an interrupted build",
                step_id=step.id),
        )
    except (psycopg.Error, StepFailed) as exc:
        reason = describe_error(exc)
        if session.conn.broken:
            raise StepFailed(f"step {step.id!r}: lost the database connection during {relative} ({reason}); "
                             "run the same command again to continue from the last commit") from None
        failed_phase = phase if direction == "apply" else "rollback"
        session.transition(step.id, FAILED, f"{relative} failed: {reason}", phase=failed_phase,
                           error=reason)
        raise StepFailed(f"step {step.id!r}: {relative} failed ({direction}): {reason}. "
                         f"Fix the file and run the same command again") from None


def describe_error(exc: Exception) -> str:
    """PostgreSQL's own words: message, detail, hint and SQLSTATE."""
    if not isinstance(exc, psycopg.Error) or exc.diag.message_primary is None:
        return str(exc)
    diag = exc.diag
    parts = [diag.message_primary]
    parts += [f"detail: {diag.message_detail}"] if diag.message_detail else []
    parts += [f"hint: {diag.message_hint}"] if diag.message_hint else []
    return f"{'; '.join(parts)} [SQLSTATE {diag.sqlstate}]"


def rollback(session: Session, step_id: str, *, cascade: bool = False) -> list[str]:
    """Undo a step through its rollback files; steps that depend on it first, when allowed."""
    step = session.plan.step(step_id)
    states = session.states()
    applied = [s for s in session.plan.dependents(step_id) if states.get(s.id, state.StepState(s.id)).state != PENDING]
    if applied and not cascade:
        names = ", ".join(f"{s.id} ({states[s.id].state})" for s in applied)
        raise UsageError(f"cannot roll back {step_id!r}: steps that depend on it are still applied: {names}. "
                         f"Roll those back first, or pass --cascade to roll back {names} and then {step_id!r}")
    undone = []
    for each in [*applied, step]:
        if _rollback_step(session, each):
            undone.append(each.id)
    return undone


def _rollback_step(session: Session, step: Step) -> bool:
    current = session.state_of(step.id).state
    if current == PENDING:
        session.report(session.event("rollback.skip", "nothing to roll back (pending)", step_id=step.id))
        return False
    if current != ROLLING_BACK:
        session.transition(step.id, ROLLING_BACK, f"rolling back from {current}")
    _run_migrations(session, step, "finalize", "rollback")
    _run_migrations(session, step, "migrate", "rollback")
    with session.conn.transaction():
        # the data a backfill wrote went with the schema; a re-apply backfills afresh
        session.conn.execute("DELETE FROM rollout.backfills WHERE env = %s AND step_id = %s", (session.env, step.id))
        session.transition(step.id, PENDING, "rolled back")
    return True


def run_backfills(session: Session, step: Step, *, resume: bool = False) -> None:
    """Run the step's backfills in order. Paused or cancelled jobs stop the step until resumed."""
    if resume:
        session.conn.execute(
            "UPDATE rollout.backfills SET state = 'pending', requested = NULL WHERE env = %s AND step_id = %s "
            "AND (state IN ('paused', 'cancelled') OR requested IS NOT NULL)", (session.env, step.id))
    for job in step.backfills:
        held = session.conn.execute(
            "SELECT state FROM rollout.backfills WHERE env = %s AND step_id = %s AND name = %s "
            "AND state IN ('paused', 'cancelled')", (session.env, step.id, job.name)).fetchone()
        outcome = held[0] if held else Engine(session, step, job, session.progress).run()
        if outcome != "done":
            raise BackfillStopped(f"step {step.id!r}: backfill {job.name} is {outcome}; "
                                  f"`rollout backfill resume {step.id}` continues it from its checkpoint")


def verify(session: Session, step_id: str | None = None) -> list[StepReport]:
    """Re-run verification: of `step_id`, or of every step that has been applied."""
    if step_id:
        steps = [session.plan.step(step_id)]
    else:
        states = session.states()
        steps = [s for s in session.plan.order() if states.get(s.id, state.StepState(s.id)).state != PENDING]
    return [check_step(session, step) for step in steps]
