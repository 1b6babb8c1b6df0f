"""Feature flags: bucketing, values, and their store in the environment's database.

A flag is on/off plus a percentage. A subject (a guild id, a user id) is in when its bucket,
the first 4 bytes of sha256("flag:subject") as a big-endian integer mod 10,000, is below
percent * 100. The bucket depends only on flag and subject, so a subject in at 10% stays in
at 50%, and the SQL function rollout.bucket computes the same number bit for bit.
"""

from __future__ import annotations

import re

import hashlib
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from . import state
from .errors import UsageError
from .plan import Plan, StagedRollout

BUCKETS = 10_000


def bucket(flag: str, subject: str) -> int:
    """The subject's bucket for this flag, 0..9999."""
    digest = hashlib.sha256(f"{flag}:{subject}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS


def evaluate(flag: str, enabled: bool, percent: int, subject: object) -> bool:
    """Whether `subject` sees `flag` at this value. Without a subject only a flag fully on is on."""
    if not enabled or percent <= 0:
        return False
    if percent >= 100:
        return True
    return subject is not None and bucket(flag, str(subject)) < percent * 100


@dataclass(frozen=True)
class FlagValue:
    name: str
    enabled: bool
    percent: int
    description: str = ""
    source: str = "database"  # or "plan default" before the first write to this environment
    updated_at: datetime | None = None
    updated_by: str | None = None

    @property
    def shown(self) -> str:
        """on, off, or the percentage."""
        if not self.enabled:
            return "off"
        return "on" if self.percent == 100 else f"{self.percent}%"

    def as_json(self) -> dict:
        return {"name": self.name, "value": self.shown, "enabled": self.enabled, "percent": self.percent,
                "description": self.description, "source": self.source,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None, "updated_by": self.updated_by}


def shown(enabled: bool, percent: int) -> str:
    """on, off, or the percentage, as `flags list` shows a value."""
    return FlagValue("", enabled, percent).shown


def expected_percent(current: state.StepState, stages: StagedRollout) -> int:
    """The value a flagged step's state implies for its flag, as a percentage (0: off, the old
    shape). Off until the rollout's first stage; the stage's percentage while rolling out; on
    (100) once the rollout reached 100% and the contract runs or ran. Off again when aborted,
    failed before the contract, or rolled back."""
    if current.state == state.ROLLING_OUT:
        return 0 if current.stage is None else stages.stages[min(current.stage, len(stages.stages) - 1)]
    if current.state in (state.FINALIZING, state.DONE) or (current.state == state.FAILED and
                                                          current.phase == "finalize"):
        return 100
    return 0


def parse_value(text: str) -> tuple[bool, int]:
    """'on', 'off' or a percentage 0-100 (with or without %) as (enabled, percent)."""
    word = text.strip().lower().removesuffix("%")  # one sign: '50%%' is not a value
    if word in ("on", "true"):
        return True, 100
    if word in ("off", "false"):
        return False, 0
    if re.fullmatch(r"[0-9]{1,3}", word) and int(word) <= 100:  # ASCII digits: '²' is not a number here
        return int(word) > 0, int(word)
    raise UsageError(f"a flag value is on, off or a percentage from 0 to 100 (got {text!r})")


def plan_default(plan: Plan, name: str, env: str) -> tuple[bool, int]:
    flag = plan.model.flags[name]
    value = flag.environments.get(env, flag.default)
    if isinstance(value, bool):
        return value, 100 if value else 0
    return value > 0, value


def declared(plan: Plan, name: str) -> None:
    if name not in plan.model.flags:
        known = ", ".join(plan.model.flags) or "none"
        raise UsageError(f"no flag {name!r} in {plan.path}; flags are: {known}")


def read(conn: psycopg.Connection, plan: Plan, env: str) -> dict[str, FlagValue]:
    """Every declared flag's value here: the database's, or the plan's default before any write."""
    stored = {}
    if state.schema_exists(conn):
        with conn.cursor(row_factory=dict_row) as cur:
            for row in cur.execute("SELECT name, enabled, percent, updated_at, updated_by FROM rollout.flags "
                                   "WHERE env = %s", (env,)):
                stored[row["name"]] = row
    values = {}
    for name, flag in plan.model.flags.items():
        if name in stored:
            values[name] = FlagValue(description=flag.description, **stored[name])
        else:
            enabled, percent = plan_default(plan, name, env)
            values[name] = FlagValue(name, enabled, percent, flag.description, source="plan default")
    return values


def sync_defaults(conn: psycopg.Connection, plan: Plan, env: str, actor: str) -> list[str]:
    """Store the plan's default of every flag this database does not hold yet."""
    added = []
    for name in plan.model.flags:
        enabled, percent = plan_default(plan, name, env)
        row = conn.execute(
            "INSERT INTO rollout.flags (env, name, enabled, percent, updated_by) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (env, name) DO NOTHING RETURNING name", (env, name, enabled, percent, actor)).fetchone()
        if row:
            conn.execute("INSERT INTO rollout.flag_history (env, name, actor, new_enabled, new_percent, reason) "
                         "VALUES (%s, %s, %s, %s, %s, 'plan default')", (env, name, actor, enabled, percent))
            added.append(name)
    return added


def write(conn: psycopg.Connection, env: str, name: str, enabled: bool, percent: int, actor: str,
          reason: str | None) -> tuple[FlagValue | None, FlagValue]:
    """Set a flag and append its history; the caller's transaction makes both one change."""
    with conn.cursor(row_factory=dict_row) as cur:
        old = cur.execute("SELECT name, enabled, percent FROM rollout.flags WHERE env = %s AND name = %s FOR UPDATE",
                          (env, name)).fetchone()
    conn.execute(
        """
        INSERT INTO rollout.flags (env, name, enabled, percent, updated_by) VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (env, name) DO UPDATE SET enabled = EXCLUDED.enabled, percent = EXCLUDED.percent,
            updated_by = EXCLUDED.updated_by, updated_at = clock_timestamp()
        """, (env, name, enabled, percent, actor))
    conn.execute(
        "INSERT INTO rollout.flag_history (env, name, actor, old_enabled, old_percent, new_enabled, new_percent, reason) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (env, name, actor, old and old["enabled"], old and old["percent"], enabled, percent, reason))
    before = FlagValue(old["name"], old["enabled"], old["percent"]) if old else None
    return before, FlagValue(name, enabled, percent)


@dataclass(frozen=True)
class Change:
    at: datetime
    actor: str
    old: str | None
    new: str
    reason: str | None

    def as_json(self) -> dict:
        return {"at": self.at.isoformat(), "actor": self.actor, "old": self.old, "new": self.new, "reason": self.reason}


def history(conn: psycopg.Connection, env: str, name: str) -> list[Change]:
    if not state.schema_exists(conn):
        return []
    rows = conn.execute(
        "SELECT at, actor, old_enabled, old_percent, new_enabled, new_percent, reason FROM rollout.flag_history "
        "WHERE env = %s AND name = %s ORDER BY id", (env, name)).fetchall()
    return [Change(at, actor, shown(oe, op) if oe is not None else None, shown(ne, np), reason)
            for at, actor, oe, op, ne, np, reason in rows]
