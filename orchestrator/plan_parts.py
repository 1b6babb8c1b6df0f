"""The building blocks of rollout.yaml: strict, frozen pydantic models and the types they use.

plan.py assembles them into a step and a plan; operations/ builds on them too (an operation
compiles to migrations, backfills and checks), which is why they live apart from plan.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, field_validator, Strict, StringConstraints, WithJsonSchema, model_validator

from . import gates

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
NAME_RULE = "lowercase letters, digits and '_', starting with a letter, at most 63 characters"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

_DURATION = re.compile(r"^\s*([0-9]{1,12})\s*(ms|s|min|h)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}
MAX_DURATION_MS = 2_147_483_647  # PostgreSQL's longest timeout (INT_MAX milliseconds, about 24 days)


def parse_duration(value: object) -> object:
    """Turn '200ms', '5s', '10min' or '1h' into milliseconds (a YAML integer is milliseconds
    already). A string needs its unit: '1' could mean a millisecond or a second."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration; write a number and a unit: ms, s, min or h "
                             "(e.g. 200ms, 5s, 10min, 1h)")
        value = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_DURATION_MS:
        raise ValueError(f"{value}ms is longer than the longest duration PostgreSQL accepts "
                         f"({MAX_DURATION_MS}ms, about 24 days)")
    return value


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    Field(ge=0),
    WithJsonSchema(
        {
            "description": "milliseconds, or a string such as 200ms, 5s, 10min, 1h",
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_DURATION_MS},
                {"type": "string", "pattern": r"^\s*[0-9]{1,12}\s*(ms|s|min|h)\s*$"},
            ],
        }
    ),
]



def _flag_value(value: object) -> bool | int:
    if isinstance(value, bool) or (isinstance(value, int) and 0 <= value <= 100):
        return value
    raise ValueError(f"a flag value is on, off or a percentage from 0 to 100 (got {value!r})")


# A flag value: on, off, or the percentage of subjects that see it.
FlagValue = Annotated[
    Union[bool, int],
    PlainValidator(_flag_value),
    WithJsonSchema({"oneOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": 100}]}),
]


def Seq(item: type) -> object:
    """A tuple in the model that YAML may write as a list; the items stay strictly typed."""
    return Annotated[tuple[item, ...], Strict(False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Timeouts(_Model):
    """How long a statement may wait for a lock and run, and how long to keep retrying."""

    lock: Duration = Field(200, description="lock_timeout for every statement (default 200ms)")
    statement: Duration = Field(600_000, description="statement_timeout (default 10min)")
    retry_budget: Duration = Field(
        60_000, description="total time to keep retrying lock timeouts, with jittered backoff (default 60s)"
    )

    @field_validator("lock", "statement")
    @classmethod
    def _never_unbounded(cls, value: int, info) -> int:
        # 0 is how PostgreSQL spells "no timeout": a migration would wait for its lock, and every query of
        # the application's behind it, for as long as the lock's holder keeps it
        if value == 0:
            raise ValueError(f"0 turns PostgreSQL's {info.field_name}_timeout off, so nothing would bound the wait; "
                             f"give a duration, e.g. {'200ms' if info.field_name == 'lock' else '10min'}")
        return value


class Webhook(_Model):
    """Where an environment's notifications go."""

    url_env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = Field(
        description="the environment variable holding the URL (a webhook's URL carries its secret)")
    format: Literal["json", "slack"] = Field("json", description="json: the event as JSON; slack: a readable "
                                                                 "message for a Slack incoming webhook")


class BackfillPacing(_Model):
    """How fast backfills may go in one environment: for every job of the plan, the ones that
    operations generate included; a job's own setting wins."""

    target_batch_time: Duration | None = Field(None, description="batch duration the size adapts toward")
    pause: Duration | None = Field(None, description="sleep between batches")
    max_replication_lag: Duration | None = Field(
        None, description="wait between batches while a standby replays more than this behind (null: never wait)")

    def applied_to(self, job: "Backfill") -> "Backfill":
        """The job with this environment's pacing wherever the job does not set its own."""
        given = {name: getattr(self, name) for name in self.model_fields_set if name not in job.model_fields_set}
        return job.model_copy(update=given)


RoleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")]


class FlagsApi(_Model):
    """The flag functions published into a schema an HTTP API exposes (PostgREST, Supabase)."""

    model_config = ConfigDict(populate_by_name=True)  # merged with _Model's

    in_schema: RoleName = Field("public", alias="schema", description="the schema the API exposes (default public)")
    roles: Seq(RoleName) = Field(description="roles that may call them: Supabase's anon, authenticated, service_role")
    readers: Seq(RoleName) = Field((), description="roles that may still read rollout's tables (a FlagClient's, "
                                                   "`rollout flags serve`'s); nobody else may")

    @model_validator(mode="after")
    def _some_roles(self) -> "FlagsApi":
        if not self.roles:
            raise ValueError("name the roles that may call the flag functions (e.g. [anon, authenticated, "
                             "service_role])")
        return self


class Actor(_Model):
    """Where rollout.actor() finds who acts, after a session's app.actor: a request header or a
    JWT claim, as PostgREST (Supabase's API) sets them for each request."""

    header: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] | None = Field(
        None, description="a request header, lowercase as PostgREST passes it (e.g. x-actor)")
    claim: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,62}$")] | None = Field(
        None, description="a claim of the request's JWT (e.g. sub)")


ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, StringConstraints(pattern=ENV_PATTERN)]  # an environment variable

# a fleet target's name, as operators type it after --target: tenant ids, regions, shard numbers
TARGET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
TargetName = Annotated[str, StringConstraints(pattern=TARGET_PATTERN)]
LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN = r"^[a-z][a-z0-9_.-]{0,62}$", r"^[^\s=,\x00-\x1f\x7f]{1,128}$"
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)]

# what each name's pattern asks, in words, for the loader's messages
PATTERN_RULES = {
    NAME_PATTERN: NAME_RULE,
    ENV_PATTERN: "an environment variable name (letters, digits, '_')",
    TARGET_PATTERN: "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 63 characters",
    LABEL_KEY_PATTERN: "lowercase letters, digits, '_', '.' and '-', starting with a letter, at most 63 characters",
    LABEL_VALUE_PATTERN: "1 to 128 characters without spaces, '=', ',' or control characters",
}


def first_repeated(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


class FleetTarget(_Model):
    """One database of a fleet, named in the plan."""

    name: TargetName
    dsn_env: EnvName = Field(description="the environment variable that holds its DSN")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, description="e.g. {region: eu, tier: canary}")


class TargetsQuery(_Model):
    """A fleet listed by a query against a catalog database (the way teams list their tenants)."""

    dsn_env: EnvName = Field(description="the environment variable that holds the catalog database's DSN")
    sql: str = Field(description="returns name, dsn and optionally labels (jsonb); a DSN's password may be a "
                                 "${VARIABLE}")


class Wave(_Model):
    """A part of the fleet, applied (or advanced) once the waves before it are done and their gates pass."""

    name: Name
    targets: Seq(TargetName) = Field((), description="these targets")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, description="the targets with all these labels")
    percent: Annotated[int, Field(ge=1, le=100)] | None = Field(
        None, description="the targets, in name order, that bring the waves so far to this share of the fleet")
    parallel: Annotated[int, Field(ge=1, le=64)] = Field(1, description="targets worked on at once (and connections)")
    on_error: Literal["stop", "continue"] = Field("stop", description="stop: a failed target stops the fleet run "
                                                                      "after the targets in flight")
    failure_limit: Annotated[int, Field(ge=0)] | None = Field(
        None, description="with on_error: continue, stop once more targets than this failed in the wave")
    gates: Seq(Gate) = Field((), description="measured after the wave, before the next starts")

    @model_validator(mode="after")
    def _one_selector(self) -> "Wave":
        chosen = [key for key in ("targets", "labels", "percent") if key in self.model_fields_set]
        empty = [key for key in ("targets", "labels") if key in chosen and not getattr(self, key)]
        if empty:  # `targets: []` would otherwise mean the rest of the fleet
            raise ValueError(f"wave {self.name!r} has an empty {empty[0]}: name at least one, or leave the key out "
                             "for the rest of the fleet")
        if len(chosen) > 1:
            raise ValueError(f"a wave selects by one of targets, labels or percent, not {' and '.join(chosen)}")
        if self.failure_limit is not None and self.on_error == "stop":
            raise ValueError("failure_limit goes with on_error: continue (stop stops at the first failure)")
        return self


class Environment(_Model):
    """Where a plan is applied: the embedded server, a database named by an environment variable,
    or a fleet of databases."""

    database: Literal["embedded"] | None = Field(None, description="'embedded': the built-in PostgreSQL server")
    dsn_env: EnvName | None = Field(
        None, description="name of the environment variable that holds this environment's DSN"
    )
    bootstrap: str | None = Field(None, description="SQL file applied once to an empty database")
    seed: str | None = Field(
        None, description="SQL file run by `rollout db seed`; reads the row count from current_setting('rollout.seed_rows')"
    )
    confirm: bool = Field(False, description="ask before changing anything unless --yes is given")
    after: Name | None = Field(None, description="a step is applied here only once it is done in that environment")
    notify: Seq(Webhook) = Field((), description="webhooks told of stage changes, failed gates, steps done, failed "
                                                 "or aborted, flags set, backfills finished or stopped")
    backfills: BackfillPacing = Field(default_factory=BackfillPacing,
                                      description="pacing for every backfill here, generated ones included")
    flags_api: FlagsApi | None = Field(None, description="publish rollout_is_enabled and rollout_flags where an "
                                                         "HTTP API (PostgREST, Supabase) exposes them")
    notify_postgrest: bool = Field(False, description="send NOTIFY pgrst, 'reload schema' with each migration, so "
                                                      "a self-hosted PostgREST serves the new schema at once")

    targets: Seq(FleetTarget) = Field((), description="a fleet: each target's name, dsn_env and labels")
    targets_file: str | None = Field(None, description="a fleet listed in a file, relative to the plan: "
                                                       "'NAME DSN [label=value ...]' a line; a DSN may name ${VARIABLE}s")
    targets_query: TargetsQuery | None = Field(None, description="a fleet listed by a query against a catalog database")
    waves: Seq(Wave) = Field((), description="the fleet's order: canary first, then waves (default: one wave)")

    @model_validator(mode="after")
    def _one_database(self) -> "Environment":
        given = [key for key in ("database", "dsn_env", "targets", "targets_file", "targets_query")
                 if getattr(self, key)]
        if len(given) != 1:
            raise ValueError("an environment needs exactly one of 'database: embedded', 'dsn_env: VARIABLE', or a "
                             "fleet: 'targets', 'targets_file' or 'targets_query'" +
                             (f" (it has {', '.join(given)})" if given else ""))
        if self.waves and not self.is_fleet:
            raise ValueError("waves order a fleet: give the environment targets, targets_file or targets_query")
        for kind, names in (("waves", [w.name for w in self.waves]), ("targets", [t.name for t in self.targets])):
            if (twice := first_repeated(names)) is not None:
                raise ValueError(f"two {kind} are named {twice!r}")
        return self

    @property
    def is_fleet(self) -> bool:
        return bool(self.targets or self.targets_file or self.targets_query)


# a subject a flag targets: a guild id, a user id; printable, as the operator will read it back, and
# without spaces or commas, which separate subjects on the command line
SUBJECT_PATTERN = r"^[^\s,\x00-\x1f\x7f]{1,256}$"
Subject = Annotated[str, StringConstraints(pattern=SUBJECT_PATTERN)]


class Flag(_Model):
    """A feature flag: its value in each environment lives in that environment's database."""

    description: str
    default: FlagValue = Field(False, description="on, off, or a percentage 0-100")
    environments: dict[Name, FlagValue] = Field(default_factory=dict, description="default per environment")
    include: Seq(Subject) = Field((), description="subjects always in, in every environment, ahead of the "
                                                  "percentage (never while the flag is off)")
    exclude: Seq(Subject) = Field((), description="subjects always out, in every environment")

    @model_validator(mode="after")
    def _targets_disjoint(self) -> "Flag":
        both = sorted(set(self.include) & set(self.exclude))
        if both:
            raise ValueError(f"subject {both[0]!r} is both included and excluded")
        return self


class Check(_Model):
    """A named SQL query that returns the rows violating a rule: it passes when it returns none."""

    name: Name
    description: str = ""
    sql: str | None = Field(None, description="the query, inline")
    file: str | None = Field(None, description="a file holding the query, relative to the plan")

    @model_validator(mode="after")
    def _one_source(self) -> "Check":
        if (self.sql is None) == (self.file is None):
            raise ValueError("a check needs exactly one of 'sql' or 'file'")
        return self




def _exactly_one(model, *keys: str) -> None:
    given = [k for k in keys if getattr(model, k) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {' or '.join(keys)} (got {', '.join(given) or 'none'})")


class HttpProbe(_Model):
    """A URL whose JSON answer holds the value a gate judges."""

    url: str | None = Field(None, description="the URL (or url_env, when it carries a secret)")
    url_env: EnvName | None = Field(None, description="the environment variable holding the URL")
    method: Literal["GET", "POST"] = "GET"
    body: dict | list | None = Field(None, description="a JSON body to POST")
    json_path: str = Field("$", description="where the value is in the answer: data.items[0].status ($: all of it)")

    @model_validator(mode="after")
    def _valid(self) -> "HttpProbe":
        _exactly_one(self, "url", "url_env")
        gates.path_parts(self.json_path)
        return self


class PrometheusProbe(_Model):
    """An instant query against a Prometheus HTTP API; the value is the first sample's."""

    address: str | None = Field(None, description="the server, e.g. http://prometheus:9090")
    address_env: EnvName | None = Field(None, description="the environment variable holding the address")
    query: str = Field(description="PromQL returning an instant vector or a scalar")

    @model_validator(mode="after")
    def _valid(self) -> "PrometheusProbe":
        _exactly_one(self, "address", "address_env")
        return self


class Gate(_Model):
    """A measurement from outside the database that a stage must pass, taken `count` times,
    `interval` apart, over the stage's hold."""

    name: Name
    description: str = ""
    http: HttpProbe | None = None
    prometheus: PrometheusProbe | None = None
    success: str | None = Field(None, description="the condition a good value meets: '< 0.01', '== \"ok\"'")
    failure: str | None = Field(None, description="the condition a bad value meets")
    interval: Duration = Field(10_000, description="time between measurements (default 10s)")
    count: int = Field(1, ge=1, description="measurements the gate takes at each stage")
    failure_limit: int = Field(0, ge=0, description="failed measurements tolerated; one more fails the gate")
    inconclusive_limit: int = Field(0, ge=0, description="unmeasurable ones tolerated; one more stops the rollout "
                                                         "for a person to look")

    @model_validator(mode="after")
    def _valid(self) -> "Gate":
        _exactly_one(self, "http", "prometheus")
        if self.success is None and self.failure is None:
            raise ValueError("a gate needs success, failure or both")
        for text in (self.success, self.failure):
            if text is not None:
                gates.condition(text)
        return self


class RolloutPolicy(_Model):
    """How flags are turned on: the plan's defaults (top-level `rollout:`), which a step's own
    `rollout:` completes."""

    stages: Seq(Annotated[int, Field(ge=1, le=100)]) = Field((100,), description="percentages, rising, ending at 100")
    hold: Duration = Field(0, description="minimum time at each stage before the next (default 0)")
    gates: Seq(Gate) = Field((), description="measurements from outside the database each stage must pass")
    on_failure: Literal["previous", "off"] = Field(
        "previous", description="when a gate fails under advance --watch: the flag goes back to the previous stage "
                                "(off from the first), or off")

    @model_validator(mode="after")
    def _rising_to_100(self) -> "RolloutPolicy":
        stages = list(self.stages)
        if not stages or stages[-1] != 100 or any(a >= b for a, b in zip(stages, stages[1:])):
            raise ValueError(f"stages must rise and end at 100 (got {stages})")
        return self


class StagedRollout(RolloutPolicy):
    """How a step's flag is turned on: stage by stage, with checks and a hold time between. What
    the step leaves out comes from the plan's `rollout:`; the plan's gates come before its own."""

    checks: Seq(Check) = Field((), description="must pass while the flag is at a stage, before advancing")

    def under(self, policy: RolloutPolicy) -> "StagedRollout":
        """This rollout completed by the plan's `policy`: its own keys win, gates add up."""
        inherited = {key: getattr(policy, key) for key in policy.model_fields_set - self.model_fields_set}
        return self.model_copy(update={**inherited, "gates": (*policy.gates, *self.gates)})


class Allowance(_Model):
    """A lint finding the step accepts on purpose, and why (shown in every preview)."""

    rule: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")] = Field(description="the rule's name")
    reason: Annotated[str, StringConstraints(min_length=1)] = Field(description="why it is safe here")
    direction: Literal["apply", "rollback"] | None = Field(
        None, description="accept it only in the files that run this way (default: apply and rollback files)")


TableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")]
ColumnName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")]


class Backfill(_Model):
    """A resumable, batched data migration over one table, in key order."""

    name: Name
    description: str = ""
    table: TableName = Field(description="the table whose rows are visited: name or schema.name")
    key: Seq(ColumnName) | None = Field(None, description="unique, indexed columns to batch by (default: the primary key)")
    set: dict[ColumnName, str] | None = Field(None, description="column -> SQL expression, applied to each batch's rows")
    sql: str | None = Field(None, description="a statement over one batch; the batch's keys are the CTE `batch`")
    where: str | None = Field(None, description="SQL condition: the rows that still need work")
    batch_size: int = Field(5000, ge=1, description="rows in the first batch; later batches adapt")
    min_batch: int = Field(100, ge=1)
    max_batch: int = Field(100_000, ge=1)
    target_batch_time: Duration = Field(50, description="batch duration the size adapts toward (default 50ms)")
    pause: Duration = Field(0, description="sleep between batches, to throttle (default 0)")
    on_error: Literal["stop", "record"] = Field(
        "stop", description="a row the change cannot convert: stop with its key, or record it and carry on")
    max_replication_lag: Duration | None = Field(
        10_000, description="wait between batches while a standby replays more than this behind (default 10s; "
                            "null: never wait)")
    prepare: str | None = Field(
        None, description="statements run in one transaction before the first batch and again whenever the job "
                          "continues (make them idempotent: IF NOT EXISTS, OR REPLACE)")
    restores: str | None = Field(
        None, description="a migration id of this step: the job runs only when that migration is rolled back, "
                          "before its rollback file, to put values back from a table the migration keeps")

    @model_validator(mode="after")
    def _one_change(self) -> "Backfill":
        if (self.set is None) == (self.sql is None):
            raise ValueError("a backfill needs exactly one of 'set' or 'sql'")
        if self.set is not None and not self.set:
            raise ValueError("'set' needs at least one column")
        if not self.min_batch <= self.batch_size <= self.max_batch:
            raise ValueError("batch sizes must satisfy min_batch <= batch_size <= max_batch")
        return self


