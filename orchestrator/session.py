"""A command's session with one environment: its connection, lock, run and event log."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

from . import flags, publish, state
from .database import Target, connect, resolve_target
from .errors import ConnectionLost, RolloutError
from .locks import EnvLock, acquire_env_lock
from .migrations import applied_hashes, yoyo_backend
from .plan import Plan
from .notify import Notifier
from .pooler import refuse_transaction_pooler
from .state import Event

Reporter = Callable[[Event], None]


def default_actor() -> str:
    """Who the audit trail names: $ROLLOUT_ACTOR, else user@host."""
    return os.environ.get("ROLLOUT_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class Session:
    plan: Plan
    target: Target
    conn: psycopg.Connection
    actor: str
    report: Reporter
    run_id: int | None = None
    progress: Callable[[object], None] = field(default=lambda progress: None, repr=False)
    backup: bool = True  # pg_dump tables before destructive statements (--no-backup turns it off)
    lock: EnvLock | None = None  # the environment's lock, for the commands that take it
    notifier: Notifier | None = None  # the environment's webhooks
    _backend: object | None = field(default=None, repr=False)

    @property
    def env(self) -> str:
        return self.target.env

    @property
    def backend(self):
        """yoyo's bookkeeping on this session's connection, created on first use."""
        if self._backend is None:
            self._backend = yoyo_backend(self.conn)  # its tables, if new, are made private as the command ends
        return self._backend

    def states(self) -> dict[str, state.StepState]:
        """The plan's steps' records, each checked: a state edited by hand is refused, never acted on."""
        found = state.step_states(self.conn, self.env)
        for step in self.plan.steps:
            state.checked_state(found[step.id])
        return found

    def state_of(self, step_id: str) -> state.StepState:
        return self.states()[step_id]

    @contextmanager
    def step_row(self, step_id: str) -> Iterator[state.StepState]:
        """A transaction holding the step's row lock, with the step's state as it is now. Every
        change of a rollout's stage, halt or flag goes through one, so that commands which take
        no environment lock (advance, abort) never act on a state another one has just moved."""
        with self.conn.transaction():
            self.conn.execute("SELECT FROM rollout.steps WHERE env = %s AND step_id = %s FOR UPDATE",
                              (self.env, step_id))
            yield self.state_of(step_id)

    @contextmanager
    def holding_environment(self, command: str) -> Iterator[None]:
        """The environment's lock, and a run, for the part of a lock-free command that changes
        the schema (advance's contract). Raises EnvironmentLocked at once when another holds it."""
        if self.lock is not None:
            yield
            return
        self.lock, self.run_id, stale = _take_environment(self.conn, self.plan, self.target, command, self.actor)
        outcome = "failed"
        try:
            self.record_interrupted(stale)
            yield
            outcome = "ok"
        except RolloutError as exc:
            outcome = _outcome(exc)
            raise
        finally:
            _finish_run(self.conn, self.run_id, outcome)
            _republish(self.conn, self.plan, self.env)
            self.lock.release()
            self.lock = self.run_id = None

    def record_interrupted(self, stale: list[dict]) -> None:
        for run in stale:
            self.record("run.interrupted", f"run {run['id']} (`rollout {run['command']}` by {run['actor']}, started "
                        f"{run['started_at']:%Y-%m-%d %H:%M:%S}) ended without finishing; continuing from its "
                        "last committed state", ok=False)

    def event(self, kind: str, message: str, **fields) -> Event:
        return Event(at=None, env=self.env, actor=self.actor, kind=kind, message=self.target.scrub(message), **fields)

    def record(self, kind: str, message: str, **fields) -> Event:
        """Append to the audit trail and show it. Inside a transaction, it commits with it."""
        event = state.insert_event(self.conn, self.run_id, self.event(kind, message, **fields))
        if self.notifier is not None:
            self.notifier.expect(event)
        self.report(event)
        return event

    def transition(self, step_id: str, new: str, message: str, *, phase: str | None = None,
                   error: str | None = None, detail: dict | None = None) -> None:
        """Move a step to `new` and record why, in one transaction."""
        current = self.state_of(step_id).state
        state.check_transition(step_id, current, new)
        with self.conn.transaction():
            state.write_state(self.conn, self.env, step_id, new, self.actor, phase=phase, error=error)
            self.record("state", message, step_id=step_id, from_state=current, to_state=new,
                        ok=new != state.FAILED, detail=detail)


@contextmanager
def open_session(plan: Plan, env: str, *, dsn: str | None, actor: str, command: str, report: Reporter,
                 progress: Callable[[object], None] | None = None, lock: bool = True) -> Iterator[Session]:
    """Connect, take the environment's lock, open a run; close the run however the command ends.

    lock=False is for the commands that must work while another operator holds the
    environment (a flag's kill switch, abort): they change single rows under row locks.
    """
    target = resolve_target(plan, env, dsn)
    conn = connect(target)
    outcome = "failed"
    held = notifier = None
    try:
        if lock:
            held, run_id, stale = _take_environment(conn, plan, target, command, actor)
        else:
            _ensure_schema_briefly(conn, plan, env)
            run_id, stale = None, []
        hooks = plan.environment(env).notify
        notifier = Notifier(target, hooks, os.environ) if hooks else None
        session = Session(plan, target, conn, actor, report, run_id, lock=held, notifier=notifier)
        if progress is not None:
            session.progress = progress
        with conn.transaction():
            conn.execute("INSERT INTO rollout.meta (key, value) VALUES ('environment', to_jsonb(%s::text)) "
                         "ON CONFLICT (key) DO NOTHING", (env,))
            added = flags.sync_defaults(conn, plan, env, actor)
            values = flags.read(conn, plan, env) if added else {}
            for name in added:
                session.record("flag.created", f"flag {name} created here at its plan default: {values[name].shown}")
        session.record_interrupted(stale)
        yield session
        outcome = "ok"
    except RolloutError as exc:
        outcome = _outcome(exc)
        raise
    except psycopg.OperationalError as exc:
        if not conn.broken:
            raise
        raise ConnectionLost(
            f"lost the connection to environment {env!r} at {target.display} "
            f"({' '.join(target.scrub(str(exc)).split())}); everything committed before it is kept. "
            "Run the same command again to continue") from None
    finally:
        if "session" in locals():
            _finish_run(conn, session.run_id, outcome)
        if held is not None:
            _republish(conn, plan, env)
        conn.close()
        if held is not None:
            held.release()
        if notifier is not None:
            notifier.close()


def _outcome(exc: RolloutError) -> str:
    """How a run that raised `exc` ended, as rollout.runs records it."""
    return "stopped" if exc.exit_code == 4 else "step failed"


def _republish(conn: psycopg.Connection, plan: Plan, env: str) -> None:
    """publish.sync again as a command that held the environment ends: what it created (yoyo's
    tables, the originals an operation keeps) got its schema's default privileges, which
    flags_api takes back. Best effort: the command's own outcome stands, and the next command
    that takes the lock does it again."""
    if conn.closed or conn.broken:
        return
    try:
        publish.sync(conn, plan, env)
    except (psycopg.Error, RolloutError):
        pass


def _finish_run(conn: psycopg.Connection, run_id: int | None, outcome: str) -> None:
    """Close the run, unless there is none or the connection is gone (the next run marks it interrupted)."""
    if run_id is None or conn.closed or conn.broken:
        return
    try:
        state.finish_run(conn, run_id, outcome)
    except psycopg.OperationalError:
        pass  # the server went away meanwhile


def _take_environment(conn: psycopg.Connection, plan: Plan, target: Target, command: str,
                      actor: str) -> tuple[EnvLock, int, list[dict]]:
    """The environment's lock (at once, or EnvironmentLocked naming the holder) and a run opened
    under it; the runs a killed process left open are returned, closed as interrupted."""
    refuse_transaction_pooler(conn, target)  # the lock and the session settings need one server session
    refuse_lost_records(conn, plan, target.env)  # before the lock, whose table it would create
    held = acquire_env_lock(conn, target.env)
    try:
        state.ensure_schema(conn)
        publish.sync(conn, plan, target.env)
        run_id, stale = state.begin_run(conn, target.env, command, actor)
    except BaseException:
        held.release()
        raise
    return held, run_id, stale


def refuse_lost_records(conn: psycopg.Connection, plan: Plan, env: str) -> None:
    """Refuse to act when yoyo's log records migrations of a step that rollout's records call pending
    (its row deleted, or the rollout schema dropped): how far the step got (done, rolling out, its
    contract run) and its flag's value are lost, and walking it again could finalize or flip it."""
    applied = applied_hashes(conn)
    if not applied:
        return
    states = state.step_states(conn, env)
    lost = {step.id: [m.id for _, m in plan.step_migrations(step) if m.hash in applied] for step in plan.steps
            if states[step.id].state == state.PENDING}
    lost = {step_id: ids for step_id, ids in lost.items() if ids}
    if not lost:
        return
    where = ("the rollout schema is missing from this database" if not state.schema_exists(conn)
             else f"rollout.steps has no record of them in environment {env!r}")
    named = "; ".join(f"{step_id} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})" for step_id, ids in lost.items())
    raise state.InvalidTransition(
        f"yoyo's log (_yoyo_migration) records migrations of steps rollout's records call pending: {named}; "
        f"{where}. rollout's records were deleted or dropped by hand, and rollout will not guess how far those steps "
        "got (their contract, their flag). Restore the rollout schema from a backup (pg_dump --schema=rollout), then "
        "run the command again")


def _ensure_schema_briefly(conn: psycopg.Connection, plan: Plan, env: str) -> None:
    """Create the state schema if it is missing, or upgrade an older one, holding the environment
    lock only meanwhile."""
    if state.schema_exists(conn) and not state.schema_older(conn):
        state.ensure_schema_current(conn)
        return
    with acquire_env_lock(conn, env):
        state.ensure_schema(conn)
        publish.sync(conn, plan, env)  # an upgrade grants the state to PUBLIC: flags_api takes it back
