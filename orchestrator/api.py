"""The library API: one function per command. The CLI parses, calls one of these, formats."""

from __future__ import annotations

from dataclasses import dataclass

from . import bootstrap, embedded, runner, state
from .database import connect, drop_database, resolve_target
from .errors import UsageError
from .locks import acquire_env_lock
from .migrations import applied_hashes
from .plan import Plan
from .plan_loader import load_plan
from .runner import StepReport
from .session import Reporter, open_session
from .state import Event


def _quiet(event: Event) -> None:
    """The default reporter: the events are in the database already."""


def apply(plan: Plan, env: str, *, dsn: str | None = None, actor: str, target: str | None = None,
          report: Reporter = _quiet) -> list[str]:
    """Apply pending steps (all, or `target` and its dependencies). Returns the steps finished now."""
    if target:
        plan.step(target)
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"apply {target or ''}".strip(), report=report) as s:
        bootstrap.bootstrap_if_empty(s)
        return runner.apply(s, target)


def rollback(plan: Plan, env: str, step_id: str, *, dsn: str | None = None, actor: str, cascade: bool = False,
             report: Reporter = _quiet) -> list[str]:
    plan.step(step_id)
    with open_session(plan, env, dsn=dsn, actor=actor, command=f"rollback {step_id}", report=report) as s:
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
    phase: str | None
    error: str | None
    migrations_applied: int
    migrations_total: int
    updated_at: str | None
    updated_by: str | None


def status(plan: Plan, env: str, *, dsn: str | None = None) -> list[StepStatus]:
    """Each step's state in `env`. Read-only: takes no lock and writes nothing."""
    target = resolve_target(plan, env, dsn)
    with connect(target, "rollout status") as conn:
        states = state.step_states(conn, env)
        applied = applied_hashes(conn)
    rows = []
    for step in plan.order():
        current = states.get(step.id, state.StepState(step.id))
        files = [m for phase in ("migrate", "finalize") for m in plan.migrations.get((step.id, phase), ())]
        rows.append(StepStatus(
            id=step.id, title=step.title, priority=step.priority, state=current.state, phase=current.phase,
            error=current.error, migrations_applied=sum(m.hash in applied for m in files), migrations_total=len(files),
            updated_at=current.updated_at.isoformat() if current.updated_at else None, updated_by=current.updated_by,
        ))
    return rows


def events(plan: Plan, env: str, *, dsn: str | None = None, limit: int = 50) -> list[Event]:
    """The latest `limit` events of `env`, oldest first. Read-only."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    with connect(resolve_target(plan, env, dsn), "rollout events") as conn:
        return state.read_events(conn, env, limit)


def embedded_environment(plan: Plan, env: str) -> None:
    """`db` commands manage the embedded server; refuse them for other environments."""
    if plan.environment(env).database != "embedded":
        raise UsageError(f"environment {env!r} is not embedded (it uses ${plan.environment(env).dsn_env}); "
                         "`rollout db` manages the embedded server only")


def reset(plan: Plan, env: str) -> None:
    """Drop the embedded environment's database; the next command starts from its bootstrap."""
    embedded_environment(plan, env)
    with connect(resolve_target(plan, env), "rollout db reset") as conn:
        acquire_env_lock(conn, env)  # never drop a database another operator is working in
    drop_database(plan, env)


__all__ = ["apply", "rollback", "verify", "seed", "status", "events", "reset", "load_plan", "embedded"]
