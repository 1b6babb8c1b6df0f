"""One plan across a fleet of databases, wave by wave.

A fleet environment lists many databases (fleet_targets.py). Every target is a whole rollout
environment: `apply` and `advance` run on each exactly as on one database, under its own lock,
with its state and events in it. That is what makes a fleet run safe to kill and to share:
- a killed run is run again: each target continues where it stopped, and a target that is done
  has nothing left to do (its records say so), so no migration runs twice;
- two processes on one fleet (two machines, two CI jobs) each skip a target the other holds
  (its lock is taken) and come back to it at the end of the wave, when it is done or free;
- an unreachable target is retried, then counted as a failure of its wave.

Waves run in order; within a wave at most `parallel` targets are worked on at once, each by one
worker with the connections one command on one database holds (two or three), so a run's
connections are bounded by `parallel`, whatever the fleet's size. A failure stops the run after
the targets in flight (`on_error: stop`), or once the wave's failures pass `failure_limit`
(`on_error: continue`); a wave starts only once the one before it is done and its gates passed.
The kill switch (`flags set`, `abort`) skips the waves: every target at once, KILL_PARALLEL at
a time.

Workers are daemon threads: Ctrl-C (or SIGTERM) ends the command at once, and the targets in
flight lose their connections, so PostgreSQL rolls back what they had not committed; what they
had (each migration, each backfill batch commits with its record) stays, and the next run
continues from there.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import api, flags, gates, state
from .database import connect
from .errors import EXIT_STEP_FAILED, DatabaseUnavailable, EnvironmentLocked, RolloutError
from .fleet_targets import Member, Selection, members, select, waves
from .plan import Plan
from .plan_parts import Wave

KILL_PARALLEL = 16  # the kill switch and read-only views: every target at once, this many workers
ATTEMPTS = 3  # an unreachable target is tried this many times, RETRY_SECONDS apart (doubling)
RETRY_SECONDS = 1.0
BUSY_SECONDS = 1.0  # how often to look again at a target another process holds

Say = Callable[[str], None]


class Waiting(Exception):
    """A target cannot go on yet, and that is no failure (a stage's hold time is not over): the
    waves after it wait for the next run."""


@dataclass
class Outcome:
    target: str
    wave: str
    result: str  # done | failed | waiting | not started
    message: str
    seconds: float = 0.0
    exit_code: int = 0  # a failure's: the code one database's command would have exited with


@dataclass
class FleetRun:
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: str | None = None  # why the run ended before the last wave
    stopped_by: str | None = None  # failure | gate | inconclusive (a gate could not be measured) | waiting

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "failed"]

    @property
    def exit_code(self) -> int:
        """The failures' own code when they agree (4: a paused backfill; 2: unreachable), else 1;
        a gate that failed is 1, one that could not be measured 4."""
        codes = {o.exit_code for o in self.failed}
        if self.stopped_by == "inconclusive":
            codes.add(4)
        if self.stopped_by == "gate":
            codes.add(EXIT_STEP_FAILED)
        return 0 if not codes else codes.pop() if len(codes) == 1 else EXIT_STEP_FAILED


def _quiet(line: str) -> None:
    """The default: outcomes are returned, and each target's events are in its database."""


def chosen(plan: Plan, env: str, names: tuple[str, ...] = (), labels: dict[str, str] | None = None) -> Selection:
    """The fleet's targets a command acts on (all of them without names or labels), read once."""
    return select(members(plan, env), names, labels)


def _attempt(member: Member, work: Callable[[Member], str], say: Say) -> tuple[str, str, int]:
    """Run `work` on one target: (result, message, exit code); an unreachable target is tried
    ATTEMPTS times."""
    delay = RETRY_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return "done", work(member), 0
        except EnvironmentLocked as exc:
            return "busy", str(exc), exc.exit_code
        except Waiting as exc:
            return "waiting", str(exc), 0
        except DatabaseUnavailable as exc:
            if attempt == ATTEMPTS:
                return "failed", f"unreachable after {ATTEMPTS} attempts: {exc}", exc.exit_code
            say(f"  {member.name}: unreachable, trying again in {delay:.0f}s ({attempt}/{ATTEMPTS})")
            time.sleep(delay)
            delay *= 2
        except RolloutError as exc:
            return "failed", str(exc), exc.exit_code
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns


class _Workers:
    """Daemon threads, one per target in flight, reporting into a queue (see the module's docstring)."""

    def __init__(self) -> None:
        self.results: queue.Queue = queue.Queue()
        self.running = 0

    def start(self, member: Member, call: Callable[[Member], object]) -> None:
        def run() -> None:
            try:
                self.results.put((member, call(member)))
            except BaseException as exc:  # a bug: hand it to the main thread, never lose it
                self.results.put((member, exc))

        self.running += 1
        threading.Thread(target=run, name=f"rollout {member.name}", daemon=True).start()

    def next(self) -> tuple[Member, object]:
        member, value = self.results.get()
        self.running -= 1
        if isinstance(value, BaseException) and not isinstance(value, RolloutError):
            raise value
        return member, value


def run_waves(planned: list[tuple[Wave, list[Member]]], work: Callable[[Member], str], say: Say = _quiet,
              environ: dict[str, str] | None = None) -> FleetRun:
    """Work on every target, wave by wave (see the module's docstring)."""
    run = FleetRun()
    for number, (wave, targets) in enumerate(planned):
        if run.stopped:
            run.outcomes += [Outcome(m.name, wave.name, "not started", run.stopped) for m in targets]
            continue
        if not targets:
            continue
        say(f"wave {wave.name}: {len(targets)} target{'s' if len(targets) != 1 else ''}, {wave.parallel} at a time")
        outcomes = _run_wave(wave, targets, work, say)
        run.outcomes += outcomes
        failed = [o for o in outcomes if o.result == "failed"]
        waiting = [o for o in outcomes if o.result == "waiting"]
        limit = _tolerated(wave)
        if limit is not None and len(failed) > limit:
            run.stopped_by = "failure"
            run.stopped = (f"wave {wave.name} stopped at {len(failed)} failed target{'s' if len(failed) != 1 else ''} "
                           f"({'on_error: stop' if wave.on_error == 'stop' else f'failure_limit {limit}'})")
        elif waiting:
            run.stopped_by = "waiting"
            run.stopped = f"wave {wave.name} waits: {waiting[0].target}: {waiting[0].message}"
        elif wave.gates and number + 1 < len(planned):
            verdict = _gates(wave, environ if environ is not None else dict(os.environ), say)
            if verdict:
                run.stopped_by, run.stopped = verdict
    return run


def _tolerated(wave: Wave) -> int | None:
    """How many failed targets the wave goes on past (None: any number)."""
    return 0 if wave.on_error == "stop" else wave.failure_limit


def _run_wave(wave: Wave, targets: list[Member], work: Callable[[Member], str], say: Say) -> list[Outcome]:
    """At most `parallel` targets at once; a target another process holds waits at the back."""
    waiting, held, told, outcomes = list(targets), [], set(), []
    started: dict[str, float] = {}
    limit = _tolerated(wave)
    workers = _Workers()
    while waiting or held or workers.running:
        failures = sum(o.result == "failed" for o in outcomes)
        if limit is not None and failures > limit:  # let the ones in flight finish, start no more
            waiting, held = [], waiting + held
            if not workers.running:
                return outcomes + [Outcome(m.name, wave.name, "not started", "the wave stopped") for m in held]
        while waiting and workers.running < wave.parallel:
            member = waiting.pop(0)
            started[member.name] = time.monotonic()
            workers.start(member, lambda m: _attempt(m, work, say))
        if not workers.running:  # only targets another process holds: look again once it has let them go
            time.sleep(BUSY_SECONDS)
            waiting, held = held, []
            continue
        member, (result, message, code) = workers.next()
        if result == "busy":
            if member.name not in told:
                told.add(member.name)
                say(f"  {member.name}: held by another rollout, coming back to it ({message})")
            held.append(member)
            continue
        outcomes.append(Outcome(member.name, wave.name, result, message, time.monotonic() - started[member.name],
                                code))
        say(f"  {dict(done='✓', failed='✗', waiting='…')[result]} {member.name}: {message}")
    return outcomes


def _gates(wave: Wave, environ: dict[str, str], say: Say) -> tuple[str, str] | None:
    """Measure the wave's gates before the next wave: (gate | inconclusive, why the run stops) or None."""
    for gate in wave.gates:
        verdicts: list[str] = []
        while True:
            measured = gates.measure(gate, environ)
            verdicts.append(measured.verdict)
            say(f"  gate {gate.name}: {measured.shown()}")
            verdict, why = gates.tally(verdicts, gate)
            if verdict == "passed":
                break
            if verdict in ("failed", "inconclusive"):
                return ("gate" if verdict == "failed" else verdict), f"wave {wave.name}: gate {gate.name} {verdict}: {why}"
            time.sleep(gate.interval / 1000)
    return None


# -- the commands ------------------------------------------------------------------------------

def _planned(plan: Plan, env: str, targets: Selection) -> list[tuple[Wave, list[Member]]]:
    return waves(plan.environment(env), targets)


def apply(plan: Plan, env: str, targets: Selection, *, actor: str, step: str | None = None,
          force: bool = False, backup: bool = True, say: Say = _quiet) -> FleetRun:
    """`rollout apply` on every target, wave by wave."""
    if step:
        plan.step(step)

    def work(member: Member) -> str:
        result = api.apply(plan, env, dsn=member.conninfo, actor=actor, target=step, force=force, backup=backup)
        said = [f"done now: {', '.join(result.finished)}"] if result.finished else []
        reasons: dict[str, list[str]] = {}
        for waiting, why in result.waiting.items():
            reasons.setdefault(why, []).append(waiting)
        said += [f"{why}: {', '.join(steps)}" for why, steps in reasons.items()]
        return "; ".join(said) or "every step done already"

    return run_waves(_planned(plan, env, targets), work, say)


@dataclass(frozen=True)
class _Rollout:
    """A step on one target, as `advance` judged it: its state, stage index (None: not started), halt."""

    state: str
    stage: int | None
    halted: str | None

    @property
    def rank(self) -> int:
        """Its stage in order, not started (-1) before the first."""
        return -1 if self.stage is None else self.stage


def advance(plan: Plan, env: str, targets: Selection, *, actor: str, step: str | None = None,
            say: Say = _quiet) -> FleetRun:
    """Move a rollout (or every rollout in progress) one stage on across the fleet, wave by wave,
    each target checked on its own. Targets ahead of the fleet's lowest stage wait for the rest,
    so a run killed half-way, run again, levels the fleet instead of pushing the first waves on;
    each move names the stage it was judged at, so a target another run moved meanwhile is left
    as it is. A rollout a gate halted moves only when the operator names its step (as on one
    database: `--all` leaves it for a person)."""
    planned, named = _planned(plan, env, targets), step is not None
    seen = {member.name: value for member, value in _each(targets.chosen, lambda m: _rollouts(plan, env, m))
            if not isinstance(value, Exception)}  # an unreachable target is reported by its wave
    steps = [plan.step(step)] if step else [
        s for s in plan.order() if any(row[s.id].state == state.ROLLING_OUT for row in seen.values())]
    run = FleetRun()
    for current in steps:
        lowest = min((row[current.id].rank for row in seen.values() if row[current.id].state == state.ROLLING_OUT),
                     default=None)

        def work(member: Member, step=current, lowest=lowest) -> str:
            here = seen[member.name][step.id] if member.name in seen else _rollouts(plan, env, member)[step.id]
            if here.state != state.ROLLING_OUT:
                return f"{step.id} is {here.state} here: nothing to advance"
            if lowest is not None and here.rank > lowest:
                return f"{step.id} is ahead of the fleet ({_stage(here.rank)}): it waits for the others"
            if here.halted and not named:
                raise Waiting(f"{step.id} is halted ({here.halted}); `rollout advance {step.id}` resumes it")
            [moved] = api.advance(plan, env, step.id, dsn=member.conninfo, actor=actor, resume=named,
                                  expect=here.stage)
            if moved.outcome == "holding":
                now = _rollouts(plan, env, member)[step.id]
                if (now.state, now.stage) != (here.state, here.stage):  # another run moved it as this one did
                    return f"{step.id}: another command moved it meanwhile: left as it is"
                raise Waiting(f"{step.id}: {moved.message}")
            if moved.outcome in ("refused", "halted"):
                raise _Refused(f"{step.id}: {moved.outcome}: {moved.message}")
            return f"{step.id}: {moved.message}"

        say(f"{current.id}: the fleet is at {_stage(lowest)} at the lowest; the targets there move one stage on")
        part = run_waves(planned, work, say)
        run.outcomes += part.outcomes
        if part.stopped:
            run.stopped, run.stopped_by = part.stopped, part.stopped_by
            break
    return run


class _Refused(RolloutError):
    """A target's stage checks or gates refused the move: a failure of its wave."""

    exit_code = EXIT_STEP_FAILED


def _stage(rank: int | None) -> str:
    return "the start" if rank is None or rank < 0 else f"stage {rank + 1}"


def _rollouts(plan: Plan, env: str, member: Member) -> dict[str, _Rollout]:
    """Each step of the plan on one target, read now."""
    with connect(member.target(env), "rollout advance") as conn:
        states = state.step_states(conn, env)
    return {s.id: _Rollout(states[s.id].state, states[s.id].stage, states[s.id].halted) for s in plan.order()}


def _each(targets: Iterable[Member], read: Callable[[Member], object],
          parallel: int = KILL_PARALLEL) -> list[tuple[Member, object]]:
    """`read` on every target, `parallel` at a time: each target's value, or the RolloutError it raised."""
    def attempt(member: Member) -> object:
        try:
            return read(member)
        except RolloutError as exc:
            return exc

    pending, workers, found = list(targets), _Workers(), {}
    while pending or workers.running:
        while pending and workers.running < parallel:
            workers.start(pending.pop(0), attempt)
        member, value = workers.next()
        found[member.name] = (member, value)
    return [found[m.name] for m in targets]


def _everywhere(targets: Selection, work: Callable[[Member], str], say: Say) -> FleetRun:
    """The kill switch's way: every target at once, no waves."""
    run = FleetRun()
    for member, value in _each(targets.chosen, work):
        failed = isinstance(value, RolloutError)
        run.outcomes.append(Outcome(member.name, "all", "failed" if failed else "done", str(value),
                                    exit_code=value.exit_code if failed else 0))
        say(f"  {'✗' if failed else '✓'} {member.name}: {value}")
    return run


def flag_set(plan: Plan, env: str, targets: Selection, name: str, value: str, *, actor: str,
             reason: str | None = None, say: Say = _quiet) -> FleetRun:
    """The kill switch on the whole fleet at once: no waves. The name and value are checked once,
    before any target is touched."""
    api.flags_declared(plan, name)
    flags.parse_value(value)

    def work(member: Member) -> str:
        old, new = api.flag_set(plan, env, name, value, reason=reason, dsn=member.conninfo, actor=actor)
        return f"{old.shown if old else 'unset'} -> {new.shown}"

    return _everywhere(targets, work, say)


def abort(plan: Plan, env: str, targets: Selection, step: str, *, actor: str, reason: str | None = None,
          say: Say = _quiet) -> FleetRun:
    plan.step(step)

    def work(member: Member) -> str:
        api.abort(plan, env, step, reason=reason, dsn=member.conninfo, actor=actor)
        return f"{step} aborted, its flag off"

    return _everywhere(targets, work, say)


@dataclass
class TargetStatus:
    target: str
    wave: str
    labels: dict[str, str]
    steps: list[api.StepStatus] | None  # None: unreachable
    error: str | None = None
    apply_seconds: float | None = None  # its last finished apply, for the ETA
    last_failure: str | None = None  # its latest run failed: the command and the last failed event's message

    @property
    def done(self) -> bool:
        return self.steps is not None and all(s.state == state.DONE for s in self.steps)

    @property
    def applied(self) -> bool:
        """Every step as far as `apply` takes it: done, or rolling out (advance takes it on)."""
        return self.steps is not None and all(s.state in (state.DONE, state.ROLLING_OUT) for s in self.steps)


@dataclass
class FleetStatus:
    env: str
    targets: list[TargetStatus]
    waves: list[tuple[Wave, list[str]]]

    def eta_seconds(self) -> float | None:
        """How long `apply` needs for the targets it has not brought as far as it can, at the pace
        of the targets' last applies, in each wave's parallel (None: nothing to go by, or nothing left)."""
        paces = [t.apply_seconds for t in self.targets if t.apply_seconds is not None]
        left = {t.target for t in self.targets if not t.applied}
        if not paces or not left:
            return None
        pace = sum(paces) / len(paces)
        return sum(pace * len(left & set(names)) / wave.parallel for wave, names in self.waves)


def status(plan: Plan, env: str, targets: Selection) -> FleetStatus:
    """Every target's steps, read at once (at most KILL_PARALLEL connections). Read-only."""
    planned = _planned(plan, env, targets)
    wave_of = {m.name: wave.name for wave, ms in planned for m in ms}

    def read(member: Member) -> TargetStatus:
        with connect(member.target(env), "rollout status") as conn:
            seen = TargetStatus(member.name, wave_of[member.name], member.labels, api.status_of(conn, plan, env))
            if not state.schema_exists(conn):
                return seen
            seconds = conn.execute(
                "SELECT extract(epoch FROM finished_at - started_at)::float8 FROM rollout.runs WHERE env = %s "
                "AND command LIKE 'apply%%' AND outcome = 'ok' ORDER BY id DESC LIMIT 1", (env,)).fetchone()
            failure = conn.execute(
                "SELECT r.command, (SELECT e.message FROM rollout.events AS e WHERE e.run_id = r.id AND NOT e.ok "
                "ORDER BY e.id DESC LIMIT 1) FROM rollout.runs AS r WHERE r.env = %s AND r.id = (SELECT max(id) "
                "FROM rollout.runs WHERE env = %s) AND r.outcome = 'step failed'", (env, env)).fetchone()
        seen.apply_seconds = seconds[0] if seconds else None
        seen.last_failure = f"{failure[0]} failed: {failure[1] or 'see rollout events'}" if failure else None
        return seen

    rows = [TargetStatus(member.name, wave_of[member.name], member.labels, None, str(value))
            if isinstance(value, Exception) else value for member, value in _each(targets.chosen, read)]
    return FleetStatus(env, rows, [(wave, [m.name for m in ms]) for wave, ms in planned])


def events(plan: Plan, env: str, targets: Selection, limit: int = 50) -> tuple[list[tuple[str, state.Event]],
                                                                                  dict[str, str]]:
    """The audit trails of the fleet merged: the latest `limit` events, oldest first, each with its
    target; and the targets that could not be read, with why (as `status` reports them)."""
    merged, unread = [], {}
    for member, value in _each(targets.chosen, lambda m: api.events(plan, env, dsn=m.conninfo, limit=limit)):
        if isinstance(value, RolloutError):
            unread[member.name] = str(value)
        else:
            merged += [(member.name, event) for event in value]
    merged.sort(key=lambda pair: pair[1].at)
    return merged[-limit:], unread
