"""add_constraint: CHECK and FOREIGN KEY added NOT VALID and validated in a transaction of their own
(SHARE UPDATE EXCLUSIVE: reads and writes go on), UNIQUE through an index built concurrently, NOT
NULL through a validated CHECK so that SET NOT NULL does not scan.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import ColumnName, Seq, TableName, _Model
from .. import names
from ..base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from ..constraint_sql import Remediation, kept_originals, key_is_unique, set_not_null
from ..sql import expr, ident, in_schema


class ForeignKey(_Model):
    columns: Seq(ColumnName)
    references: TableName
    referenced_columns: Seq(ColumnName) = Field(description="the referenced columns, in the order of `columns`")
    on_delete: Literal["no action", "restrict", "cascade", "set null", "set default"] = "no action"


class AddConstraint(Operation):
    """A constraint on a table that holds rows, added without a long lock. Exactly one of
    `check`, `foreign_key`, `unique` or `not_null`.

    With `check`, `remediation` fixes the rows that violate it instead of refusing to start:
    `remediation: {set: {column: expression}, key: [id]}`. Expand creates
    `_rollout_originals_<name>` (key jsonb PRIMARY KEY, original jsonb: the key columns and the
    columns `set` changes, as jsonb, so any key and column type fits); a backfill then visits the
    violating rows in key-range batches and, in each batch's transaction, keeps their originals
    (the first seen, never overwritten) and sets the columns. Verification: no row violates the
    check. The constraint is added in the contract phase, NOT VALID then validated (so an
    application UPDATE of a not-yet-remediated row is never refused by it during the backfill);
    the step's contract comes right after verification when it has no flag. A violating row
    the application writes between the backfill and the contract fails verification (or
    VALIDATE) and stops the step, which names the check. The generated precondition
    (`<name>_remediable`) judges the rows as the remediation leaves them: it refuses to start
    only when a violating row would still violate the check once its columns are set.
    Rollback: the constraint is dropped, then a job of the backfill engine
    (`restore_rollout_originals_<name>`) puts every kept original back in key-range batches of
    the originals table, each committed with its checkpoint (rows deleted since are skipped; a
    value the application changed since is overwritten with the original), and the originals
    table is dropped."""

    op: Literal["add_constraint"]
    table: TableName
    name: ColumnName
    check: str | None = Field(None, description="a CHECK expression")
    foreign_key: ForeignKey | None = None
    unique: Seq(ColumnName) | None = Field(None, description="columns that must be unique together")
    not_null: ColumnName | None = Field(None, description="a column that must not be NULL")
    remediation: Remediation | None = Field(None, description="with check: what the violating rows become")

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
        if self.remediation is not None:
            if self.check is None:
                raise ValueError("remediation goes with check only")
            names.fit(f"_rollout_originals_{self.name}")
        return self

    def compile(self) -> Compiled:
        table, name = ident(self.table), ident(self.name)
        drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(table, name)
        validate = Part("validate", EXPAND, (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(table, name),))
        if self.unique is not None:
            index = sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
                name, table, sql.SQL(", ").join(ident(c) for c in self.unique))
            drop_index = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(in_schema(self.table, self.name))
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
            return set_not_null(self.table, self.not_null)
        if self.remediation is not None:
            return self._remediated()
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


    def _remediated(self) -> Compiled:
        """CHECK with a remediation: originals table, batched fix, then the constraint."""
        fix = self.remediation
        table, name, holds = ident(self.table), ident(self.name), expr(self.check)
        keep, backfill = kept_originals(self.table, f"_rollout_originals_{self.name}", fix, sql.SQL("NOT ({})").format(
            holds), f"remediate_{self.name}", f"rows violating {self.name} set as its remediation says")
        # the row as the remediation leaves it: its columns, with the set ones replaced
        fixed = sql.SQL("jsonb_populate_record(r, jsonb_build_object({}))").format(sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(c), expr(e)) for c, e in fix.set.items()))
        unfixable = sql.SQL("SELECT * FROM (SELECT ({}).* FROM {} AS r WHERE NOT ({})) AS r WHERE NOT ({})").format(
            fixed, table, holds, holds)
        add = Part("add", CONTRACT, (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({}) NOT VALID").format(
            table, name, holds),), (sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(table, name),))
        validate = Part("validate", CONTRACT, (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(table, name),))
        remaining = sql.SQL("SELECT * FROM {} WHERE NOT ({})").format(table, holds)
        return Compiled((keep, add, validate), backfills=(backfill,),
                        verify=(check(f"{self.name}_holds", f"rows {self.name} would refuse after the remediation",
                                      remaining),),
                        preconditions=(check(f"{self.name}_remediable", f"rows {self.name} would refuse even "
                                             "after the remediation", unfixable),
                                       key_is_unique(self.table, fix.key, self.name)))


def _orphans(table: str, key: ForeignKey) -> sql.Composable:
    """Rows whose key has no match in the referenced table."""
    match = sql.SQL(" AND ").join(sql.SQL("r.{} = t.{}").format(ident(theirs), ident(ours))
                                  for theirs, ours in zip(key.referenced_columns, key.columns))
    present = sql.SQL(" AND ").join(sql.SQL("t.{} IS NOT NULL").format(ident(c)) for c in key.columns)
    return sql.SQL("SELECT t.* FROM {} AS t WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS r WHERE {})").format(
        ident(table), present, ident(key.references), match)
