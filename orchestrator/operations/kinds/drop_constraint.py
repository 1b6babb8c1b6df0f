"""drop_constraint: a constraint dropped at the contract, brought back NOT VALID and validated on
rollback.
"""

from __future__ import annotations

from typing import Literal

import pglast
from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import ColumnName, TableName
from ..base import CONTRACT, Compiled, Operation, Part
from ..sql import ident


class DropConstraint(Operation):
    """A constraint dropped in the contract phase; `definition` (as pg_get_constraintdef prints
    it) brings it back, NOT VALID then validated, on rollback."""

    op: Literal["drop_constraint"]
    table: TableName
    name: ColumnName
    definition: str = Field(description="e.g. CHECK (score >= 0) or FOREIGN KEY (user_id) REFERENCES users(id)")

    @model_validator(mode="after")
    def _definition_parses(self) -> "DropConstraint":
        """One constraint definition and nothing more: it is put into an ALTER TABLE as it stands."""
        try:
            statements = pglast.parse_sql(f"ALTER TABLE t ADD CONSTRAINT c {self.definition}")
        except pglast.parser.ParseError as exc:
            raise ValueError(f"definition {self.definition!r} is not a constraint: {exc}") from None
        if len(statements) != 1 or len(statements[0].stmt.cmds) != 1:
            raise ValueError(f"definition {self.definition!r} is more than one constraint definition")
        return self

    def compile(self) -> Compiled:
        table, name = ident(self.table), ident(self.name)
        validating = not self.definition.lstrip().upper().startswith(("UNIQUE", "PRIMARY", "EXCLUDE"))
        restore = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}{}").format(
            table, name, sql.SQL(self.definition), sql.SQL(" NOT VALID" if validating else ""))
        drop = Part("drop_constraint", CONTRACT,
                    (sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(table, name),), (restore,))
        if not validating:
            return Compiled((drop,))
        # rollbacks run in reverse: the constraint comes back NOT VALID, then is validated on its own
        revalidate = Part("revalidate", CONTRACT, (), (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
            table, name),))
        return Compiled((revalidate, drop))
