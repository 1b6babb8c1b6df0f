"""The plan: frozen models of rollout.yaml, their JSON Schema, and the values loading derives.

The pydantic models are the single description of the format: they validate a plan, and the
same models generate the JSON Schema that `rollout schema` prints for editors.
Loading (YAML, locations, files on disk) lives in plan_loader.py; nothing here touches a
database or the file system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator
from yoyo.migrations import get_migration_hash

from .errors import UsageError
from .operations import Operation

from .plan_parts import (  # the plan's vocabulary, as other modules import it from here
    Actor, Allowance, Backfill, Check, Environment, Flag, Gate, Name, Seq, RolloutPolicy, StagedRollout, Timeouts, _Model,
)


class Step(_Model):
    """One schema improvement: preconditions, expand migration, verification, optional contract."""

    id: Name
    title: str
    description: str = ""
    priority: Literal["high", "medium", "low"]
    flag: Name | None = None
    rollout: StagedRollout | None = Field(None, description="the flag's stages; what it leaves out comes from the plan's rollout: (default [100])")
    depends_on: Seq(Name) = ()
    preconditions: Seq(Check) = ()
    migrate: str | None = Field(None, description="folder of yoyo-format SQL migrations (with .rollback.sql files)")
    operations: Seq(Operation) = Field((), description="changes rollout writes the SQL for (after the migrate folder's)")
    backfills: Seq(Backfill) = ()
    verify: Seq(Check) = ()
    finalize: str | None = Field(None, description="folder of the contract-phase migrations")
    allow: Seq(Allowance) = Field((), description="lint rules this step accepts, each with its reason")
    timeouts: Timeouts | None = None

    @property
    def forward_backfills(self) -> tuple[Backfill, ...]:
        """The jobs apply runs; the rest run only on rollback (`restores`)."""
        return tuple(b for b in self.backfills if b.restores is None)

    def backfills_known(self, started: set[str]) -> tuple[Backfill, ...]:
        """The jobs to show or act on: a restore exists only once a rollback has started it
        (`started`: the names rollout.backfills holds for the step)."""
        return tuple(b for b in self.backfills if b.restores is None or b.name in started)

    @model_validator(mode="after")
    def _has_changes(self) -> "Step":
        if self.migrate is None and self.finalize is None and not self.operations:
            raise ValueError("a step needs a migrate folder, a finalize folder, operations, or some of them")
        return self


class PlanModel(_Model):
    """rollout.yaml, format version 1."""

    model_config = ConfigDict(title="rollout plan")

    version: Literal[1]
    environments: dict[Name, Environment]
    flags: dict[Name, Flag] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts, description="defaults for every step")
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy, description="defaults for every flagged step's "
                                   "rollout: stages, hold and on_failure (a step's own replace them), gates (a step's "
                                   "own are added)")
    actor: Actor = Field(default_factory=Actor, description="where rollout.actor() finds who acts, after app.actor")
    steps: Seq(Step)


def json_schema() -> dict:
    """The JSON Schema of rollout.yaml, for editors and CI validation."""
    schema = PlanModel.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


class Direction(str, Enum):
    """Which way a migration runs."""

    APPLY = "apply"
    ROLLBACK = "rollback"


class Phase(str, Enum):
    """The phase of a step a migration belongs to: expand (`migrate`) or contract (`finalize`)."""

    MIGRATE = "migrate"
    FINALIZE = "finalize"


@dataclass(frozen=True)
class Migration:
    """One yoyo migration and its rollback, read in whole: nothing downstream reopens a file.

    `statements` and `rollback` are what apply executes (split as yoyo splits them); `text` and
    `rollback_text` are the files as written, which the analysis and squawk read, so the line
    numbers they report are the file's."""

    id: str
    path: str
    statements: tuple[str, ...]
    rollback: tuple[str, ...]
    transactional: bool
    text: str = ""
    rollback_path: str = ""
    rollback_text: str = ""
    origin: str | None = None  # for a migration an operation generated: where in rollout.yaml it comes from
    allows: tuple[Allowance, ...] = ()  # the rules its operation's pattern answers, in its files alone

    @property
    def generated(self) -> bool:
        return self.origin is not None

    @property
    def hash(self) -> str:
        """yoyo's key for the migration, so `yoyo list` sees what rollout applied."""
        return get_migration_hash(self.id)

    def source(self, direction: Direction) -> tuple[str, str]:
        """(path, text) of the file that runs in `direction`."""
        if direction == Direction.APPLY:
            return self.path, self.text
        return self.rollback_path, self.rollback_text

    def runs(self, direction: Direction) -> tuple[str, ...]:
        return self.statements if direction == Direction.APPLY else self.rollback


@dataclass(frozen=True)
class Plan:
    """A validated plan with every file it references read in."""

    path: str
    model: PlanModel
    migrations: dict[tuple[str, str], tuple[Migration, ...]]  # (step id, Phase) -> files

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.model.steps

    @property
    def directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def step(self, step_id: str) -> Step:
        for step in self.model.steps:
            if step.id == step_id:
                return step
        known = ", ".join(s.id for s in self.model.steps)
        raise UsageError(f"no step {step_id!r} in {self.path}; steps are: {known}")

    def has_contract(self, step: Step) -> bool:
        return bool(self.migrations.get((step.id, Phase.FINALIZE.value)))

    def step_migrations(self, step: Step, phases: tuple[Phase, ...] = (Phase.MIGRATE, Phase.FINALIZE)
                        ) -> list[tuple[Phase, Migration]]:
        """The step's migrations in the order apply runs them."""
        return [(phase, m) for phase in phases for m in self.migrations.get((step.id, phase.value), ())]

    def environment(self, name: str) -> Environment:
        try:
            return self.model.environments[name]
        except KeyError:
            known = ", ".join(self.model.environments)
            raise UsageError(f"no environment {name!r} in {self.path}; environments are: {known}") from None

    def stages(self, step: Step) -> StagedRollout | None:
        """The staged rollout of a flagged step: its own, completed by the plan's `rollout:`."""
        if step.flag is None:
            return None
        return (step.rollout or StagedRollout()).under(self.model.rollout)

    def timeouts(self, step: Step) -> Timeouts:
        return step.timeouts or self.model.timeouts

    def order(self, target: str | None = None) -> list[Step]:
        """Steps in plan order with dependencies first; only `target` and what it needs when given."""
        by_id = {s.id: s for s in self.model.steps}
        wanted = [self.step(target)] if target else list(self.model.steps)
        ordered: list[Step] = []
        seen: set[str] = set()

        def visit(step: Step) -> None:
            if step.id in seen:
                return
            seen.add(step.id)
            for dep in step.depends_on:
                visit(by_id[dep])
            ordered.append(step)

        for step in wanted:
            visit(step)
        return ordered

    def dependents(self, step_id: str) -> list[Step]:
        """Steps that depend on `step_id`, directly or not, in reverse order (undo these first)."""
        affected = {step_id}
        for step in self.order():
            if affected.intersection(step.depends_on):
                affected.add(step.id)
        return [s for s in reversed(self.order()) if s.id in affected and s.id != step_id]
