"""add_constraint and drop_constraint, written the way that does not block: CHECK and FOREIGN
KEY added NOT VALID and validated in a transaction of their own (SHARE UPDATE EXCLUSIVE: reads
and writes go on), UNIQUE through an index built concurrently, NOT NULL through a validated
CHECK so that SET NOT NULL does not scan."""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ..plan_parts import ColumnName, Seq, TableName, _Model
from . import names
from .base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from .sql import expr, ident


class ForeignKey(_Model):
    columns: Seq(ColumnName)
    references: TableName
    referenced_columns: Seq(ColumnName) = Field(description="the referenced columns, in the order of `columns`")
    on_delete: Literal["no action", "restrict", "cascade", "set null", "set default"] = "no action"


class AddConstraint(Operation):
    """A constraint on a table that holds rows, added without a long lock. Exactly one of
    `check`, `foreign_key`, `unique` or `not_null`."""

    op: Literal["add_constraint"]
    table: TableName
    name: ColumnName
    check: str | None = Field(None, description="a CHECK expression")
    foreign_key: ForeignKey | None = None
    unique: Seq(ColumnName) | None = Field(None, description="columns that must be unique together")
    not_null: ColumnName | None = Field(None, description="a column that must not be NULL")

    @model_validator(mode="after")
    def _one_kind(self) -> "AddConstraint":
        if self.foreign_key is not None and len(self.foreign_key.columns) != len(self.foreign_key.referenced_columns):
            raise ValueError("foreign_key: columns and referenced_columns must pair up")
        given = [k for k in ("check", "foreign_key", "unique", "not_null") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("add_constraint needs exactly one of check, foreign_key, unique or not_null "
                             f"(got {', '.join(given) or 'none'})")
        if self.check is not None:
            expr(self.check)
        return self

    def compile(self) -> Compiled:
        table, name = ident(self.table), ident(self.name)
        drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(table, name)
        validate = Part("validate", EXPAND, (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(table, name),))
        if self.unique is not None:
            index = sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
                name, table, sql.SQL(", ").join(ident(c) for c in self.unique))
            drop_index = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(_in_schema(self.table, self.name))
            attach = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE USING INDEX {}").format(table, name, name)
            columns = sql.SQL(", ").join(ident(c) for c in self.unique)
            duplicates = sql.SQL("SELECT {cols}, count(*) AS rows FROM {t} WHERE ({not_null}) GROUP BY {cols} "
                                 "HAVING count(*) > 1").format(
                cols=columns, t=table, not_null=sql.SQL(" AND ").join(
                    sql.SQL("{} IS NOT NULL").format(ident(c)) for c in self.unique))
            return Compiled((Part("unique_index", EXPAND, (index,), (drop_index,), transactional=False),
                             Part("unique", EXPAND, (attach,), (drop,))),
                            preconditions=(check(f"{self.name}_no_duplicates", f"values {self.name} would refuse",
                                                 duplicates),))
        if self.not_null is not None:
            return _not_null(self.table, self.not_null)
        if self.check is not None:
            definition = sql.SQL("CHECK ({})").format(expr(self.check))
            violating = sql.SQL("SELECT * FROM {} WHERE NOT ({})").format(table, expr(self.check))
        else:
            key = self.foreign_key
            referenced = sql.SQL(" ({})").format(sql.SQL(", ").join(ident(c) for c in key.referenced_columns))
            definition = sql.SQL("FOREIGN KEY ({}) REFERENCES {}{} ON DELETE {}").format(
                sql.SQL(", ").join(ident(c) for c in key.columns), ident(key.references), referenced,
                sql.SQL(key.on_delete.upper()))
            violating = _orphans(self.table, key)
        add = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(table, name, definition)
        return Compiled((Part("add", EXPAND, (add,), (drop,)), validate),
                        preconditions=(check(f"{self.name}_holds", f"rows {self.name} would refuse", violating),))


def _orphans(table: str, key: ForeignKey) -> sql.Composable:
    """Rows whose key has no match in the referenced table."""
    match = sql.SQL(" AND ").join(sql.SQL("r.{} = t.{}").format(ident(theirs), ident(ours))
                                  for theirs, ours in zip(key.referenced_columns, key.columns))
    present = sql.SQL(" AND ").join(sql.SQL("t.{} IS NOT NULL").format(ident(c)) for c in key.columns)
    return sql.SQL("SELECT t.* FROM {} AS t WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS r WHERE {})").format(
        ident(table), present, ident(key.references), match)


def _not_null(table_name: str, column: str) -> Compiled:
    """CHECK (col IS NOT NULL) NOT VALID, VALIDATE, then SET NOT NULL, which PostgreSQL proves
    from the validated check without a scan; the check is dropped after."""
    table, col = ident(table_name), ident(column)
    proof = ident(names.not_null_check(table_name, column))
    nulls = sql.SQL("SELECT * FROM {} WHERE {} IS NULL").format(table, col)
    return Compiled(preconditions=(check(f"{column}_has_no_nulls", f"rows where {column} is NULL", nulls),), parts=(
        Part("not_null_check", EXPAND,
             (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID").format(table, proof, col),),
             (sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(table, proof),)),
        Part("not_null_validate", EXPAND, (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(table, proof),)),
        Part("not_null", EXPAND,
             (sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(table, col),
              sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, proof)),
             (sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(table, col),)),
    ))


class DropConstraint(Operation):
    """A constraint dropped in the contract phase; `definition` (as pg_get_constraintdef prints
    it) brings it back, NOT VALID then validated, on rollback."""

    op: Literal["drop_constraint"]
    table: TableName
    name: ColumnName
    definition: str = Field(description="e.g. CHECK (score >= 0) or FOREIGN KEY (user_id) REFERENCES users(id)")

    @model_validator(mode="after")
    def _definition_parses(self) -> "DropConstraint":
        import pglast
        try:
            pglast.parse_sql(f"ALTER TABLE t ADD CONSTRAINT c {self.definition}")
        except pglast.parser.ParseError as exc:
            raise ValueError(f"definition {self.definition!r} is not a constraint: {exc}") from None
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


def _in_schema(table: str, name: str) -> sql.Identifier:
    return ident(f"{table.split('.')[0]}.{name}" if "." in table else name)


KINDS = (AddConstraint, DropConstraint)
