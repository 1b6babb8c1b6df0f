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

from . import flags, gates, state
from .backfill import BackfillStopped, Engine
from .checks import CheckResult, run_check
from .preview import step_findings
from .errors import EnvironmentLocked, RolloutError, StepFailed, Stopped, UsageError, describe_error
from .backup import backup_tables
from .migrations import Hooks, applied_hashes, run_migration
from .plan import Check, Direction, Gate, Migration, Step
from .session import Session
from .state import (ABORTED, DONE, FAILED, FINALIZING, MIGRATED, MIGRATING, PENDING, ROLLING_BACK, ROLLING_OUT,
                    VERIFIED)


@dataclass(frozen=True)
class StepReport:
    step_id: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


@dataclass(frozen=True)
class ApplyResult:
    finished: tuple[str, ...]  # steps that became done in this run
    waiting: dict[str, str]  # step -> why it is not done yet (its rollout, or a step it needs)


def apply(session: Session, target: str | None = None) -> ApplyResult:
    """Bring every step (or `target` and what it depends on) as far as it can go, in dependency
    order. A flagged step stops in rolling_out until `advance` takes its flag to 100%; the
    steps that depend on it wait for it."""
    finished, waiting = [], {}
    for step in session.plan.order(target):
        blocked = [dep for dep in step.depends_on if dep in waiting]
        if blocked:
            needed = " and ".join(filter(None, (", ".join(blocked[:-1]), blocked[-1])))
            waiting[step.id] = f"waits for {needed}"
            session.report(session.event("wait", f"waits for {needed} to be done", step_id=step.id, ok=True))
            continue
        outcome = _apply_step(session, step)
        if outcome == "finished":
            finished.append(step.id)
        elif outcome != "done":
            waiting[step.id] = outcome
    return ApplyResult(tuple(finished), waiting)


def _apply_step(session: Session, step: Step) -> str:
    """Returns 'finished' (done now), 'done' (done before), or why the step waits."""
    current = session.state_of(step.id)
    if current.state == DONE:
        return "done"
    if current.state == ROLLING_BACK:
        raise StepFailed(f"step {step.id!r} was being rolled back when that run stopped; "
                         f"finish with `rollout rollback {step.id}` before applying it again")
    if current.state == PENDING:
        _require(session, step, "preconditions", step.preconditions)
        _require_clean_lint(session, step)
        held = f"preconditions hold ({len(step.preconditions)})" if step.preconditions else "no preconditions"
        session.transition(step.id, MIGRATING, f"{held}; migrating")
    elif current.state == FAILED:
        resume = FINALIZING if current.phase == "finalize" else MIGRATING
        if resume == FINALIZING:
            _require_flag_on(session, step)
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
            session.transition(step.id, VERIFIED, f"verified ({len(report.results)} check{'' if len(report.results) == 1 else 's'} passed)",
                               detail={"results": [r.as_json() for r in report.results]})
        elif now == VERIFIED:
            stages = session.plan.stages(step)
            if stages is not None:
                shown = " -> ".join(f"{p}%" for p in stages.stages)
                session.transition(step.id, ROLLING_OUT, f"verified; flag {step.flag} rolls out {shown}: "
                                   f"`rollout advance {step.id}`")
                state.set_stage(session.conn, session.env, step.id, None)
            else:
                _contract(session, step)
        elif now == ROLLING_OUT:
            current = session.state_of(step.id)
            stages = session.plan.stages(step)
            state.checked_stage(step.id, current, len(stages.stages))
            if current.stage != len(stages.stages) - 1:
                at = f"{stages.stages[current.stage]}%" if current.stage is not None else "not started"
                session.report(session.event("wait", f"rolling out flag {step.flag} ({at}): "
                                             f"`rollout advance {step.id}` continues", step_id=step.id))
                return f"rolling out ({at})"
            blocker = _stage_blocker(session, step, current)
            if blocker:
                return f"at 100%, not finalized: {blocker.reason}"
            if (moved := _contract_unless_moved(session, step, current)) is not None:
                return moved.message
        elif now == ABORTED:
            session.report(session.event("wait", f"rollout aborted; flag {step.flag} is off. `rollout advance "
                                         f"{step.id}` restarts it, `rollout rollback {step.id}` undoes the step",
                                         step_id=step.id, ok=False))
            return "aborted"
        elif now == FINALIZING:
            _require_flag_on(session, step)
            _run_migrations(session, step, "finalize", "apply")
            session.transition(step.id, DONE, "finalized; done")
        else:
            raise state.InvalidTransition(f"step {step.id!r} is {now}, which apply cannot continue from")
    return "finished"


def _flag_short_of_on(session: Session, step: Step) -> tuple[str, bool] | None:
    """How the step's flag falls short of on for everyone (some subjects still get the old
    shape), and whether only targeted exclusions are why; None when it does not."""
    if step.flag is None:
        return None
    value = flags.read(session.conn, session.plan, session.env)[step.flag]
    if not value.enabled or value.percent < 100:
        return f"flag {step.flag} is {value.shown}, not on", False
    if value.excluded:
        shown = ", ".join(value.excluded[:5]) + (", ..." if len(value.excluded) > 5 else "")
        return (f"flag {step.flag} is on but always excludes {len(value.excluded)} subject"
                f"{'s' if len(value.excluded) != 1 else ''} ({shown}; `rollout flags target {step.flag} --remove ID`, "
                f"or the plan's flags.{step.flag}.exclude, puts one back)", True)
    return None


def _require_flag_on(session: Session, step: Step) -> None:
    """A flagged step's contract runs only with its flag on: finishing an interrupted contract, or one
    a hand edit started, must not take the old shape away from subjects the flag still sends to it."""
    if (short := _flag_short_of_on(session, step)) is not None:
        raise StepFailed(f"step {step.id!r} would go on with its contract (the finalize migrations), but {short[0]}: the "
                         f"contract would take away the shape the application uses when the flag is off for a subject. "
                         f"`rollout flags set {step.flag} on` once 100% is safe, then run the same command again; or "
                         f"`rollout rollback {step.id}`")


def _contract(session: Session, step: Step) -> None:
    """After verification (or a rollout at 100%): the finalize migrations, or straight to done."""
    if session.plan.has_contract(step):
        session.transition(step.id, FINALIZING, "finalizing (contract migrations)")
    else:
        session.transition(step.id, DONE, "done")


EXCLUDED_WAIT = 5.0  # seconds a watch waits before it looks again at a flag that still excludes subjects


@dataclass(frozen=True)
class _Blocker:
    reason: str
    wait_seconds: float = 0.0  # > 0: only the hold time is left; 0: a check failed
    gate: str | None = None  # 'failed' or 'inconclusive' when a metric gate is why


def _stage_blocker(session: Session, step: Step, current: state.StepState) -> _Blocker | None:
    """Why the rollout may not leave its current stage yet: a halt, the hold time, a metric gate
    still measuring or failed, or a failing check."""
    stages = session.plan.stages(step)
    if current.halted:
        return _Blocker(f"halted: {current.halted}; `rollout advance {step.id}` resumes it once you have looked")
    if current.stage == len(stages.stages) - 1:
        if (short := _flag_short_of_on(session, step)) is not None:
            reason, excluded = short
            if excluded:  # a deliberate choice, not a fault: the contract waits until none is left out
                return _Blocker(f"{reason}: the contract waits, since they still use the old shape", EXCLUDED_WAIT)
            return _Blocker(f"{reason}, while the rollout records its last stage (100%): the contract would take away "
                            f"the shape the application still uses when the flag is off for a subject. `rollout flags "
                            f"set {step.flag} on` once 100% is safe, or `rollout abort {step.id}`")
    percent = stages.stages[current.stage]
    measuring = []  # (gate, seconds until its next measurement is due)
    for gate in stages.gates:
        verdict, why, due = _gate(session, step, gate, current.stage)
        if verdict in ("failed", "inconclusive"):
            reason = f"gate {gate.name} {verdict} at {percent}%: {why}"
            session.record("rollout.check_failed", reason, step_id=step.id, ok=False,
                           detail={"gate": gate.name, "verdict": verdict})
            return _Blocker(reason, gate=verdict)
        if verdict == "measuring":
            measuring.append((gate, due))
    held = session.conn.execute("SELECT extract(epoch FROM clock_timestamp() - stage_since) FROM rollout.steps "
                                "WHERE env = %s AND step_id = %s", (session.env, step.id)).fetchone()[0]
    left = stages.hold / 1000 - float(held or 0)
    if left > 0:
        return _Blocker(f"holding at {percent}% for {left:.1f}s more", min([left, *(d for _, d in measuring)]))
    if measuring:
        gate, due = min(measuring, key=lambda pair: pair[1])
        return _Blocker(f"gate {gate.name} measuring at {percent}%: next measurement in {max(due, 0):.1f}s",
                        max(due, 0.05))
    results = [_check(session, step, check, "rollout") for check in stages.checks]
    failed = [r for r in results if not r.ok]
    if failed:
        summary = "; ".join(r.summary() for r in failed)
        session.record("rollout.check_failed", f"at {stages.stages[current.stage]}%: {summary}", step_id=step.id,
                       ok=False, detail={"results": [r.as_json() for r in results]})
        return _Blocker(f"check failed: {summary}")
    return None


def _gate(session: Session, step: Step, gate: Gate, stage: int) -> tuple[str, str, float]:
    """The gate's state at this stage (failed, inconclusive, passed or measuring), why, and the
    seconds until its next measurement is due; measures first when one is due. Measurements
    are events (gate.measured), read back from the current stage's, so restarts keep the tally."""
    def measured() -> tuple[list[str], float | None]:
        rows = session.conn.execute(
            "SELECT e.detail ->> 'verdict', extract(epoch FROM clock_timestamp() - e.at) FROM rollout.events AS e "
            "JOIN rollout.steps AS s ON s.env = e.env AND s.step_id = e.step_id "
            "WHERE e.env = %s AND e.step_id = %s AND e.kind = 'gate.measured' AND e.detail ->> 'gate' = %s "
            "AND e.detail ->> 'stage' = %s AND e.at >= s.stage_since ORDER BY e.id",
            (session.env, step.id, gate.name, str(stage))).fetchall()
        return [verdict for verdict, _ in rows], float(rows[-1][1]) if rows else None

    verdicts, since = measured()
    state, why = gates.tally(verdicts, gate)
    if state == "measuring" and (since is None or since >= gate.interval / 1000):
        found = gates.measure(gate, dict(os.environ))  # no lock held: a measurement may take its timeout
        with session.step_row(step.id):
            # another watch of this step may have measured meanwhile: its measurement counts, not a second one
            if measured()[0] == verdicts:
                session.record("gate.measured", f"gate {gate.name}: {found.shown()} ({len(verdicts) + 1} of "
                               f"{gate.count})", step_id=step.id, ok=found.verdict != "failed",
                               detail={"gate": gate.name, "stage": str(stage), "verdict": found.verdict,
                                       "value": found.value, "reason": found.reason})
            verdicts, since = measured()
        state, why = gates.tally(verdicts, gate)
    return state, why, gate.interval / 1000 - (since or 0.0)


@dataclass(frozen=True)
class Advance:
    step_id: str
    outcome: str  # advanced | finalized | holding | refused | halted | done
    message: str
    wait_seconds: float = 0.0
    gate: str | None = None  # refused by a metric gate: 'failed' or 'inconclusive'


ANY_STAGE = object()


def advance(session: Session, step: Step, *, restart: bool = True, resume: bool = True,
            expect: object = ANY_STAGE) -> Advance:
    """Move a step's flag to its next stage when the current stage's hold and checks allow;
    at 100% with its checks passing, run the finalize migrations and mark the step done.
    A rollout a gate halted stays halted unless `resume` (an operator named the step).
    `expect`: the stage index (None: not started) the caller judged it at; when the rollout is
    elsewhere by now, another command moved it, and this one leaves it ("moved")."""
    stages = session.plan.stages(step)
    if stages is None:
        raise UsageError(f"step {step.id!r} has no flag to roll out")
    if restart and session.state_of(step.id).state == ABORTED:
        with session.step_row(step.id) as current:
            if current.state == ABORTED:
                session.transition(step.id, ROLLING_OUT, f"rollout of flag {step.flag} restarted after an abort")
                state.set_stage(session.conn, session.env, step.id, None)
    current = session.state_of(step.id)
    if expect is not ANY_STAGE and (current.state, current.stage) != (ROLLING_OUT, expect):
        return Advance(step.id, "moved", "another command moved it since this one looked: left as it is")
    if current.state == DONE:
        return Advance(step.id, "done", "already done")
    if current.state != ROLLING_OUT:
        raise UsageError(f"step {step.id!r} is {current.state}, not rolling out; `rollout apply {step.id}` "
                         "brings it to its rollout")
    if current.halted:
        if not resume:
            return Advance(step.id, "halted", f"{current.halted}; `rollout advance {step.id}` resumes it")
        with session.step_row(step.id) as now:
            if now.halted:
                state.set_halted(session.conn, session.env, step.id, None)
                session.record("rollout.resumed", f"the halt is lifted ({now.halted})", step_id=step.id)
        current = session.state_of(step.id)
    state.checked_stage(step.id, current, len(stages.stages))
    if current.stage is not None:
        blocker = _stage_blocker(session, step, current)
        if blocker:
            return Advance(step.id, "holding" if blocker.wait_seconds else "refused", blocker.reason,
                           blocker.wait_seconds, blocker.gate)
    nxt = 0 if current.stage is None else current.stage + 1
    if nxt == len(stages.stages):
        with session.holding_environment(f"advance {step.id}"):  # the contract changes the schema
            if (moved := _contract_unless_moved(session, step, current)) is not None:
                return moved
            if session.state_of(step.id).state == FINALIZING:
                _run_migrations(session, step, "finalize", "apply")
                session.transition(step.id, DONE, "finalized; done")
        return Advance(step.id, "finalized", f"flag {step.flag} at 100% and its checks pass; step done")
    percent = stages.stages[nxt]
    with session.step_row(step.id) as now:
        if (moved := _moved(step, current, now)) is not None:
            return moved
        actual = flags.read(session.conn, session.plan, session.env)[step.flag]
        if (at := actual.percent if actual.enabled else 0) > percent:  # set by hand past the next stage
            return Advance(step.id, "refused",
                           f"flag {step.flag} is {'on' if at == 100 else f'at {at}%'}, past the rollout's next stage "
                           f"({percent}%): it was changed by hand. Put it back with `rollout flags set {step.flag} "
                           f"{flags.expected_percent(current, stages) or 'off'}` and advance, or `rollout abort "
                           f"{step.id}` to stop the rollout")
        flags.write(session.conn, session.env, step.flag, True, percent, session.actor,
                    f"rollout of {step.id}: stage {nxt + 1}/{len(stages.stages)}")
        state.set_stage(session.conn, session.env, step.id, nxt)
        session.record("rollout.stage", f"flag {step.flag} at {percent}% (stage {nxt + 1}/{len(stages.stages)})",
                       step_id=step.id, detail={"flag": step.flag, "percent": percent, "stage": nxt})
    return Advance(step.id, "advanced", f"flag {step.flag} at {percent}%")


def _contract_unless_moved(session: Session, step: Step, seen: state.StepState) -> Advance | None:
    """Start the contract of a rollout judged ready at `seen`, unless a command without the
    environment lock (a watch's revert or halt, an abort) moved it since; then say so."""
    with session.step_row(step.id) as now:
        if (moved := _moved(step, seen, now)) is not None:
            return moved
        _require_flag_on(session, step)
        _contract(session, step)
    return None


def _moved(step: Step, seen: state.StepState, now: state.StepState) -> Advance | None:
    """advance takes no environment lock: when another command (a second watch, an abort, a
    rollback) moved the rollout between what this one judged and its row lock, it holds instead.
    stage_since tells a stage left and come back to (advanced, then reverted) from one never left."""
    if (now.state, now.stage, now.halted, now.stage_since) == (ROLLING_OUT, seen.stage, None, seen.stage_since):
        return None
    where = f"{now.state}{', halted' if now.halted else ''}" + (f" at stage {now.stage + 1}" if now.stage is not None
                                                                 and now.state == ROLLING_OUT else "")
    return Advance(step.id, "holding", f"another command moved the rollout meanwhile (now {where})", 0.05)


def watch(session: Session, step: Step, interval: float) -> Advance:
    """Advance stage after stage until done. A metric gate that fails sends the flag back (the
    step's on_failure) and halts the rollout; one that cannot be measured halts it where it is,
    for a person to look; any other failed check aborts it. An abort from another terminal
    stops the watch instead of restarting the rollout."""
    resume = True  # the operator named the step: a halt from before is lifted once
    while True:
        if session.state_of(step.id).state == ABORTED:
            raise Stopped(f"the rollout of {step.id!r} was aborted from another terminal; watch stopped")
        result = advance_or_wait(session, step, interval, resume=resume)
        resume = False
        if (stopped := _settle(session, step, result)) is not None:
            raise stopped
        if result.outcome in ("finalized", "done"):
            return result
        time.sleep(result.wait_seconds + 0.05 if result.outcome == "holding" else interval)


def watch_all(session: Session, interval: float) -> list[Advance]:
    """`advance --all --watch`, from cron or a service: advance every rollout in progress until
    none is left moving. Each is handled as `watch` handles one (a failed gate reverts and
    halts it, a failed check aborts it), but one step's trouble never stops the others; halted
    rollouts are left for a person. Returns each step's last result."""
    last: dict[str, Advance] = {}
    while True:
        states = session.states()
        moving = [s for s in session.plan.order() if states[s.id].state == ROLLING_OUT and not states[s.id].halted]
        if not moving:
            return list(last.values())
        waits = []
        for step in moving:
            result = last[step.id] = advance_or_wait(session, step, interval, resume=False)
            _settle(session, step, result)  # one step's trouble never stops the others
            if result.outcome == "holding":
                waits.append(result.wait_seconds + 0.05)
            elif result.outcome == "advanced":
                waits.append(interval)
        if waits:
            time.sleep(min(waits))


def advance_or_wait(session: Session, step: Step, interval: float, *, resume: bool) -> Advance:
    """advance, for a watch or `--all`: a contract that finds the environment held by another
    operator waits for it (a stage move never needs it), and the other steps go on."""
    try:
        return advance(session, step, restart=False, resume=resume)
    except EnvironmentLocked as exc:
        return Advance(step.id, "holding", f"at 100%, its contract waits for the environment: {exc}", interval)


def _settle(session: Session, step: Step, result: Advance) -> RolloutError | None:
    """What a watch does with one advance: say it (unless an event did already), and for a
    refusal halt the rollout (a metric gate) or abort it (a check). Returns the error that ends
    a watch of this one step."""
    if result.outcome not in ("advanced", "finalized") and not result.gate:
        session.report(session.event(f"advance.{result.outcome}", result.message, step_id=step.id,
                                     ok=result.outcome != "refused"))
    if result.outcome != "refused":
        return None
    if result.gate:
        return _halt(session, step, result)
    if session.state_of(step.id).state != ROLLING_OUT:  # another command moved it meanwhile
        return Stopped(f"step {step.id!r}: {result.message}; the rollout was moved by another command meanwhile")
    abort(session, step, f"--watch: {result.message}")
    return StepFailed(f"step {step.id!r}: {result.message}; the rollout was aborted and flag {step.flag} is off")


def _halt(session: Session, step: Step, result: Advance) -> RolloutError:
    """A gate stopped the rollout: a failed one sends the flag back to the previous stage (or off,
    as the step says), an inconclusive one leaves it; either way the rollout is halted until an
    operator says `rollout advance STEP`. Returns the error that ends the watch."""
    stages = session.plan.stages(step)
    with session.step_row(step.id) as current:
        if current.state != ROLLING_OUT or current.halted:
            return Stopped(f"step {step.id!r}: {result.message}; another command moved the rollout meanwhile (now "
                           f"{current.state}{', halted' if current.halted else ''}), so this watch leaves it")
        if result.gate == "failed":
            back = current.stage - 1 if stages.on_failure == "previous" and current.stage else None
            if back is None:
                _flag_off(session, step, f"gate failed: {result.message}")
            else:
                _set_flag(session, step, stages.stages[back], f"gate failed: {result.message}", said="gate failed")
            state.set_stage(session.conn, session.env, step.id, back)
            where = "off" if back is None else f"{stages.stages[back]}%"
            session.record("rollout.reverted", f"{result.message}; flag {step.flag} back to {where}",
                           step_id=step.id, ok=False, detail={"stage": back})
        state.set_halted(session.conn, session.env, step.id, result.message)
        session.record("rollout.halted", f"rollout halted: {result.message}; `rollout advance {step.id}` resumes "
                       "it once you have looked", step_id=step.id, ok=False)
    if result.gate == "failed":
        return StepFailed(f"step {step.id!r}: {result.message}; flag {step.flag} went back to {where} and the "
                          f"rollout is halted: `rollout advance {step.id}` resumes it, `rollout abort {step.id}` "
                          "stops it")
    return Stopped(f"step {step.id!r}: {result.message}; the rollout is halted where it was (flag {step.flag} "
                   f"unchanged) for a person to look: `rollout advance {step.id}` resumes it")


def abort(session: Session, step: Step, reason: str | None) -> None:
    """Turn the step's flag off at once and park the rollout. Needs no environment lock."""
    if step.flag is None:
        raise UsageError(f"step {step.id!r} has no flag to abort")
    current = session.state_of(step.id)
    if current.state != ROLLING_OUT:
        raise UsageError(f"step {step.id!r} is {current.state}; only a rollout in progress can be aborted "
                         f"(to turn the flag off anyway: `rollout flags set {step.flag} off`)")
    with session.step_row(step.id) as current:
        if current.state != ROLLING_OUT:
            raise UsageError(f"step {step.id!r} became {current.state} meanwhile; only a rollout in progress can be "
                             "aborted")
        old = _flag_off(session, step, reason or f"abort of {step.id}")
        session.transition(step.id, ABORTED, f"rollout aborted: flag {step.flag} off (was {old.shown if old else '?'})"
                           + (f": {reason}" if reason else ""))


def _flag_off(session: Session, step: Step, reason: str) -> flags.FlagValue | None:
    """The kill switch: set the step's flag off (the old shape); returns the value it had. `abort`,
    `rollback` and a failed gate use it."""
    return _set_flag(session, step, 0, reason)


def _set_flag(session: Session, step: Step, percent: int, reason: str, said: str | None = None
              ) -> flags.FlagValue | None:
    """Set the step's flag to `percent` (0: off) with its history row (`reason`) and an event
    (saying `said`, else the reason), in the caller's transaction; returns the value it had."""
    old, new = flags.write(session.conn, session.env, step.flag, percent > 0, percent, session.actor, reason)
    session.record("flag.set", f"flag {step.flag}: {old.shown if old else 'unset'} -> {new.shown} ({said or reason})",
                   step_id=step.id, detail={"flag": step.flag, "enabled": percent > 0, "percent": percent,
                                            "reason": reason})
    return old


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


def _require_clean_lint(session: Session, step: Step) -> None:
    """The preview's findings, before anything changes: an error-level one the step does not
    allow stops it, exactly as `rollout plan` would report it."""
    findings = step_findings(session.conn, session.plan, step)
    noted = [f for f in findings if not f.blocking]
    if noted:  # one line, not one per finding: `rollout plan STEP` lists them with their reasons
        warnings = sum(1 for f in noted if not f.allowed)
        accepted = len(noted) - warnings
        parts = [f"{warnings} lint warning{'' if warnings == 1 else 's'}"] * bool(warnings) + \
            [f"{accepted} accepted finding{'' if accepted == 1 else 's'}"] * bool(accepted)
        session.report(session.event("lint", f"{' and '.join(parts)} ({', '.join(sorted({f.rule for f in noted}))}): "
                                     f"`rollout plan {step.id}` shows them", step_id=step.id, ok=True))
    blocking = [f for f in findings if f.blocking]
    if blocking:
        listed = "\n".join(f"  {f.rule} ({f.where}): {f.message}" + (f"\n    safe alternative: {f.alternative}"
                                                                       if f.alternative else "") for f in blocking)
        session.record("lint.blocked", f"{len(blocking)} blocking lint finding(s): "
                       f"{', '.join(f.rule for f in blocking)}", step_id=step.id, ok=False,
                       detail={"findings": [f.as_json() for f in blocking]})
        raise StepFailed(f"step {step.id!r} was not started: {len(blocking)} blocking finding(s):\n{listed}\n"
                         f"Fix the migration, or accept a rule in the step with allow: [{{rule: ..., reason: ...}}]")


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
        if session.lock is not None:  # never run DDL once another operator could hold the environment
            session.lock.check(f"step {step.id!r}: migration {migration.id}")
        if direction == "rollback":
            _restore(session, step, migration)
        elif restores := [j.name for j in step.backfills if j.restores == migration.id]:
            # a checkpoint left by an earlier rollback belongs to values that were put back then
            session.conn.execute("DELETE FROM rollout.backfills WHERE env = %s AND step_id = %s AND name = ANY (%s)",
                                 (session.env, step.id, restores))
        _run_one(session, step, migration, phase, direction)
    return len(todo)


def _restore(session: Session, step: Step, migration: Migration) -> None:
    """The jobs that put back, in batches, the values `migration` kept, before its rollback drops
    them. Each batch commits with its checkpoint, so a rollback stopped here continues where it
    was; a finished job is not run again."""
    for job in step.backfills:
        if job.restores != migration.id:
            continue
        outcome = Engine(session, step, job, session.progress).run()
        if outcome != "done":
            raise BackfillStopped(f"step {step.id!r}: {job.name}, which restores values before {migration.id} is "
                                  f"rolled back, is {outcome}; `rollout rollback {step.id}` continues it from its "
                                  "checkpoint")


def _run_one(session: Session, step: Step, migration: Migration, phase: str, direction: str) -> None:
    verb = "applied" if direction == "apply" else "rolled back"
    # the file that runs in this direction: the rollback's own file when rolling back (a generated
    # migration is named by where the plan declares it)
    relative = migration.origin or os.path.relpath(migration.source(Direction(direction))[0], session.plan.directory)
    started = time.monotonic()
    def backup(tables: list[str]) -> None:
        present = [t for t in tables if session.conn.execute(
            "SELECT 1 FROM pg_class WHERE oid = to_regclass(%s) AND relkind IN ('r', 'p', 'm')", (t,)).fetchone()]
        if not session.backup or not present:
            return
        path = backup_tables(session.target, session.plan.directory, f"{step.id}-{migration.id}-{direction}", present)
        session.record("backup", f"backed up {', '.join(present)} to {os.path.relpath(path, session.plan.directory)} "
                       f"before {migration.id}", step_id=step.id, detail={"path": path, "tables": present})

    def record() -> None:
        session.record(f"migration.{direction}", f"{verb} {migration.id} ({time.monotonic() - started:.2f}s)",
                       step_id=step.id, detail={"migration": migration.id, "phase": phase})
        if session.plan.environment(session.env).notify_postgrest:
            # in the migration's own transaction: PostgREST hears it only once the change is committed
            session.conn.execute("NOTIFY pgrst, 'reload schema'")

    hooks = Hooks(
        record=record,
        on_retry=lambda attempt, pause: session.report(session.event(
            "lock.retry", f"{migration.id} hit lock_timeout (attempt {attempt}); retrying in "
            f"{pause * 1000:.0f}ms", step_id=step.id, ok=False)),
        on_cleanup=lambda index: session.record(
            "cleanup", f"dropped invalid index {index} left by an interrupted build", step_id=step.id),
        backup=backup,
    )
    try:
        run_migration(session.conn, session.backend, migration, direction, session.plan.timeouts(step), hooks)
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


def rollback(session: Session, step_id: str, *, cascade: bool = False) -> list[str]:
    """Undo a step through its rollback files; steps that depend on it first, when allowed."""
    step = session.plan.step(step_id)
    states = session.states()
    applied = [s for s in session.plan.dependents(step_id) if states[s.id].state != PENDING]
    if applied and not cascade:
        names = ", ".join(f"{s.id} ({states[s.id].state})" for s in applied)
        raise UsageError(f"cannot roll back {step_id!r}: steps that depend on it are still applied: {names}. "
                         f"Roll those back first, or pass --cascade to roll back {names} and then {step_id!r}")
    undoing = _coupled(session, step, states) if cascade else [*applied, step]
    if len(undoing) > 1:
        session.report(session.event("rollback.cascade", f"--cascade rolls back {len(undoing)} steps, in this order: "
                                     f"{', '.join(s.id for s in undoing)}", step_id=step_id))
    _refuse_shared_flags(session, undoing, states)
    undone = []
    for each in undoing:
        if _rollback_step(session, each):
            undone.append(each.id)
    return undone


def _coupled(session: Session, step: Step, states: dict[str, state.StepState]) -> list[Step]:
    """What --cascade undoes with `step`: the applied steps that depend on it or share its flag
    (a shared flag couples steps: one value sends the application to all their shapes), and what
    those bring in turn; the latest in apply order first, `step` among them in its place."""
    taken, todo = {step.id}, [step]
    while todo:
        current = todo.pop()
        coupled = [*session.plan.dependents(current.id),
                   *(s for s in session.plan.steps if current.flag is not None and s.flag == current.flag)]
        for other in coupled:
            if other.id not in taken and states[other.id].state != PENDING:
                taken.add(other.id)
                todo.append(other)
    return [s for s in reversed(session.plan.order()) if s.id in taken]


def _refuse_shared_flags(session: Session, undoing: list[Step], states: dict[str, state.StepState]) -> None:
    """Rollback turns each undone step's flag off. When that flag also switches a step that stays
    and whose state needs it on (rolling out at a stage, finalizing, done), neither value is
    safe: off sends the application to that step's old shape (gone after its contract), on keeps
    it on the schema being undone. Refuse before anything changes."""
    leaving = {s.id for s in undoing}
    for step in undoing:
        if step.flag is None or states[step.id].state == PENDING:
            continue
        users = [s for s in session.plan.steps if s.flag == step.flag and s.id not in leaving
                 and flags.expected_percent(states[s.id], session.plan.stages(s)) > 0]
        if users:
            names = ", ".join(f"{s.id} ({states[s.id].state})" for s in users)
            ids = ", ".join(s.id for s in users)
            raise UsageError(
                f"cannot roll back {step.id!r}: its flag {step.flag} also switches {names}, which needs it on; "
                f"turning it off would send the application to the old shape of {ids}, leaving it on would point "
                f"it at the schema {step.id!r} is about to drop. Roll them back together with `rollout rollback "
                f"{step.id} --cascade`, or {ids} first (a step still rolling out can be parked with `rollout abort` "
                f"instead)")


def _rollback_step(session: Session, step: Step) -> bool:
    current = session.state_of(step.id).state
    if current == PENDING:
        session.report(session.event("rollback.skip", "nothing to roll back (pending)", step_id=step.id))
        return False
    applied = applied_hashes(session.conn)
    contracted = any(m.hash in applied for m in session.plan.migrations.get((step.id, "finalize"), ()))
    # The application leaves the new shape before it goes: the flag off first, as abort does. After
    # the contract the old shape is gone, so the flag stays on until the contract is undone and
    # its values put back (in batches, which takes a while), and goes off before the expand is.
    with session.step_row(step.id):  # no advance moves the flag between these two writes
        if not contracted:
            _flag_off_for_rollback(session, step)
        if current != ROLLING_BACK:
            session.transition(step.id, ROLLING_BACK, f"rolling back from {current}")
    if contracted:
        _run_migrations(session, step, "finalize", "rollback")
        with session.step_row(step.id):
            _flag_off_for_rollback(session, step)
    _run_migrations(session, step, "migrate", "rollback")
    with session.conn.transaction():
        # the data a backfill wrote went with the schema; a re-apply backfills afresh
        session.conn.execute("DELETE FROM rollout.backfills WHERE env = %s AND step_id = %s", (session.env, step.id))
        session.transition(step.id, PENDING, "rolled back")
    return True


def _flag_off_for_rollback(session: Session, step: Step) -> None:
    if step.flag is not None and flags.read(session.conn, session.plan, session.env)[step.flag].enabled:
        _flag_off(session, step, f"rollback of {step.id}")


def run_backfills(session: Session, step: Step, *, resume: bool = False) -> None:
    """Run the step's backfills in order. Paused or cancelled jobs stop the step until resumed."""
    if resume:
        session.conn.execute(
            "UPDATE rollout.backfills SET state = 'pending', requested = NULL WHERE env = %s AND step_id = %s "
            "AND (state IN ('paused', 'cancelled') OR requested IS NOT NULL)", (session.env, step.id))
    for job in step.forward_backfills:
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
        steps = [s for s in session.plan.order() if states[s.id].state != PENDING]
    return [check_step(session, step) for step in steps]
