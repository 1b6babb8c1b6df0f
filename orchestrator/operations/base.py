"""What every operation compiles to, and the model they share.

An operation is a frozen value from rollout.yaml. `compile()` turns it into what a
hand-written step holds: migrations for the expand phase (`migrate`) and the contract phase
(`finalize`), each with its rollback, backfills and verification checks. Nothing downstream
knows operations exist: the preview, the lint, apply and rollback see migrations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from psycopg import sql

from ..plan_parts import Allowance, Backfill, Check, _Model

EXPAND, CONTRACT = "migrate", "finalize"


@dataclass(frozen=True)
class Part:
    """One generated migration: its statements, their inverse (run in the order given), and
    whether it may run in a transaction. `allows` names the lint rules (rule, reason) that the
    operation's own pattern answers in this migration's files alone (a rename the operation
    covers with a view): the lint shows such findings as allowed, with the reason. `restore` is
    a batched job that runs through the backfill engine before the rollback, while the table
    this migration keeps values in is still there: it puts them back without one long UPDATE."""

    name: str
    phase: str  # EXPAND or CONTRACT
    apply: tuple[sql.Composable, ...]
    rollback: tuple[sql.Composable, ...] = ()
    transactional: bool = True
    allows: tuple[Allowance, ...] = ()
    restore: Backfill | None = None


@dataclass(frozen=True)
class Compiled:
    parts: tuple[Part, ...] = ()
    backfills: tuple[Backfill, ...] = ()
    verify: tuple[Check, ...] = ()
    preconditions: tuple[Check, ...] = ()  # rows that would make the change fail, found before it starts
    gates: tuple[Check, ...] = ()  # must hold at every stage of the step's rollout (a step with a flag)


def merged(compiled: "list[Compiled]") -> Compiled:
    """Several compilations as one operation's: parts, jobs and checks in the order given."""
    return Compiled(**{f.name: tuple(x for c in compiled for x in getattr(c, f.name)) for f in fields(Compiled)})


def check(name: str, description: str, query: sql.Composable) -> Check:
    """A generated check: `query` returns the rows that break the rule (none: it passes)."""
    label = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")[:63] or "check"
    return Check(name=label if label[0].isalpha() else f"c_{label}"[:63], description=description,
                 sql=query.as_string(None))


class Operation(_Model):
    """Base of every operation model (the `op` field names its kind)."""

    def compile(self) -> Compiled:  # pragma: no cover - each kind defines it
        raise NotImplementedError

    def flags_used(self) -> tuple[str, ...]:
        """The plan's flags the generated SQL asks about: the loader requires the step's own flag
        (the operation's gates judge that flag's stages)."""
        return ()
