"""Feature flags: bucketing, values, and their store in the environment's database.

A flag is on/off plus a percentage, and subjects it always includes or excludes. Off is off
for everyone (the kill switch). Otherwise a targeted subject is in or out as its target says;
any other subject (a guild id, a user id) is in when the flag is fully on, or when its bucket,
the first 4 bytes of sha256("flag:subject") as a big-endian integer mod 10,000, is below
percent * 100. The bucket depends only on flag and subject, so a subject in at 10% stays in
at 50%, and the SQL function rollout.is_enabled applies the same rule bit for bit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import state
from .errors import UsageError
from .plan import Plan, StagedRollout
from .plan_parts import SUBJECT_PATTERN

BUCKETS = 10_000


def bucket(flag: str, subject: str) -> int:
    """The subject's bucket for this flag, 0..9999."""
    digest = hashlib.sha256(f"{flag}:{subject}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS


# why a subject gets what it gets: OpenFeature's (and OFREP's) reasons
DISABLED, TARGETING_MATCH, STATIC, SPLIT = "DISABLED", "TARGETING_MATCH", "STATIC", "SPLIT"


def resolve(flag: str, enabled: bool, percent: int, subject: object,
            targets: Mapping[str, bool] = MappingProxyType({})) -> tuple[bool, str]:
    """Whether `subject` sees `flag` at this value, and why. `targets` maps a subject to True
    (always in) or False (always out). Without a subject only a flag fully on is on."""
    if not enabled or percent <= 0:
        return False, DISABLED
    if subject is not None and (target := targets.get(str(subject))) is not None:
        return target, TARGETING_MATCH
    if percent >= 100:
        return True, STATIC
    return subject is not None and bucket(flag, str(subject)) < percent * 100, SPLIT


def evaluate(flag: str, enabled: bool, percent: int, subject: object,
             targets: Mapping[str, bool] = MappingProxyType({})) -> bool:
    """Whether `subject` sees `flag` at this value (resolve's answer without its reason)."""
    return resolve(flag, enabled, percent, subject, targets)[0]


@dataclass(frozen=True)
class FlagValue:
    name: str
    enabled: bool
    percent: int
    description: str = ""
    source: str = "database"  # or "plan default" before the first write to this environment
    updated_at: datetime | None = None
    updated_by: str | None = None
    targets: Mapping[str, bool] = field(default_factory=dict)  # subject -> always in (True) or out (False)

    @property
    def included(self) -> list[str]:
        return sorted(s for s, inside in self.targets.items() if inside)

    @property
    def excluded(self) -> list[str]:
        return sorted(s for s, inside in self.targets.items() if not inside)

    @property
    def shown(self) -> str:
        """on, off, or the percentage."""
        if not self.enabled:
            return "off"
        return "on" if self.percent == 100 else f"{self.percent}%"

    def as_json(self) -> dict:
        return {"name": self.name, "value": self.shown, "enabled": self.enabled, "percent": self.percent,
                "description": self.description, "source": self.source,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None, "updated_by": self.updated_by,
                "include": self.included, "exclude": self.excluded}


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


def checked_subjects(given: list[str]) -> list[str]:
    """Subjects from the command line, each as the plan's `include` would take it; commas and
    spaces separate several in one argument."""
    subjects = [s for text in given for s in re.split(r"[\s,]+", text) if s]
    for subject in subjects:
        if not re.fullmatch(SUBJECT_PATTERN, subject):
            raise UsageError(f"a subject is 1 to 256 printable characters (got {subject[:40]!r})")
    return subjects


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
    stored, targets = {}, {name: {} for name in plan.model.flags}
    if state.schema_exists(conn):
        with conn.cursor(row_factory=dict_row) as cur:
            for row in cur.execute("SELECT name, enabled, percent, updated_at, updated_by FROM rollout.flags "
                                   "WHERE env = %s", (env,)):
                stored[row["name"]] = row
        if conn.execute("SELECT to_regclass('rollout.flag_targets') IS NOT NULL").fetchone()[0]:
            for name, subject, included in conn.execute(
                    "SELECT name, subject, included FROM rollout.flag_targets WHERE env = %s", (env,)):
                targets.setdefault(name, {})[subject] = included
    values = {}
    for name, flag in plan.model.flags.items():
        if name in stored:
            values[name] = FlagValue(description=flag.description, targets=targets[name], **stored[name])
        else:
            enabled, percent = plan_default(plan, name, env)
            declared = {s: True for s in flag.include} | {s: False for s in flag.exclude}
            values[name] = FlagValue(name, enabled, percent, flag.description, source="plan default",
                                     targets=declared)
    return values


def sync_defaults(conn: psycopg.Connection, plan: Plan, env: str, actor: str) -> list[str]:
    """Store the plan's default of every flag this database does not hold yet, and keep the
    subjects the plan targets in step with it."""
    added, declared = [], {}
    for name, subject, included in conn.execute(
            "SELECT name, subject, included FROM rollout.flag_targets WHERE env = %s AND declared", (env,)):
        declared.setdefault(name, {})[subject] = included
    for name, flag in plan.model.flags.items():
        enabled, percent = plan_default(plan, name, env)
        row = conn.execute(
            "INSERT INTO rollout.flags (env, name, enabled, percent, updated_by) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (env, name) DO NOTHING RETURNING name", (env, name, enabled, percent, actor)).fetchone()
        if row:
            conn.execute("INSERT INTO rollout.flag_history (env, name, actor, new_enabled, new_percent, reason) "
                         "VALUES (%s, %s, %s, %s, %s, 'plan default')", (env, name, actor, enabled, percent))
            added.append(name)
        # past its contract a step's old shape is gone: the plan's exclusions are not applied then
        wanted = {s: True for s in flag.include} | (
            {s: False for s in flag.exclude} if flag.exclude and not past_contract(conn, plan, env, name) else {})
        if declared.get(name, {}) != wanted:
            _sync_declared_targets(conn, env, name, declared.get(name, {}), wanted, actor)
    return added


def past_contract(conn: psycopg.Connection, plan: Plan, env: str, name: str) -> list[str]:
    """The steps flag `name` switches whose contract has started here: their old shape is gone,
    so no subject may be sent back to it."""
    users = [s.id for s in plan.steps if s.flag == name]
    if not users or not state.schema_exists(conn):
        return []
    return [step_id for (step_id,) in conn.execute(
        "SELECT step_id FROM rollout.steps WHERE env = %s AND step_id = ANY (%s) AND (state IN ('finalizing', 'done') "
        "OR (state = 'failed' AND phase = 'finalize')) ORDER BY step_id", (env, users))]


def _sync_declared_targets(conn: psycopg.Connection, env: str, name: str, have: dict[str, bool],
                           wanted: dict[str, bool], actor: str) -> None:
    """From the plan's targets the database holds (`have`) to the ones it names now: add the
    new ones, drop the ones it no longer names (the operator's own targets are left alone)."""
    gone = [s for s in have if s not in wanted]
    changed = {s: inside for s, inside in wanted.items() if have.get(s) != inside}
    conn.execute("DELETE FROM rollout.flag_targets WHERE env = %s AND name = %s AND declared AND subject = ANY (%s)",
                 (env, name, gone))
    for subject, inside in changed.items():
        conn.execute("INSERT INTO rollout.flag_targets (env, name, subject, included, declared, updated_by) "
                     "VALUES (%s, %s, %s, %s, true, %s) ON CONFLICT (env, name, subject) DO UPDATE SET "
                     "included = EXCLUDED.included, declared = true, updated_by = EXCLUDED.updated_by, "
                     "updated_at = clock_timestamp()", (env, name, subject, inside, actor))
    _history_of_targets(conn, env, name, actor, "the plan's targets", {
        "include": sorted(s for s, inside in changed.items() if inside),
        "exclude": sorted(s for s, inside in changed.items() if not inside), "remove": sorted(gone)})


def target(conn: psycopg.Connection, env: str, name: str, actor: str, reason: str | None, *,
           include: list[str], exclude: list[str], remove: list[str]) -> FlagValue:
    """Add subjects the flag always includes or excludes here, or remove them, with a history
    row; in the caller's transaction. Subjects the plan names are changed in the plan only."""
    declared = [s for (s,) in conn.execute(
        "SELECT subject FROM rollout.flag_targets WHERE env = %s AND name = %s AND declared AND subject = ANY (%s)",
        (env, name, [*include, *exclude, *remove]))]
    if declared:
        raise UsageError(f"flag {name}: {', '.join(map(repr, declared[:5]))} {'is' if len(declared) == 1 else 'are'} "
                         "targeted by the plan (flags.<name>.include/exclude in rollout.yaml); change it there")
    conn.execute("DELETE FROM rollout.flag_targets WHERE env = %s AND name = %s AND subject = ANY (%s)",
                 (env, name, remove))
    for subjects, inside in ((include, True), (exclude, False)):
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rollout.flag_targets (env, name, subject, included, updated_by) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (env, name, subject) DO UPDATE SET included = EXCLUDED.included, "
                "updated_by = EXCLUDED.updated_by, updated_at = clock_timestamp()",
                [(env, name, subject, inside, actor) for subject in subjects])
    _history_of_targets(conn, env, name, actor, reason, {"include": include, "exclude": exclude, "remove": remove})
    row = conn.execute("SELECT enabled, percent FROM rollout.flags WHERE env = %s AND name = %s", (env, name)).fetchone()
    targets = dict(conn.execute("SELECT subject, included FROM rollout.flag_targets WHERE env = %s AND name = %s",
                                (env, name)).fetchall())
    return FlagValue(name, row[0], row[1], targets=targets)


def _history_of_targets(conn: psycopg.Connection, env: str, name: str, actor: str, reason: str | None,
                        moved: dict[str, list[str]]) -> None:
    """A history row for a targeting change: the value stays, `targets` says what moved."""
    conn.execute(
        "INSERT INTO rollout.flag_history (env, name, actor, old_enabled, old_percent, new_enabled, new_percent, "
        "reason, targets) SELECT env, name, %s, enabled, percent, enabled, percent, %s, %s FROM rollout.flags "
        "WHERE env = %s AND name = %s", (actor, reason, Jsonb({k: v for k, v in moved.items() if v}), env, name))


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


def shown_targets(moved: Mapping[str, list[str]]) -> str:
    """'+in a, b; +out c; -d': what a targeting change moved."""
    signs = {"include": "+in ", "exclude": "+out ", "remove": "-"}
    return "; ".join(signs[k] + ", ".join(v) for k, v in moved.items() if v)


@dataclass(frozen=True)
class Change:
    at: datetime
    actor: str
    old: str | None
    new: str
    reason: str | None
    targets: dict | None = None  # a targeting change: {include, exclude, remove} -> subjects

    @property
    def shown_targets(self) -> str:
        return shown_targets(self.targets or {})

    def as_json(self) -> dict:
        return {"at": self.at.isoformat(), "actor": self.actor, "old": self.old, "new": self.new, "reason": self.reason,
                "targets": self.targets}


def history(conn: psycopg.Connection, env: str, name: str) -> list[Change]:
    if not state.schema_exists(conn):
        return []
    rows = conn.execute(
        # to_jsonb(h): a schema from before targeting has no targets column, and reads as NULL
        "SELECT at, actor, old_enabled, old_percent, new_enabled, new_percent, reason, to_jsonb(h) -> 'targets' "
        "FROM rollout.flag_history AS h WHERE env = %s AND name = %s ORDER BY id", (env, name)).fetchall()
    return [Change(at, actor, shown(oe, op) if oe is not None else None, shown(ne, np), reason, targets)
            for at, actor, oe, op, ne, np, reason, targets in rows]
