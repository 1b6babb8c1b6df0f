"""sql: the escape hatch, SQL written by hand inside a step of operations, with its rollback.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ..base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from ..raw_sql import created, statements, undoable


class Sql(Operation):
    """SQL written by hand, for what no other operation says: `up` runs as a migration of its
    own in the phase given (expand by default, or contract), `down` is its rollback, statements
    run in the order written.

    SQL: exactly `up` and `down`, split into statements by PostgreSQL's parser (which must read
    both). Locks: whatever the statements take; `rollout plan` shows each one's locks and the
    lint judges them like any migration's (a blocking finding stops apply unless the step allows
    the rule). Both versions: keeping the old application working is up to the SQL. Rollback:
    `down` ('' when there is nothing to undo); without `down`, rollout writes it when `up` only
    creates things (tables, views, indexes, functions, triggers, policies, types, sequences,
    domains, schemas, extensions): each is dropped, in the reverse order, except what belongs to
    a table `up` creates too (its indexes, policies, row-level security). A function `up`
    replaces (CREATE OR REPLACE FUNCTION or PROCEDURE) gets its definition back: right before
    the statement, in the same transaction, `rollout.keep_function` keeps the definition it
    replaces in rollout.replaced_functions (none: the function is new, and the rollback drops
    it), keyed by the migration, and that migration's rollback (`rollout.put_back_function`)
    restores it; if a later migration's replacement is still in place, the rollback leaves the
    function as that one made it, and that one's rollback will restore the definition this
    migration replaced. An unqualified name means the function in the schema CREATE makes it in
    (current_schema()); a replacement that added parameter defaults or changed the result type is
    dropped and created again, with its owner, grants and comment. `down` stays required for
    what may have existed before `up` (IF NOT EXISTS, OR REPLACE of anything but a function,
    row-level security on a table `up` does not create), for a replaced function outside a
    transaction, and for any other statement. `transactional: false` runs the statements one by
    one outside a transaction (for CREATE INDEX CONCURRENTLY and the like: make them idempotent);
    BEGIN, COMMIT and the like are refused when the plan is loaded, with their line, since
    rollout commits each migration with its bookkeeping. Verification (expand phase): what `up`
    creates exists, and its triggers are enabled."""

    op: Literal["sql"]
    up: str = Field(description="the statements to run")
    down: str | None = Field(None, description="the statements that undo them, in the order they run ('' for "
                                               "nothing); omitted: rollout drops what up creates")
    phase: Literal["expand", "contract"] = "expand"
    transactional: bool = True

    @model_validator(mode="after")
    def _parses(self) -> "Sql":
        if not statements(self.up, "up"):
            raise ValueError("up holds no statement")
        if self.down is None:
            if not self.transactional and any(o and o.keep for o in created(self.up)):
                raise ValueError("down is needed: up replaces a function outside a transaction, where its old "
                                 "definition could not be kept in the same transaction; write down")
            undoable(self.up, "up")
        else:
            statements(self.down, "down")
        return self

    def compile(self) -> Compiled:
        apply, rollback = ((statements(self.up, "up"), statements(self.down, "down")) if self.down is not None
                           else undoable(self.up, "up"))
        part = Part("sql", EXPAND if self.phase == "expand" else CONTRACT, apply, rollback,
                    transactional=self.transactional)
        probes = [o for o in created(self.up) if o and o.probe is not None] if self.phase == "expand" else []
        if not probes:
            return Compiled((part,))
        names = [o.label for o in probes]
        label = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
        return Compiled((part,), verify=(check(
            f"{label} exist", f"what up creates, present after the expand: {', '.join(names)}",
            sql.SQL(" UNION ALL ").join(o.probe for o in probes)),))
