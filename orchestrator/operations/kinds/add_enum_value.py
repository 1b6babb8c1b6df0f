"""add_enum_value: a value added where PostgreSQL lets it be used (a migration of its own, outside a
transaction).
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import TableName
from ..base import EXPAND, Compiled, Operation, Part
from ..enum_labels import Label, label_fits
from ..sql import ident, literal_name


class AddEnumValue(Operation):
    """A label added to an existing enum type.

    SQL: `ALTER TYPE t ADD VALUE IF NOT EXISTS 'v' [BEFORE 'x' | AFTER 'x']`, alone in a
    migration of its own: PostgreSQL refuses to use a new label in the transaction that added
    it ('unsafe use of new value'), so it commits before any later migration of the step (or
    the application) uses it. IF NOT EXISTS makes a re-run harmless. Locks: none on any table
    (only the type's catalog rows). Both versions: the old application never writes the label;
    the new one may from the expand on.

    Rollback: none. PostgreSQL has no ALTER TYPE ... DROP VALUE, and removing a label that any
    row, index page or default might still hold is not safe, so the label stays in the type
    after a rollback (an unused label is harmless; the generated rollback file is a comment
    saying so). A type can only lose it by being recreated without it."""

    op: Literal["add_enum_value"]
    type: TableName = Field(description="the enum type: name or schema.name")
    value: Label
    before: Label | None = Field(None, description="the label it sorts before")
    after: Label | None = Field(None, description="the label it sorts after")

    @model_validator(mode="after")
    def _placement(self) -> "AddEnumValue":
        if self.before is not None and self.after is not None:
            raise ValueError("add_enum_value takes 'before' or 'after', not both")
        for label in (self.value, self.before, self.after):
            if label is not None:
                label_fits(label)
        return self

    def compile(self) -> Compiled:
        where = (sql.SQL(" BEFORE {}").format(sql.Literal(self.before)) if self.before is not None else
                 sql.SQL(" AFTER {}").format(sql.Literal(self.after)) if self.after is not None else sql.SQL(""))
        add = sql.SQL("ALTER TYPE {} ADD VALUE IF NOT EXISTS {}{}").format(ident(self.type), sql.Literal(self.value),
                                                                          where)
        stays = sql.SQL("\n".join((
            f"-- nothing to undo: PostgreSQL cannot drop an enum value, so {self.value!r} stays in",
            f"-- {literal_name(self.type)} after the rollback (unused, it is harmless; only recreating the type",
            "-- without it removes it)")))
        return Compiled((Part("add_enum_value", EXPAND, (add,), (stays,)),))
