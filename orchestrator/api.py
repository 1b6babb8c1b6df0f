"""The library API: one function per command. The CLI parses, calls one of these, formats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psycopg.rows import dict_row

from . import bootstrap, embedded, flags, runner, state
from .backfill import Progress
from .database import connect, drop_database, resolve_target
from .errors import RolloutError, StepFailed, UsageError
from .locks import acquire_env_lock
from .migrations import applied_hashes
from .plan import Plan
from .eject import Ejected, eject
from .init import init
from .plan_loader import load_plan
from .preview import Preview, preview
from .runner import StepReport
from .session import Reporter, open_session, refuse_lost_records
from .state import Event


ProgressHook = Callable[[Progress], None]


def _quiet(event: Event) -> None:
    """The default reporter: the events are in the database already."""


def apply(plan: Plan, env: str, *, dsn: str | None = None, actor: str, target: str | None = None,
          force: bool = False, backup: bool = True, report: Reporter = _quiet,
          progress: ProgressHook | None = None) -> runner.ApplyResult:
    """Apply pending steps (all, or `target` and its dependencies), as far as each can go."""
    if target:
        plan.step(target)
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"apply {target or ''}".strip(), report=report,
                      progress=progress) as s:
        s.backup = backup
        bootstrap.bootstrap_if_empty(s)
        _promotion_gate(s, target, force)
        return runner.apply(s, target)


def _promotion_gate(session, target: str | None, force: bool) -> None:
    """In an environment that comes `after:` another, apply only what is done there (or --force)."""
    upstream = session.plan.environment(session.env).after
    if upstream is None:
        return
    here = session.states()
    todo = [s.id for s in session.plan.order(target) if here[s.id].state != state.DONE]
    if not todo:
        return
    try:
        there = {row.id: row.state for row in status(session.plan, upstream)}
        reason = ""
    except RolloutError as exc:
        there, reason = {}, f" ({upstream} cannot be read: {exc})"
    not_done = [step for step in todo if there.get(step) != state.DONE]
    if not not_done:
        return
    listed = ", ".join(f"{step} ({there.get(step, 'unknown')})" for step in not_done)
    if not force:
        raise StepFailed(f"environment {session.env!r} comes after {upstream!r}, where these steps are not done: "
                         f"{listed}{reason}. Finish them in {upstream} first, or pass --force (it is recorded)")
    session.record("promotion.forced", f"applying before done in {upstream}: {listed}{reason} (--force)", ok=False)


def rollback(plan: Plan, env: str, step_id: str, *, dsn: str | None = None, actor: str, cascade: bool = False,
             backup: bool = True, report: Reporter = _quiet) -> list[str]:
    plan.step(step_id)
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"rollback {step_id}", report=report) as s:
        s.backup = backup
        return runner.rollback(s, step_id, cascade=cascade)


def verify(plan: Plan, env: str, step_id: str | None = None, *, dsn: str | None = None, actor: str,
           report: Reporter = _quiet) -> list[StepReport]:
    if step_id:
        plan.step(step_id)
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"verify {step_id or ''}".strip(), report=report) as s:
        return runner.verify(s, step_id)


def seed(plan: Plan, env: str, rows: int, *, dsn: str | None = None, actor: str, report: Reporter = _quiet) -> None:
    if rows < 1:
        raise UsageError(f"--rows must be at least 1 (got {rows})")
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"db seed --rows {rows}", report=report) as s:
        bootstrap.seed(s, rows)


@dataclass(frozen=True)
class StepStatus:
    id: str
    title: str
    priority: str
    state: str
    flag: str | None
    stage: str | None  # while rolling out: e.g. "25% (2/4)"
    phase: str | None
    error: str | None
    migrations_applied: int
    migrations_total: int
    updated_at: str | None
    updated_by: str | None
    flag_value: str | None = None  # the flag's value here: off, 10%, on
    flag_expected: str | None = None  # the value the step's state implies (flags.expected_percent)
    flag_mismatch: str | None = None  # when they disagree, e.g. "flag f at 50%, stage 1/3 expects 10%"
    halted: str | None = None  # why a gate halted the rollout (`rollout advance STEP` resumes it)


def status(plan: Plan, env: str, *, dsn: str | None = None) -> list[StepStatus]:
    """Each step's state in `env`. Read-only: takes no lock and writes nothing."""
    with connect(resolve_target(plan, env, dsn), "rollout status") as conn:
        return status_of(conn, plan, env)


def status_of(conn, plan: Plan, env: str) -> list[StepStatus]:
    """`status` on a connection the caller holds (a fleet's status reads more on it)."""
    states = state.step_states(conn, env)
    applied = applied_hashes(conn)
    values = flags.read(conn, plan, env)
    live = state.schema_exists(conn) and _live_run(conn, env)
    rows = []
    for step in plan.order():
        current = states[step.id]
        files = [m for phase in ("migrate", "finalize") for m in plan.migrations.get((step.id, phase), ())]
        stages = plan.stages(step)
        stage = None
        if stages and current.state == state.ROLLING_OUT:
            try:
                index = state.checked_stage(step.id, current, len(stages.stages))
                stage = (f"{stages.stages[index]}% ({index + 1}/{len(stages.stages)})" if index is not None
                         else f"not started (0/{len(stages.stages)})")
            except state.InvalidTransition:
                stage = f"stage {current.stage + 1} of {len(stages.stages)}: edited by hand (`rollout abort {step.id}`)"
        flag_value = flag_expected = mismatch = None
        if stages:
            value = values[step.flag]
            actual, expected = value.percent if value.enabled else 0, flags.expected_percent(current, stages)
            flag_value, flag_expected = flags.shown(actual > 0, actual), flags.shown(expected > 0, expected)
            if actual != expected:
                at = f"at {flag_value}" if 0 < actual < 100 else f"is {flag_value}"
                when = current.state
                if current.state == state.ROLLING_OUT:
                    when = (f"stage {current.stage + 1}/{len(stages.stages)}" if current.stage is not None
                            else f"not started (0/{len(stages.stages)})")
                mismatch = f"flag {step.flag} {at}, {when} expects {flag_expected}"
        shown = current.state
        if current.state in (state.MIGRATING, state.FINALIZING, state.ROLLING_BACK) and not live:
            shown = f"{current.state} (interrupted)"  # the command doing it stopped: the same command continues
        rows.append(StepStatus(
            id=step.id, title=step.title, priority=step.priority, state=shown, flag=step.flag, stage=stage,
            phase=current.phase,
            error=current.error, migrations_applied=sum(m.hash in applied for m in files), migrations_total=len(files),
            updated_at=current.updated_at.isoformat() if current.updated_at else None, updated_by=current.updated_by,
            flag_value=flag_value, flag_expected=flag_expected, flag_mismatch=mismatch,
            halted=current.halted if current.state == state.ROLLING_OUT else None,
        ))
    return rows


def events(plan: Plan, env: str, *, dsn: str | None = None, limit: int = 50) -> list[Event]:
    """The latest `limit` events of `env`, oldest first. Read-only."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    with connect(resolve_target(plan, env, dsn), "rollout events") as conn:
        return state.read_events(conn, env, limit)


def advance(plan: Plan, env: str, step_id: str | None = None, *, dsn: str | None = None, actor: str,
            watch: bool = False, interval: float = 10.0, report: Reporter = _quiet, resume: bool = True,
            expect: object = runner.ANY_STAGE) -> list[runner.Advance]:
    """Advance one step's rollout (or, without a step, every rollout in progress) by one stage.
    With watch, keep advancing one step until it is done, aborting on the first failed check.
    A stage move takes no environment lock (row locks keep concurrent commands apart, as for the
    kill switch); only the contract at 100% takes it, for as long as it runs. For one step,
    `resume` lifts a gate's halt, and `expect` is the stage the caller judged it at
    (runner.advance)."""
    steps = [plan.step(step_id)] if step_id else []
    command = f"advance {step_id or '--all'}{' --watch' if watch else ''}"
    with open_session(plan, env, dsn=dsn, actor=actor, command=command, report=report, lock=False) as s:
        refuse_lost_records(s.conn, plan, env)  # a step whose records are gone could be finalized twice
        if watch:
            return [runner.watch(s, steps[0], interval)] if steps else runner.watch_all(s, interval)
        if not steps:  # --all, from cron: a halted rollout waits for a person
            states = s.states()
            steps = [st for st in plan.order() if states[st.id].state == state.ROLLING_OUT]
            return [runner.advance_or_wait(s, step, interval, resume=False) for step in steps]
        return [runner.advance(s, step, resume=resume, expect=expect) for step in steps]


def abort(plan: Plan, env: str, step_id: str, *, reason: str | None = None, dsn: str | None = None, actor: str,
          report: Reporter = _quiet) -> None:
    """Turn the step's flag off at once and mark its rollout aborted; works while others hold the lock."""
    step = plan.step(step_id)
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"abort {step_id}", report=report, lock=False) as s:
        runner.abort(s, step, reason)


def flags_list(plan: Plan, env: str, *, dsn: str | None = None) -> list[flags.FlagValue]:
    """Every declared flag's value in this environment. Read-only."""
    with connect(resolve_target(plan, env, dsn), "rollout flags") as conn:
        return list(flags.read(conn, plan, env).values())


def flag_set(plan: Plan, env: str, name: str, value: str, *, reason: str | None = None, dsn: str | None = None,
             actor: str, report: Reporter = _quiet) -> tuple[flags.FlagValue | None, flags.FlagValue]:
    """Set a flag now (the kill switch: no environment lock needed), with its history and event."""
    flags.declared(plan, name)
    enabled, percent = flags.parse_value(value)
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"flags set {name}", report=report, lock=False) as s:
        with s.conn.transaction():
            old, new = flags.write(s.conn, env, name, enabled, percent, actor, reason)
            s.record("flag.set", f"flag {name}: {old.shown if old else 'unset'} -> {new.shown}"
                     + (f" ({reason})" if reason else ""), detail={"flag": name, "enabled": enabled, "percent": percent})
    return old, new


def flag_target(plan: Plan, env: str, name: str, *, include: list[str] = (), exclude: list[str] = (),
                remove: list[str] = (), reason: str | None = None, dsn: str | None = None, actor: str,
                report: Reporter = _quiet) -> flags.FlagValue:
    """Add subjects a flag always includes or excludes here (ahead of its percentage), or remove
    them; recorded in its history and the events. Needs no environment lock, like `flags set`."""
    flags.declared(plan, name)
    include, exclude, remove = (list(dict.fromkeys(flags.checked_subjects(given)))
                                for given in (include, exclude, remove))
    both = set(include) & set(exclude) or (set(include) | set(exclude)) & set(remove)
    if both:
        raise UsageError(f"subject {sorted(both)[0]!r} is given twice: once each in --include, --exclude, --remove")
    if not (include or exclude or remove):
        raise UsageError("name the subjects: --include ID, --exclude ID or --remove ID (each may be repeated)")
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"flags target {name}", report=report,
                      lock=False) as s:
        if exclude and (contracted := flags.past_contract(s.conn, plan, env, name)):
            raise UsageError(f"flag {name} cannot exclude subjects in {env}: {', '.join(contracted)} ran its contract, "
                             "so the old shape an excluded subject would be sent to is gone")
        with s.conn.transaction():
            value = flags.target(s.conn, env, name, actor, reason, include=include, exclude=exclude, remove=remove)
            moved = flags.shown_targets({"include": include, "exclude": exclude, "remove": remove})
            s.record("flag.targeted", f"flag {name}: {moved}" + (f" ({reason})" if reason else ""),
                     detail={"flag": name, "include": include, "exclude": exclude, "remove": remove})
    return value


def flags_serve(plan: Plan, env: str, *, dsn: str | None = None, host: str, port: int, refresh_seconds: float,
                keys: list[str] | None, actor: str, announce: Callable[[str], None] = print) -> None:
    """Serve the environment's flags over HTTP (OFREP, /metrics, /healthz) until interrupted.
    Flags the database does not hold yet are stored first (their plan defaults and targets), as
    any command that touches the environment does, so a fresh database serves its plan's values;
    once they are stored, the server only reads, and the application's role can run it."""
    from .flag_server import serve  # uvicorn loads only for the server

    with connect(resolve_target(plan, env, dsn), "rollout flags serve") as conn:
        stored = flags.read(conn, plan, env)
    if any(value.source != "database" for value in stored.values()):
        with open_session(plan, env, dsn=dsn, actor=actor, command="flags serve", report=_quiet, lock=False):
            pass
    serve(plan, env, dsn=dsn, host=host, port=port, refresh_seconds=refresh_seconds, keys=keys, announce=announce)


def flags_declared(plan: Plan, name: str) -> None:
    flags.declared(plan, name)


def flag_history(plan: Plan, env: str, name: str, *, dsn: str | None = None) -> list[flags.Change]:
    flags.declared(plan, name)
    with connect(resolve_target(plan, env, dsn), "rollout flags history") as conn:
        return flags.history(conn, env, name)


def backfill_run(plan: Plan, env: str, step_id: str, *, dsn: str | None = None, actor: str, resume: bool = False,
                 report: Reporter = _quiet, progress: ProgressHook | None = None) -> None:
    """Run (or, with resume, first un-pause) the step's backfills; the step's expand must be applied."""
    step = plan.step(step_id)
    if not step.forward_backfills:
        raise UsageError(f"step {step_id!r} declares no backfills in {plan.path}")
    command = f"backfill {'resume' if resume else 'run'} {step_id}"
    with open_session(plan, env, dsn=dsn, actor=actor, command=command, report=report, progress=progress) as s:
        current = s.state_of(step_id).state
        if current == state.ROLLING_BACK:
            raise UsageError(f"step {step_id!r} is rolling back: `rollout rollback {step_id}` continues it, with "
                             "the jobs that restore its values")
        if current in (state.PENDING, state.MIGRATING):
            raise UsageError(f"step {step_id!r} is {current}: its expand migration is not in place; "
                             f"run `rollout apply {step_id}`")
        runner.run_backfills(s, step, resume=resume)


def backfill_request(plan: Plan, env: str, step_id: str, action: str, *, dsn: str | None = None,
                     actor: str) -> list[str]:
    """Ask the step's backfills to pause or cancel at their next batch boundary.

    Takes no environment lock: the run it stops holds it. A job that is not running stops at once.
    """
    step = plan.step(step_id)
    if not step.backfills:
        raise UsageError(f"step {step_id!r} declares no backfills in {plan.path}")
    stopped = "paused" if action == "pause" else "cancelled"
    target = resolve_target(plan, env, dsn)
    with connect(target, f"rollout backfill {action}") as conn, conn.transaction():
        if not state.schema_exists(conn):
            raise UsageError(f"nothing has run in environment {env!r} yet")
        names = []
        started = {name for (name,) in conn.execute(
            "SELECT name FROM rollout.backfills WHERE env = %s AND step_id = %s", (env, step_id))}
        for job in step.backfills_known(started):
            row = conn.execute(
                """
                INSERT INTO rollout.backfills (env, step_id, name, state) VALUES (%(env)s, %(step)s, %(name)s, %(stopped)s)
                ON CONFLICT (env, step_id, name) DO UPDATE
                SET requested = CASE WHEN rollout.backfills.state = 'running' THEN %(action)s END,
                    state = CASE WHEN rollout.backfills.state IN ('pending', 'failed', 'paused')
                                 THEN %(stopped)s ELSE rollout.backfills.state END
                WHERE rollout.backfills.state NOT IN ('done', 'cancelled')
                RETURNING name, state
                """,
                {"env": env, "step": step_id, "name": job.name, "stopped": stopped, "action": action},
            ).fetchone()
            if row:
                names.append(job.name)
        state.insert_event(conn, None, state.Event(
            at=None, env=env, actor=actor, kind=f"backfill.{action}", step_id=step_id, ok=True,
            message=f"{action} requested for backfills {', '.join(names) or '(none active)'}"))
    return names


@dataclass(frozen=True)
class BackfillStatus:
    step_id: str
    name: str
    table: str
    state: str
    rows_covered: int
    rows_changed: int
    rows_failed: int
    estimate: int | None
    batches: int
    batch_size: int | None
    rows_per_second: float | None
    eta_seconds: float | None
    error: str | None
    waiting: str | None = None  # why it waits between batches now (a standby behind)


def backfill_status(plan: Plan, env: str, step_id: str | None = None, *,
                    dsn: str | None = None) -> list[BackfillStatus]:
    """Progress of the backfills (of one step, or all). Read-only; estimates come from the catalog."""
    steps = [plan.step(step_id)] if step_id else list(plan.order())
    with connect(resolve_target(plan, env, dsn), "rollout backfill status") as conn:
        rows = {}
        if state.schema_exists(conn):
            with conn.cursor(row_factory=dict_row) as cur:
                for row in cur.execute("SELECT * FROM rollout.backfills WHERE env = %s", (env,)):
                    rows[(row["step_id"], row["name"])] = row
        live = bool(rows) and _live_run(conn, env)
        result = []
        for step in steps:
            for job in step.backfills_known({name for step_id, name in rows if step_id == step.id}):
                row = rows.get((step.id, job.name), {})
                if row.get("state") == "running" and not live:  # its command was stopped or killed
                    row = {**row, "state": "interrupted"}
                estimate = conn.execute("SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint END FROM pg_class "
                                        "WHERE oid = to_regclass(%s)", (job.table,)).fetchone()
                estimate = estimate[0] if estimate else None
                covered, seconds = row.get("rows_covered", 0), row.get("active_seconds", 0.0)
                rate = covered / seconds if seconds else None
                left = max(estimate - covered, 0) if estimate is not None else None
                result.append(BackfillStatus(
                    step.id, job.name, job.table, row.get("state", "pending"), covered, row.get("rows_changed", 0),
                    row.get("rows_failed", 0), max(estimate, covered) if estimate is not None else None,
                    row.get("batches", 0), row.get("batch_size"), rate,
                    left / rate if rate and left is not None and row.get("state") == "running" else None,
                    row.get("error"), row.get("waiting") if row.get("state") == "running" else None))
    return result


def _live_run(conn, env: str) -> bool:
    """Whether a command is working on `env` now: an unfinished run whose session is alive."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM rollout.runs AS r JOIN pg_stat_activity AS a ON a.pid = r.backend_pid "
        "WHERE r.env = %s AND r.finished_at IS NULL)", (env,)).fetchone()[0]


def embedded_environment(plan: Plan, env: str) -> None:
    """`db` commands manage the embedded server; refuse them for other environments."""
    environment = plan.environment(env)
    if environment.database != "embedded":
        uses = "a fleet of databases" if environment.is_fleet else f"${environment.dsn_env}"
        raise UsageError(f"environment {env!r} is not embedded (it uses {uses}); `rollout db` manages the embedded "
                         "server only")


def reset(plan: Plan, env: str) -> None:
    """Drop the embedded environment's database; the next command starts from its bootstrap."""
    embedded_environment(plan, env)
    with connect(resolve_target(plan, env), "rollout db reset") as conn:
        acquire_env_lock(conn, env).release()  # never drop a database another operator is working in
    drop_database(plan, env)


__all__ = [
    "load_plan", "apply", "rollback", "verify", "status", "events", "advance", "abort", "flags_list", "flag_set",
    "flag_history", "backfill_run", "backfill_request", "backfill_status", "seed", "reset", "embedded",
    "preview", "eject", "init", "Preview", "Ejected",
]
