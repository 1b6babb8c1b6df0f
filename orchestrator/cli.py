"""The `rollout` command: parse arguments, call one api function, format what it returns."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import click
import psycopg
from rich.console import Console
from rich.segment import Segment
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich import box
from rich.table import Table
from rich.text import Text

from . import api, embedded, fleet, fleet_targets, fleet_view, report
from .backfill import Progress as BackfillProgress
from .database import resolve_target
from .errors import EXIT_INTERRUPTED, EXIT_STEP_FAILED, PermissionDenied, RolloutError, UsageError
from .flags import bucket, resolve
from .plan import Plan, json_schema
from .plan_parts import parse_duration
from .session import default_actor
from .state import Event

# Piped output (CI logs) gets wide lines instead of rich's 80-column default.
class SafeConsole(Console):
    """A console that never lets text act on the terminal: markup is not parsed (an actor
    named '[/]' is text), and control characters in any text (ESC, BEL, C1 codes: a row's
    'ESC]0;' retitling the terminal, 'ESC[2J' clearing it) are shown escaped. rich's own
    control segments (colours, the progress bar's cursor moves) pass untouched."""

    def render(self, renderable, options=None):
        for segment in super().render(renderable, options):
            yield segment if segment.control else Segment(visible(segment.text), segment.style)


def visible(text: str) -> str:
    """Control characters made visible (\\x1b), newlines and tabs kept."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _text(value: str = "", style: str = "", **kwargs) -> Text:
    """A rich Text of `value` with its controls escaped before rich lays it out: the SafeConsole escapes
    them too, but only after rich has measured the cells (ESC counts for nothing there) and cut them."""
    return Text(visible(value), style=style, **kwargs)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
out = SafeConsole(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)


# Without -v a run prints what a person follows: each step's outcome, backfills done, backups,
# warnings and every failure. -v adds each migration, each check and each transition on the way.
_DETAIL_KINDS = {"migration.apply", "migration.rollback", "preconditions.check", "verify.check", "backfill.start", "flag.created", "wait"}
_DETAIL_STATES = {"migrating", "migrated", "verified", "finalizing", "rolling_back"}


def _is_detail(event: Event) -> bool:
    """Routine progress; a resumption (after a failure, from a checkpoint) is never routine."""
    routine_state = event.kind == "state" and event.to_state in _DETAIL_STATES and event.from_state != "failed"
    return event.ok and (event.kind in _DETAIL_KINDS or routine_state)


def _reporter(opts: "_Options"):
    """The event printer for this command: everything with -v, the outcomes without."""
    return _show_event if opts.verbose else (lambda event: None if _is_detail(event) else _show_event(event))


def _show_event(event: Event) -> None:
    """One line per step of progress: time, outcome mark, message."""
    stamp = event.at.strftime("%H:%M:%S") if event.at else " " * 8
    if not event.ok:
        mark = _text("✗ ", style="red")
    elif event.kind == "lint":  # a warning or an allowed finding: worth a look, not a success
        mark = _text("! ", style="yellow")
    else:
        mark = _text("✓ ", style="green")
    step = _text(f"{event.step_id}: ", style="bold") if event.step_id else _text("")
    # escaped before rich lays the line out: rich drops some controls (BEL) and measures ESC as nothing
    out.print(_text(f"{stamp}  ", style="dim") + mark + step + _text(event.message))


class _ProgressView:
    """Backfill progress: a live bar on a terminal, a plain line every few seconds otherwise."""

    PLAIN_EVERY = 5.0

    def __init__(self) -> None:
        self._bars: Progress | None = None
        self._tasks: dict[tuple[str, str], int] = {}
        self._last_line = time.monotonic()  # a backfill shorter than PLAIN_EVERY prints only its done event

    def __call__(self, p: BackfillProgress) -> None:
        if out.is_terminal:
            self._bar(p)
        elif p.state != "done" and time.monotonic() - self._last_line >= self.PLAIN_EVERY:
            self._last_line = time.monotonic()
            share = f" of ~{p.estimate:,} ({100 * p.rows_covered / p.estimate:.0f}%)" if p.estimate else ""
            out.print(f"          {p.step_id}: backfill {p.name}: {p.rows_covered:,} rows{share}, "
                      f"{p.rows_changed:,} changed, {p.rows_per_second:,.0f} rows/s, batch {p.batch_size:,}")

    def _bar(self, p: BackfillProgress) -> None:
        if self._bars is None:
            self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=out)
            self._bars.start()
        key = (p.step_id, p.name)
        if key not in self._tasks:
            self._tasks[key] = self._bars.add_task(f"{p.step_id}: {p.name}", total=p.estimate, rate="")
        total = p.rows_covered if p.state == "done" else p.estimate
        self._bars.update(self._tasks[key], completed=p.rows_covered, total=total,
                          rate=f"{p.rows_per_second:,.0f} rows/s")

    def __enter__(self) -> "_ProgressView":
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()


def _fail(ctx: click.Context, error: RolloutError) -> None:
    click.echo(visible(f"error: {error}"), err=True)
    ctx.exit(error.exit_code)


class _RolloutGroup(click.Group):
    """Turn RolloutError into its message and documented exit code; anything else is a bug."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except psycopg.errors.InsufficientPrivilege as exc:
            _fail(ctx, PermissionDenied(
                f"{exc.diag.message_primary}: this database role may not do that. rollout changes its state, "
                "flags and schema as the operator's role (the owner of the rollout schema); other roles, the "
                "application's among them, may only read them and call rollout.is_enabled"))
        except RolloutError as exc:
            _fail(ctx, exc)
        except psycopg.errors.UndefinedTable as exc:
            if 'relation "rollout.' not in str(exc.diag.message_primary):
                raise
            _fail(ctx, RolloutError(
                f"{exc.diag.message_primary}: this database's rollout schema lacks a table of its own (dropped by "
                "hand). rollout will not guess the state it held: restore the rollout schema from a backup "
                "(pg_dump --schema=rollout), then run the same command again"))
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted: `rollout {ctx.invoked_subcommand}` stopped; what had committed stays (each "
                       "migration and backfill batch commits with its record): run the same command again to "
                       "continue from there", err=True)
            ctx.exit(EXIT_INTERRUPTED)


class _Options:
    def __init__(self, plan_path: str, env: str, dsn: str | None, actor: str | None = None, verbose: bool = False,
                 targets: tuple[str, ...] = (), labels: tuple[str, ...] = ()):
        self.plan_path, self.env, self._dsn, self.actor, self.verbose = plan_path, env, dsn, actor, verbose
        self.targets, self.labels = targets, labels
        self._plan: Plan | None = None
        self._fleet: fleet_targets.Selection | None = None

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = api.load_plan(self.plan_path)
        return self._plan

    @property
    def fleet(self) -> fleet_targets.Selection | None:
        """The fleet's targets this command acts on (--target, --label), or None for one database.
        The fleet is listed once per command (a catalog query runs once)."""
        if self._dsn is not None and (self.targets or self.labels):
            raise UsageError("--dsn names one database; --target and --label choose targets of a fleet: give one "
                             "or the other")
        if self._dsn is not None or not self.plan.environment(self.env).is_fleet:
            if self.targets or self.labels:
                raise UsageError(f"environment {self.env!r} is one database: --target and --label choose targets "
                                 "of a fleet (docs/fleets.md)")
            return None
        if self._fleet is None:
            labels = dict(fleet_targets.parse_label(text) for text in self.labels)
            self._fleet = fleet.chosen(self.plan, self.env, self.targets, labels)
        return self._fleet

    @property
    def dsn(self) -> str | None:
        """--dsn, or the one fleet target --target names, for the commands that act on one database."""
        selection = self.fleet
        if selection is None:
            return self._dsn
        if len(selection.chosen) != 1:
            raise UsageError(f"environment {self.env!r} is a fleet of {count(len(selection.chosen), 'target')}: this "
                             "command acts on one database; name it with --target NAME (`rollout status` lists them)")
        return selection.chosen[0].conninfo

    def confirm(self, action: str, yes: bool) -> None:
        """Environments marked `confirm: true` ask first; without a terminal, --yes is required."""
        if yes or not self.plan.environment(self.env).confirm:
            return
        if not sys.stdin.isatty():
            raise UsageError(f"environment {self.env!r} asks for confirmation before {action}; pass --yes")
        click.confirm(f"{action} in environment {self.env!r}?", abort=True)


pass_options = click.make_pass_decorator(_Options)


@click.group(cls=_RolloutGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plan", "plan_path", default="rollout.yaml", show_default=True, envvar="ROLLOUT_PLAN",
              help="The plan file (env ROLLOUT_PLAN).")
@click.option("--env", default="local", show_default=True, envvar="ROLLOUT_ENV",
              help="The environment to act on (env ROLLOUT_ENV).")
@click.option("--dsn", envvar="ROLLOUT_DSN", help="Use this database instead of the environment's (env ROLLOUT_DSN).")
@click.option("--actor", help="Who the audit trail names (env ROLLOUT_ACTOR, default user@host).")
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="In a fleet: act on this target only (repeat for more).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="In a fleet: act on the targets with this label (repeat: all of them).")
@click.option("-v", "--verbose", is_flag=True, help="Print each migration, check and transition, not only outcomes.")
@click.version_option(package_name="rollout")
@click.pass_context
def cli(ctx: click.Context, plan_path: str, env: str, dsn: str | None, actor: str | None,
        targets: tuple[str, ...], labels: tuple[str, ...], verbose: bool) -> None:
    """Roll PostgreSQL schema changes out step by step: preconditions, migrate, verify, finalize.

    Exit codes: 0 ok; 1 a step or check failed; 2 invalid plan or arguments; 3 environment locked;
    4 stopped by an operator (a paused or cancelled backfill); 130 interrupted (Ctrl-C, SIGTERM).
    """
    ctx.obj = _Options(plan_path, env, dsn, actor, verbose, targets, labels)


@cli.command()
@pass_options
def check(opts: _Options) -> None:
    """Validate the plan. Touches no database."""
    plan = opts.plan
    migrations = sum(len(m) for m in plan.migrations.values())
    out.print(_text(f"{plan.path}: ok ({count(len(plan.steps), 'step')}, {count(migrations, 'migration')}, "
              f"{count(len(plan.model.environments), 'environment')})"))


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


@cli.command()
def schema() -> None:
    """Print the JSON Schema of rollout.yaml (for editors and CI)."""
    click.echo(json.dumps(json_schema(), indent=2))


def _actor_option(f):
    return click.option("--actor", callback=_actor, show_default="$ROLLOUT_ACTOR or user@host",
                        help="Who the audit trail names (also accepted before the command).")(f)


def _actor(ctx: click.Context, param, value: str | None) -> str:
    options = ctx.find_object(_Options)
    return value or (options.actor if options else None) or default_actor()


def _step_argument(ctx: click.Context, param, value: str | None) -> str | None:
    """An optional STEP given as '' (an unset shell variable) names no step: it must not mean every step."""
    if value is not None and not value.strip():
        raise click.BadParameter("an empty STEP names no step; name one, or leave STEP out for every step")
    return value


class _Count(click.IntRange):
    """A whole number in ASCII digits, within its range: int() alone also takes '١٠' and '1_000'."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            self.fail(f"{value!r} is not a valid integer (digits 0-9)", param, ctx)
        return super().convert(value, param, ctx)


@cli.command()
@click.argument("step", required=False, callback=_step_argument)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Apply steps not yet done in the environment this one comes after.")
@click.option("--no-backup", is_flag=True, help="Skip the pg_dump of tables before destructive statements.")
@_actor_option
@pass_options
def apply(opts: _Options, step: str | None, yes: bool, force: bool, no_backup: bool, actor: str) -> None:
    """Apply pending steps in order (STEP: only it and what it depends on). In a fleet: every
    target, wave by wave."""
    opts.confirm(f"applying {step or 'all pending steps'}", yes)
    if opts.fleet is not None:
        _fleet_outcome(fleet.apply(opts.plan, opts.env, opts.fleet, actor=actor, step=step, force=force,
                                   backup=not no_backup, say=_say), opts.env)
        return
    with _ProgressView() as view:
        result = api.apply(opts.plan, opts.env, dsn=opts.dsn, actor=actor, target=step, force=force,
                           backup=not no_backup, report=_reporter(opts), progress=view)
    _summary(result, opts.env)


def _say(line: str) -> None:
    """A fleet run's progress line, from whichever thread (rich's console writes a line at a time)."""
    out.print(_text(line))


def _fleet_outcome(run: fleet.FleetRun, env: str) -> None:
    """The fleet run's tally, its failures, why it stopped; exit with FleetRun.exit_code."""
    tally: dict[str, int] = {}
    for o in run.outcomes:
        tally[o.result] = tally.get(o.result, 0) + 1
    out.print(_text(f"{env}: " + ", ".join(f"{n} {result}" for result, n in tally.items()), style="bold"))
    for o in run.failed:
        out.print(_text(f"✗ {o.target} ({o.wave}): {o.message}", style="red"))
    if run.stopped:
        out.print(_text(f"stopped: {run.stopped}; run the same command again to go on", style="yellow"))
    if run.exit_code:
        sys.exit(run.exit_code)


def _summary(result, env: str) -> None:
    """What finished, what waits and why (grouped), and the command that moves things on."""
    if result.finished:
        out.print(_text(f"{count(len(result.finished), 'step')} done now in {env}: {', '.join(result.finished)}",
                       style="bold"))
    reasons: dict[str, list[str]] = {}
    for waiting, why in result.waiting.items():
        reasons.setdefault(why, []).append(waiting)
    for why, steps in reasons.items():
        out.print(_text(f"{count(len(steps), 'step')} {why}: {', '.join(steps)}"))
    if any(why.startswith("rolling out") for why in reasons):
        out.print(_text("next: `rollout advance --all` takes each rollout to its next stage once its checks pass "
                       "(`rollout status` shows where each step is)", style="green"))
    elif not result.waiting:
        out.print(_text(f"every requested step is done in {env}" + ("" if result.finished else ": nothing to do"),
                       style="green"))


@cli.command()
@click.option("--dsn-env", "dsn_envs", multiple=True, metavar="VARIABLE",
              help="An environment whose DSN this variable holds (repeat, in promotion order: STAGING_DATABASE_URL, "
                   "then PRODUCTION_DATABASE_URL).")
@pass_options
def init(opts: _Options, dsn_envs: tuple[str, ...]) -> None:
    """Start a plan for your database: rollout.yaml (a local embedded environment and one per
    --dsn-env) and its JSON Schema, in the plan's folder. Never overwrites a file."""
    folder = os.path.dirname(os.path.abspath(opts.plan_path))
    for path in api.init(folder, dsn_envs):
        out.print(_text(f"wrote {os.path.relpath(path)}"))
    out.print(_text("next: `rollout check`, then add a step (docs/your-first-plan.md)", style="green"))


@cli.command()
@click.argument("step")
@pass_options
def eject(opts: _Options, step: str) -> None:
    """Write STEP's operations out as migration files (with rollbacks) the team can edit; the
    plan then names the files. Applied migrations stay applied: the files keep their ids."""
    result = api.eject(opts.plan, step)
    for name in result.files:
        out.print(_text(f"wrote {name}"))
    folders = ", ".join(f"{phase}: {folder}" for phase, folder in result.folders.items())
    out.print(_text(f"{opts.plan.path}: step {step} now names {folders}; its operations are gone", style="green"))


@cli.command("plan")
@click.argument("step", required=False, callback=_step_argument)
@click.option("--rollback", "rollback", is_flag=True,
              help="Preview `rollout rollback STEP` instead: its rollback files, their locks and backups.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, for CI (as --format json).")
@click.option("--format", "output", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="markdown: a compact report for a pull request comment.")
@click.option("--changed-since", "since", metavar="GIT_REF",
              help="Report only the steps whose files or plan entry changed since this git revision.")
@pass_options
def plan_command(opts: _Options, step: str | None, rollback: bool, as_json: bool, output: str,
                 since: str | None) -> None:
    """Dry run: every statement apply would run, its locks and risks. Writes nothing.

    Exits 1 when a finding blocks (an error-level rule the step does not allow, or a failing
    precondition), else 0.
    """
    if rollback and not step:
        raise UsageError("--rollback previews the rollback of one step: name it, e.g. `rollout plan --rollback STEP`")
    result = api.preview(opts.plan, opts.env, step, dsn=opts.dsn, rollback=rollback)
    if since is not None:
        changed = report.changed_steps(opts.plan, since)
        result.steps = [s for s in result.steps if s.id in changed]
    if as_json or output == "json":
        click.echo(json.dumps(result.as_json(), indent=2, default=str))
    elif output == "markdown":
        click.echo(visible(report.markdown(result)))
    else:
        _show_preview(result)
    if result.blocking:
        sys.exit(EXIT_STEP_FAILED)


def _show_preview(p) -> None:
    out.print(_text(f"rollout plan for {p.env} ({p.database}, PostgreSQL {p.server_version})", style="bold"))
    if p.bootstrap:
        out.print(_text(f"  the database is empty: apply first runs the bootstrap {p.bootstrap}; the steps below are "
                       "previewed on a throwaway database made from it"))
    for step in p.steps:
        style = "green" if step.state == "done" else ("red" if step.blocking else "yellow")
        out.print()
        out.print(_text(f"{step.id}", style="bold") + _text(f" [{step.state}] ", style=style) + _text(step.title))
        if step.state == "done" and p.direction.value == "apply":
            continue
        if step.description:
            out.print(_text(f"  {step.description}", style="dim"))
        for result, deferred in step.preconditions:
            mark = "✓" if result.ok else ("•" if deferred else "✗")
            out.print(_text(f"  {mark} precondition {result.summary()}" + (f" ({deferred}: not blocking)" if
                                                                         deferred and not result.ok else "")))
        if step.note:
            out.print(_text(f"  {step.note}", style="dim"))
        for number, s in enumerate(step.statements, 1):
            e = s.effect
            origin = f" (generated from {s.migration.origin})" if s.migration.generated else ""
            out.print(_text(f"  {number}. [{s.phase.value}{'' if s.direction.value == 'apply' else ', rollback'}] "
                           f"{s.file}:{e.line}{origin}", style="cyan"))
            out.print(_text("     " + " ".join(e.sql.split())[:300]))
            locks = "; ".join(f"{r.lock.label} on {r.relation}" + (f" ({r.why})" if r.why else "") for r in e.locks)
            traits = [f"blocks {e.lock.blocks}" if e.lock else None, "assumed: not in rollout's table" if e.assumed
                      else None, "scans the table" if e.scans else None, "rewrites the table" if e.rewrites else None,
                      "holds row locks until commit" if e.row_locks else None,
                      f"~{s.rows_touched:,} rows changed" if s.rows_touched is not None else None,
                      "outside a transaction" if not e.transactional else "in a transaction",
                      "no statement_timeout" if e.long_running_ok else None]
            out.print(_text(f"     lock: {locks or 'no table lock'}; " + "; ".join(t for t in traits if t)))
            if s.table:
                out.print(_text(f"     {s.table.describe()}" + (f"; {s.estimate}" if s.estimate else "")))
            if s.backup:
                out.print(_text(f"     backup: pg_dump of {e.table} to .rollout/backups/ first (unless --no-backup)"))
            for note in e.notes:
                out.print(_text(f"     note: {note}", style="dim"))
        for b in step.backfills:
            batches = f"~{count(b.batches, 'batch', 'batches')}" if b.batches else "batches unknown"
            rows = f"~{b.rows:,} rows" if b.rows is not None else "rows unknown"
            when = f", before {b.restores}.rollback.sql" if b.restores else ""
            out.print(_text(f"  backfill {b.name} on {b.table}{when}: {rows}, {batches}" +
                           (f", {b.estimate}" if b.estimate else ""), style="cyan"))
            if b.prepare:
                out.print(_text(f"     once, before the batches: {' '.join(b.prepare.split())}"))
            out.print(_text(f"     {b.template}"))
        for f in step.findings:
            if f.allowed:
                label, style = f"allowed {f.rule}", "green"
            else:
                label, style = f"{f.level} {f.rule}", "red" if f.level == "error" else "yellow"
            out.print(_text(f"  {'✗' if f.blocking else '!'} ", style=style) + _text(label, style=style) +
                      _text(f" ({f.where}): {f.message}"))
            if f.allowed:
                out.print(_text(f"     accepted: {f.allowed}", style="green"))
            elif f.alternative:
                out.print(_text("     safe alternative:\n       " + f.alternative.replace("\n", "\n       ")))
    out.print()
    verdict = "blocked: fix or allow the findings marked ✗" if p.blocking else "nothing blocks"
    trace = "wrote nothing (no transaction id was assigned)" if p.wrote_nothing else "WROTE SOMETHING: report a bug"
    out.print(_text(f"{verdict}; the preview took {p.seconds:.2f}s and {trace}.", style="red" if p.blocking else "green"))


@cli.command()
@click.argument("step", required=False, callback=_step_argument)
@click.option("--all", "every", is_flag=True, help="Advance every rollout in progress (safe to repeat, e.g. from cron).")
@click.option("--watch", is_flag=True, help="Keep advancing STEP (or, with --all, every rollout in progress) until done; "
                                           "a failed gate sends the flag back and halts, a failed check aborts.")
@click.option("--interval", default="10s", show_default=True, help="With --watch: time at each stage before its checks.")
@_actor_option
@pass_options
def advance(opts: _Options, step: str | None, every: bool, watch: bool, interval: str, actor: str) -> None:
    """Move a step's flag to its next stage when its checks pass and its hold time is over."""
    if bool(step) == every:
        raise UsageError("name a STEP or pass --all (not both)")
    seconds = _duration(interval, "--interval") / 1000
    if opts.fleet is not None:
        if watch:
            raise UsageError("--watch follows one database; in a fleet, run `rollout advance` again (e.g. from cron): "
                             "each run takes the fleet one stage on, wave by wave")
        _fleet_outcome(fleet.advance(opts.plan, opts.env, opts.fleet, actor=actor, step=step, say=_say), opts.env)
        return
    results = api.advance(opts.plan, opts.env, step, dsn=opts.dsn, actor=actor, watch=watch, interval=seconds,
                          report=_reporter(opts))
    for r in results:
        if r.outcome == "advanced" and r.message.endswith("at 100%"):
            out.print(_text(f"          next: `rollout apply {r.step_id}` (or one more advance) runs the contract "
                           "once the stage's checks pass", style="dim"))
        if r.outcome in ("advanced", "finalized"):
            continue  # its event line said it already
        mark = {"refused": _text("✗ ", style="red"), "halted": _text("! ", style="yellow")}.get(
            r.outcome, _text("✓ ", style="green"))
        out.print(mark + _text(f"{r.step_id}: {r.outcome}: {r.message}"))
    if not results:
        out.print(f"no rollout in progress in {opts.env}")
    if any(r.outcome == "refused" for r in results):
        sys.exit(EXIT_STEP_FAILED)


@cli.command()
@click.argument("step")
@click.option("--reason", help="Why: kept in the flag's history and the events.")
@_actor_option
@pass_options
def abort(opts: _Options, step: str, reason: str | None, actor: str) -> None:
    """Turn STEP's flag off at once and mark its rollout aborted (works while others run). In a
    fleet: on every target at once."""
    if opts.fleet is not None:
        _fleet_outcome(fleet.abort(opts.plan, opts.env, opts.fleet, step, actor=actor, reason=reason, say=_say),
                       opts.env)
        return
    api.abort(opts.plan, opts.env, step, reason=reason, dsn=opts.dsn, actor=actor, report=_reporter(opts))


@cli.group(cls=_RolloutGroup)
def flags() -> None:
    """Feature flags of this environment: list, get, set, target, history, serve."""


@flags.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_options
def flags_list(opts: _Options, as_json: bool) -> None:
    """Every declared flag and its value here."""
    values = api.flags_list(opts.plan, opts.env, dsn=opts.dsn)
    if as_json:
        click.echo(json.dumps({"env": opts.env, "flags": [v.as_json() for v in values]}, indent=2))
        return
    table = Table(title=f"flags in {opts.env}", title_justify="left")
    for column in ("flag", "value", "targets", "source", "updated", "by"):
        table.add_column(column, no_wrap=True)
    table.add_column("description")
    for v in values:
        table.add_row(v.name, v.shown, _targets(v), v.source,
                      f"{v.updated_at:%Y-%m-%d %H:%M:%S}" if v.updated_at else "", _text(v.updated_by or ""),
                      _text(v.description))
    out.print(table)


def _targets(value) -> str:
    """'2 in, 1 out': how many subjects a flag targets."""
    counts = [f"{len(subjects)} {word}" for subjects, word in ((value.included, "in"), (value.excluded, "out"))
              if subjects]
    return ", ".join(counts)


@flags.command("get")
@click.argument("name")
@click.option("--subject", help="Also say whether this subject (a guild id, a user id) sees the flag.")
@pass_options
def flags_get(opts: _Options, name: str, subject: str | None) -> None:
    """A flag's value here, and optionally its answer for one subject."""
    api.flags_declared(opts.plan, name)
    value = next(v for v in api.flags_list(opts.plan, opts.env, dsn=opts.dsn) if v.name == name)
    click.echo(visible(value.shown))
    for subjects, word in ((value.included, "always in"), (value.excluded, "always out")):
        if subjects:
            shown = ", ".join(subjects[:20]) + (f", ... ({len(subjects)} in all)" if len(subjects) > 20 else "")
            click.echo(visible(f"{word}: {shown}"))
    if subject is not None:
        answer, why = resolve(name, value.enabled, value.percent, subject, value.targets)
        because = {"TARGETING_MATCH": "targeted", "DISABLED": "the flag is off", "STATIC": "the flag is on"}.get(
            why, f"bucket {bucket(name, subject)} of 10000")
        click.echo(visible(f"{subject}: {'on' if answer else 'off'} ({because})"))


@flags.command("set")
@click.argument("name")
@click.argument("value")
@click.option("--reason", help="Why: kept in the flag's history and the events.")
@_actor_option
@pass_options
def flags_set(opts: _Options, name: str, value: str, reason: str | None, actor: str) -> None:
    """Set NAME to on, off or a percentage (0-100) of subjects. Takes effect at once (in a fleet,
    on every target at once)."""
    if opts.fleet is not None:
        _fleet_outcome(fleet.flag_set(opts.plan, opts.env, opts.fleet, name, value, actor=actor, reason=reason,
                                      say=_say), opts.env)
        return
    old, new = api.flag_set(opts.plan, opts.env, name, value, reason=reason, dsn=opts.dsn, actor=actor)
    out.print(f"flag {name} in {opts.env}: {old.shown if old else 'unset'} -> {new.shown}")


@flags.command("target")
@click.argument("name")
@click.option("--include", multiple=True, metavar="ID", help="A subject always in, ahead of the percentage "
              "(repeat it, or separate ids with commas).")
@click.option("--exclude", multiple=True, metavar="ID", help="A subject always out.")
@click.option("--remove", multiple=True, metavar="ID", help="A subject back to the percentage.")
@click.option("--reason", help="Why: kept in the flag's history and the events.")
@_actor_option
@pass_options
def flags_target(opts: _Options, name: str, include: tuple[str, ...], exclude: tuple[str, ...],
                 remove: tuple[str, ...], reason: str | None, actor: str) -> None:
    """Subjects NAME always includes or excludes here, whatever its percentage (off stays off
    for everyone). Takes effect at once; needs no environment lock."""
    value = api.flag_target(opts.plan, opts.env, name, include=list(include), exclude=list(exclude),
                            remove=list(remove), reason=reason, dsn=opts.dsn, actor=actor)
    out.print(f"flag {name} in {opts.env}: {value.shown}, {len(value.included)} always in, "
              f"{len(value.excluded)} always out")


@flags.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8016, show_default=True, type=click.IntRange(0, 65535),
              help="The port to listen on (0: any free port, printed at start).")
@click.option("--refresh", default="5s", show_default=True, help="How often the flags are read again.")
@click.option("--keys-env", default="ROLLOUT_FLAGS_API_KEYS", show_default=True, metavar="VARIABLE",
              help="The environment variable holding the accepted API keys, comma-separated.")
@click.option("--no-auth", is_flag=True, help="Accept requests without an API key (only behind a proxy that "
              "authenticates them).")
@_actor_option
@pass_options
def flags_serve(opts: _Options, host: str, port: int, refresh: str, keys_env: str, no_auth: bool, actor: str) -> None:
    """Serve this environment's flags over HTTP: OpenFeature's OFREP, /metrics, /healthz."""
    from .flag_server import api_keys  # uvicorn loads only for the server

    seconds = _duration(refresh, "--refresh") / 1000
    if seconds <= 0:
        raise UsageError("--refresh must be longer than 0")
    api.flags_serve(opts.plan, opts.env, dsn=opts.dsn, host=host, port=port, refresh_seconds=seconds,
                    keys=api_keys(keys_env, required=not no_auth), actor=actor,
                    announce=click.echo)


@flags.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_options
def flags_history(opts: _Options, name: str, as_json: bool) -> None:
    """Every change of NAME here: when, who, old and new value, why."""
    changes = api.flag_history(opts.plan, opts.env, name, dsn=opts.dsn)
    if as_json:
        click.echo(json.dumps([c.as_json() for c in changes], indent=2))
        return
    table = Table(title=f"flag {name} in {opts.env}", title_justify="left")
    for column in ("at", "by", "old", "new"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason")
    for c in changes:
        reason = "; ".join(filter(None, (c.shown_targets, c.reason)))
        table.add_row(f"{c.at:%Y-%m-%d %H:%M:%S}", _text(c.actor), c.old or "", c.new, _text(reason))
    out.print(table)


@cli.command()
@click.argument("step")
@click.option("--cascade", is_flag=True, help="Also roll back the steps that depend on STEP or share its flag "
                                              "(the latest first).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-backup", is_flag=True, help="Skip the pg_dump of tables before destructive statements.")
@_actor_option
@pass_options
def rollback(opts: _Options, step: str, cascade: bool, yes: bool, no_backup: bool, actor: str) -> None:
    """Undo STEP through its rollback migrations."""
    opts.confirm(f"rolling back {step}", yes)
    undone = api.rollback(opts.plan, opts.env, step, dsn=opts.dsn, actor=actor, cascade=cascade,
                          backup=not no_backup, report=_reporter(opts))
    out.print(f"rolled back in {opts.env}: {', '.join(undone) or 'nothing (already pending)'}")


@cli.command()
@click.argument("step", required=False, callback=_step_argument)
@_actor_option
@pass_options
def verify(opts: _Options, step: str | None, actor: str) -> None:
    """Re-run the verification checks of STEP, or of every applied step."""
    reports = api.verify(opts.plan, opts.env, step, dsn=opts.dsn, actor=actor, report=_show_event)
    failed = [r.step_id for r in reports if not r.ok]
    if not reports:
        out.print("no applied steps to verify")
    elif failed:
        click.echo(visible(f"verification failed: {', '.join(failed)}"), err=True)
        sys.exit(EXIT_STEP_FAILED)
    else:
        out.print(f"all checks passed ({count(len(reports), 'step')})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_options
def status(opts: _Options, as_json: bool) -> None:
    """Each step's state in this environment, and any flag whose value disagrees with it. In a
    fleet: counts per state, the targets by state (grouped), failures, waves and ETA."""
    if opts.fleet is not None:
        seen = fleet.status(opts.plan, opts.env, opts.fleet)
        if as_json:
            click.echo(json.dumps(fleet_view.as_json(seen), indent=2))
        else:
            for renderable in fleet_view.render(seen, out.width):
                out.print(renderable)
        return
    rows = api.status(opts.plan, opts.env, dsn=opts.dsn)
    if as_json:
        click.echo(json.dumps({"env": opts.env, "steps": [r.__dict__ for r in rows]}, indent=2))
        return
    out.print(status_table(rows, f"{opts.plan.path} in {opts.env}", out.width))
    lost = [r.id for r in rows if r.state == "pending" and r.migrations_applied]
    if lost:  # a rolled-back step has none applied: rollout's records of these were deleted or dropped
        out.print(_text(f"✗ {', '.join(lost)}: pending in rollout's records, yet yoyo's log (_yoyo_migration) records "
                       "migrations of theirs as applied: rollout's records of them were deleted by hand (or the rollout "
                       "schema dropped). Commands that change this environment refuse until the rollout schema is "
                       "restored from a backup", style="bold red"))


def status_table(rows, title: str, width: int) -> Table:
    """The steps' states as a table that fits `width`: under 160 columns the priority and the
    actor go (`rollout events` names them), dates lose their year and seconds, and the borders
    thin out, so step ids, states, dates and the note are never cut."""
    wide = width >= 160
    title = _text(title)
    table = Table(title=title, title_justify="left") if wide else \
        Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    columns = ("step", "priority", "state", "migrations", "updated", "by") if wide else \
        ("step", "state", "migr", "updated")
    for column in columns:
        table.add_column(column, no_wrap=True, min_width=12 if column == "state" else None)
    table.add_column("note", min_width=16, overflow="fold")
    colours = {"done": "green", "failed": "red", "pending": "dim"}
    for r in rows:
        note = _text(f"{r.phase}: {r.error}" if r.error else (f"flag {r.flag}: {r.stage}" if r.stage else ""))
        if r.halted:
            note += _text(f"; halted: {r.halted}", style="bold yellow")
        if r.flag_mismatch:  # it names the stage itself, so it replaces the stage note
            note = (_text(f"{r.phase}: {r.error}; ") if r.error else _text("")) + _text(f"✗ {r.flag_mismatch}",
                                                                                      style="bold red")
        updated = (r.updated_at or "")[:19].replace("T", " ")
        cells = [r.id, r.priority] if wide else [r.id]
        cells += [_text(r.state, style=colours.get(r.state, "yellow")), f"{r.migrations_applied}/{r.migrations_total}"]
        cells += [updated, _text(r.updated_by or ""), note] if wide else [updated[5:16], note]
        table.add_row(*cells)
    return table


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", default=50, show_default=True, type=_Count(1, 1_000_000),
              help="How many of the latest events.")
@pass_options
def events(opts: _Options, as_json: bool, limit: int) -> None:
    """The audit trail: who did what, when, with what result (in a fleet: merged, with each target)."""
    if opts.fleet is not None:
        merged, unread = fleet.events(opts.plan, opts.env, opts.fleet, limit)
        if as_json:
            click.echo(json.dumps([{"target": t, **e.as_json()} for t, e in merged], indent=2, default=str))
        else:
            out.print(fleet_view.events_table(merged, f"events in {opts.env}"))
        for target, why in unread.items():  # as `status` shows them: the others' trails are still worth reading
            click.echo(visible(f"✗ {target}: not read: {why}"), err=True)
        return
    rows = api.events(opts.plan, opts.env, dsn=opts.dsn, limit=limit)
    if as_json:
        click.echo(json.dumps([e.as_json() for e in rows], indent=2, default=str))
        return
    table = Table(title=f"events in {opts.env}", title_justify="left")
    for column in ("at", "actor", "step", "kind", "ok"):
        table.add_column(column, no_wrap=True)
    table.add_column("message")
    for e in rows:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", _text(e.actor), _text(e.step_id or ""), _text(e.kind),
                      _text("✓", style="green") if e.ok else _text("✗", style="red"), _text(e.message))
    out.print(table)


@cli.group(cls=_RolloutGroup)
def backfill() -> None:
    """Resumable batched data migrations: progress, run, pause, resume, cancel."""


@backfill.command("status")
@click.argument("step", required=False, callback=_step_argument)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_options
def backfill_status(opts: _Options, step: str | None, as_json: bool) -> None:
    """Rows done, rows estimated (catalog statistics), rate and ETA of each backfill."""
    rows = api.backfill_status(opts.plan, opts.env, step, dsn=opts.dsn)
    if as_json:
        click.echo(json.dumps({"env": opts.env, "backfills": [r.__dict__ for r in rows]}, indent=2))
        return
    out.print(backfill_table(rows, f"backfills in {opts.env}", out.width))


def backfill_table(rows, title: str, width: int) -> Table:
    """Backfills as a table that fits `width`: under 160 columns the changed and failed counts
    and the rate go (`--json` has them) and the borders thin out; states and numbers are never cut."""
    wide = width >= 160
    table = Table(title=title, title_justify="left") if wide else \
        Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    columns = ("step", "backfill", "state", "rows done", "estimated", "changed", "failed", "rate", "eta") if wide \
        else ("step", "backfill", "state", "done", "of", "eta")
    for column in columns:
        names = column in ("step", "backfill") and not wide  # long ids fold onto a second line, whole
        table.add_column(column, no_wrap=not names, overflow="fold" if names else "ellipsis",
                         min_width=11 if column == "state" else None)
    notes = any(r.error or r.waiting for r in rows)
    if notes:
        table.add_column("note", min_width=8, overflow="fold")
    for r in rows:
        estimate = f"~{r.estimate:,}" if r.estimate is not None else "?"
        eta = f"{r.eta_seconds:,.0f}s" if r.eta_seconds is not None else ""
        cells = [r.step_id, r.name, r.state, f"{r.rows_covered:,}", estimate]
        if wide:
            cells += [f"{r.rows_changed:,}", f"{r.rows_failed:,}",
                      f"{r.rows_per_second:,.0f}/s" if r.rows_per_second else ""]
        table.add_row(*cells, eta, *([_text(r.error or r.waiting or "")] if notes else []))
    return table


def _run_backfills(opts: _Options, step: str, actor: str, resume: bool) -> None:
    with _ProgressView() as view:
        api.backfill_run(opts.plan, opts.env, step, dsn=opts.dsn, actor=actor, resume=resume, report=_reporter(opts),
                         progress=view)


@backfill.command("run")
@click.argument("step")
@_actor_option
@pass_options
def backfill_run(opts: _Options, step: str, actor: str) -> None:
    """Run STEP's backfills from their checkpoints (paused or cancelled ones stay so)."""
    _run_backfills(opts, step, actor, resume=False)


@backfill.command("resume")
@click.argument("step")
@_actor_option
@pass_options
def backfill_resume(opts: _Options, step: str, actor: str) -> None:
    """Un-pause STEP's backfills and run them from their checkpoints."""
    _run_backfills(opts, step, actor, resume=True)


@backfill.command("pause")
@click.argument("step")
@_actor_option
@pass_options
def backfill_pause(opts: _Options, step: str, actor: str) -> None:
    """Pause STEP's backfills at their next batch boundary (works from another terminal)."""
    names = api.backfill_request(opts.plan, opts.env, step, "pause", dsn=opts.dsn, actor=actor)
    out.print(f"pause requested: {', '.join(names) or 'no active backfill'}")


@backfill.command("cancel")
@click.argument("step")
@_actor_option
@pass_options
def backfill_cancel(opts: _Options, step: str, actor: str) -> None:
    """Stop STEP's backfills at their next batch boundary; `resume` continues from the checkpoint."""
    names = api.backfill_request(opts.plan, opts.env, step, "cancel", dsn=opts.dsn, actor=actor)
    out.print(f"cancel requested: {', '.join(names) or 'no active backfill'}")


@cli.group(cls=_RolloutGroup)
def db() -> None:
    """The embedded PostgreSQL server of an embedded environment."""


@db.command("start")
@pass_options
def db_start(opts: _Options) -> None:
    """Start the embedded server (first time: initialise it under .rollout/)."""
    api.embedded_environment(opts.plan, opts.env)
    url = resolve_target(opts.plan, opts.env).conninfo
    info = embedded.running(opts.plan.directory)
    out.print(f"embedded PostgreSQL running (pid {info.pid}, data {info.data_dir})")
    out.print(url)


@db.command("stop")
@pass_options
def db_stop(opts: _Options) -> None:
    """Stop the embedded server."""
    stopped = embedded.stop(opts.plan.directory)
    out.print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


@db.command("status")
@pass_options
def db_status(opts: _Options) -> None:
    """Whether the embedded server runs, and where."""
    info = embedded.running(opts.plan.directory)
    if info is None:
        out.print(f"embedded PostgreSQL is not running (data under {embedded.data_dir(opts.plan.directory)})")
        sys.exit(EXIT_STEP_FAILED)
    out.print(f"embedded PostgreSQL running (pid {info.pid}, data {info.data_dir})")
    out.print(info.url(opts.env))


@db.command("url")
@pass_options
def db_url(opts: _Options) -> None:
    """Print the environment's connection URL (starts the server if needed)."""
    api.embedded_environment(opts.plan, opts.env)
    click.echo(resolve_target(opts.plan, opts.env).conninfo)


@db.command("seed")
@click.option("--rows", default=10_000, show_default=True, type=_Count(1, 2_147_483_647),
              help="The size the seed file is asked for (it reads current_setting('rollout.seed_rows')).")
@_actor_option
@pass_options
def db_seed(opts: _Options, rows: int, actor: str) -> None:
    """Run the environment's seed file: sample data for the plan's tables (bootstrapping first if empty)."""
    api.seed(opts.plan, opts.env, rows, dsn=opts.dsn, actor=actor, report=_reporter(opts))


@db.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_options
def db_reset(opts: _Options, yes: bool) -> None:
    """Drop the environment's embedded database; the next command bootstraps it again."""
    if opts.dsn is not None:
        raise UsageError("`db reset` drops only an environment's embedded database and never a database named by "
                         "--dsn; drop that one with your own tools")
    api.embedded_environment(opts.plan, opts.env)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"`db reset` drops every table of {opts.env!r}; pass --yes")
        click.confirm(f"drop the embedded database of {opts.env!r}?", abort=True)
    api.reset(opts.plan, opts.env)
    out.print(f"dropped the embedded database of {opts.env!r}")


def _duration(text: str, option: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _global_options_anywhere(group: click.Group) -> None:
    """`rollout apply --env staging` as well as `rollout --env staging apply`: every command also
    accepts --plan, --env, --dsn, --target and --label after its name."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _global_options_anywhere(command)
            continue
        for flag, attribute, help_text in (("--plan", "plan_path", "The plan file."),
                                           ("--env", "env", "The environment to act on."),
                                           ("--dsn", "_dsn", "Use this database instead of the environment's."),
                                           ("--target", "targets", "In a fleet: act on this target (repeat for more)."),
                                           ("--label", "labels", "In a fleet: the targets with this KEY=VALUE.")):
            if any(flag in p.opts for p in command.params):
                continue
            many = flag in ("--target", "--label")
            command.params.append(click.Option([flag], expose_value=False, is_eager=True, help=help_text,
                                               multiple=many, callback=_set_option(attribute)))
        if not any("--verbose" in p.opts for p in command.params):
            command.params.append(click.Option(["-v", "--verbose"], is_flag=True, default=None, expose_value=False,
                                               is_eager=True, help="Print each migration, check and transition.",
                                               callback=_set_option("verbose")))


def _set_option(attribute: str):
    def callback(ctx: click.Context, param, value):
        if value is not None and value != ():
            setattr(ctx.find_object(_Options), attribute, value)
    return callback


_global_options_anywhere(cli)


def main() -> None:
    # SIGTERM (a CI runner's cancel, systemd's stop) ends a command as Ctrl-C does: cleanly
    signal.signal(signal.SIGTERM, lambda number, frame: (_ for _ in ()).throw(KeyboardInterrupt()))
    cli(prog_name="rollout")
