"""A table's definition as a plan writes it (columns, unique groups, checks) and its CREATE TABLE:
what create_table makes and what drop_table brings back on rollback.
"""

from __future__ import annotations

from psycopg import sql
from pydantic import Field, model_validator

from ..plan_parts import ColumnName, Seq, _Model
from .constraint_sql import Reference
from .sql import expr, ident, type_name


# serial types are shorthands, not types: the column they make has the integer type
SERIAL_TYPES = {"smallserial": "smallint", "serial2": "smallint", "serial": "integer", "serial4": "integer",
                "bigserial": "bigint", "serial8": "bigint"}


class Column(_Model):
    name: ColumnName
    type: str = Field(description="the type as SQL writes it: bigint, text, varchar(64), timestamptz, app.mood")
    default: str | None = Field(None, description="an SQL expression")
    not_null: bool = False
    primary_key: bool = False
    references: Reference | None = None

    @model_validator(mode="after")
    def _sql_parses(self) -> "Column":
        type_name(self.type)
        if self.default is not None:
            expr(self.default)
        return self


class TableDefinition(_Model):
    """A table's columns, unique column groups and named checks."""

    columns: Seq(Column) = Field(description="the columns, in order")
    unique: Seq(Seq(ColumnName)) = Field((), description="groups of columns that are unique together")
    checks: dict[ColumnName, str] = Field(default_factory=dict, description="constraint name -> CHECK expression")

    @model_validator(mode="after")
    def _consistent(self) -> "TableDefinition":
        validate_definition(self)
        return self


def validate_definition(definition) -> None:
    names = [c.name for c in definition.columns]
    if not names:
        raise ValueError("a table needs at least one column")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"column {repeated[0]!r} is listed twice")
    for group in definition.unique:
        unknown = [c for c in group if c not in names]
        if not group or unknown:
            raise ValueError(f"unique {list(group)}: {'no such column ' + repr(unknown[0]) if unknown else 'empty'}")
    for expression in definition.checks.values():
        expr(expression)


def create_statement(table: str, definition) -> sql.Composable:
    """CREATE TABLE from a definition, written so PostgreSQL names its constraints the way it
    names those of a table created by hand (t_pkey, t_a_b_key, t_col_fkey)."""
    keys = [c.name for c in definition.columns if c.primary_key]
    items = []
    for column in definition.columns:
        parts = [sql.SQL("{} {}").format(ident(column.name), type_name(column.type))]
        if column.default is not None:
            parts.append(sql.SQL("DEFAULT {}").format(expr(column.default)))
        if column.not_null:
            parts.append(sql.SQL("NOT NULL"))
        if column.primary_key and len(keys) == 1:
            parts.append(sql.SQL("PRIMARY KEY"))
        if column.references is not None:
            ref = column.references
            parts.append(sql.SQL("REFERENCES {} ({}) ON DELETE {}").format(
                ident(ref.table), ident(ref.column), sql.SQL(ref.on_delete.upper())))
        items.append(sql.SQL(" ").join(parts))
    if len(keys) > 1:
        items.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(ident, keys))))
    for group in definition.unique:
        items.append(sql.SQL("UNIQUE ({})").format(sql.SQL(", ").join(map(ident, group))))
    for name, expression in definition.checks.items():
        items.append(sql.SQL("CONSTRAINT {} CHECK ({})").format(ident(name), expr(expression)))
    return sql.SQL("CREATE TABLE {} ({})").format(ident(table), sql.SQL(", ").join(items))
