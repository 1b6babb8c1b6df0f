"""create_enum: a new enum type.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import Seq, TableName
from ..base import EXPAND, Compiled, Operation, Part, check
from ..enum_labels import Label, label_fits
from ..sql import ident, literal_name, regtype


class CreateEnum(Operation):
    """A new enum type, created in the expand phase.

    SQL: `CREATE TYPE name AS ENUM ('a', 'b', ...)` in a transaction. Locks: none on any table.
    Both versions: nothing uses the type until a later operation or the new application does.
    Rollback: `DROP TYPE name` (it fails, and says what depends on it, while a column still
    uses the type). A precondition refuses a type name that is taken."""

    op: Literal["create_enum"]
    name: TableName = Field(description="the type's name: name or schema.name")
    values: Seq(Label) = Field(description="the labels, in their sort order")

    @model_validator(mode="after")
    def _labels(self) -> "CreateEnum":
        if not self.values:
            raise ValueError("an enum needs at least one value")
        repeated = sorted({v for v in self.values if self.values.count(v) > 1})
        if repeated:
            raise ValueError(f"value {repeated[0]!r} is listed twice")
        for value in self.values:
            label_fits(value)
        return self

    def compile(self) -> Compiled:
        create = sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
            ident(self.name), sql.SQL(", ").join(map(sql.Literal, self.values)))
        taken = sql.SQL("SELECT {0} AS existing WHERE {0} IS NOT NULL").format(regtype(self.name))
        return Compiled((Part("create_enum", EXPAND, (create,), (sql.SQL("DROP TYPE {}").format(ident(self.name)),)),),
                        preconditions=(check(f"{self.name}_is_new", f"a type named {literal_name(self.name)} exists "
                                             "already", taken),))
