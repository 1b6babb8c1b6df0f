"""One root exception; each subclass carries the exit code the CLI returns for it.

Anything that is not a RolloutError is a bug and keeps its traceback.
"""

from __future__ import annotations

import psycopg

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_INVALID = 2
EXIT_LOCKED = 3
EXIT_STOPPED = 4
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as shells report a SIGINT


class RolloutError(Exception):
    """An expected failure with a message written for the operator."""

    exit_code = EXIT_INVALID


class PlanError(RolloutError):
    """The plan is invalid. Holds every problem found, each already located."""

    exit_code = EXIT_INVALID

    def __init__(self, problems: list[str]):
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"invalid plan ({len(problems)} {noun}):\n" + "\n".join(problems))


class UsageError(RolloutError):
    """A bad argument, an unknown environment or step, a missing DSN."""

    exit_code = EXIT_INVALID


class DatabaseUnavailable(RolloutError):
    """The database cannot be reached or refuses the credentials."""

    exit_code = EXIT_INVALID


class StepFailed(RolloutError):
    """A precondition, migration or verification failed; the step records why."""

    exit_code = EXIT_STEP_FAILED


class ConnectionLost(StepFailed):
    """The database went away mid-command; every committed step of progress is kept."""


class EnvironmentLocked(RolloutError):
    """Another operator holds this environment's lock."""

    exit_code = EXIT_LOCKED


class Stopped(RolloutError):
    """An operator paused or cancelled work from another terminal; it continues when resumed."""

    exit_code = EXIT_STOPPED


class PermissionDenied(RolloutError):
    """The database role lacks a privilege rollout needs; names the role and the object."""

    exit_code = EXIT_INVALID


def describe_error(exc: Exception, text: str | None = None, offset: int = 0) -> str:
    """PostgreSQL's own words: message, detail, hint and SQLSTATE, and the line of `text`
    the error points at (the SQL sent started at `offset` in `text`)."""
    if not isinstance(exc, psycopg.Error) or exc.diag.message_primary is None:
        return str(exc)
    diag = exc.diag
    parts = [diag.message_primary]
    parts += [f"detail: {diag.message_detail}"] if diag.message_detail else []
    parts += [f"hint: {diag.message_hint}"] if diag.message_hint else []
    if text is not None and diag.statement_position:
        parts.append(f"at line {text[:offset + int(diag.statement_position)].count(chr(10)) + 1}")
    return f"{'; '.join(parts)} [SQLSTATE {diag.sqlstate}]"
