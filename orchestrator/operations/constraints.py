"""add_constraint and drop_constraint, written the way that does not block: CHECK and FOREIGN
KEY added NOT VALID and validated in a transaction of their own (SHARE UPDATE EXCLUSIVE: reads
and writes go on), UNIQUE through an index built concurrently, NOT NULL through a validated
CHECK so that SET NOT NULL does not scan."""

from __future__ import annotations

import re
from typing import Literal

import pglast
from psycopg import sql
from pydantic import Field, model_validator

from ..plan_parts import Backfill, Check, ColumnName, Seq, TableName, _Model
from . import names
from .base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from .restores import restore_job
from .sql import expr, ident, in_schema, literal_name, render


class ForeignKey(_Model):
    columns: Seq(ColumnName)
    references: TableName
    referenced_columns: Seq(ColumnName) = Field(description="the referenced columns, in the order of `columns`")
    on_delete: Literal["no action", "restrict", "cascade", "set null", "set default"] = "no action"


class Remediation(_Model):
    """What a CHECK's violating rows become: column -> SQL expression over the row (its columns
    by name, as they are before the change)."""

    set: dict[ColumnName, str] = Field(description="column -> the expression it is set to, in the rows that "
                                                   "violate the check")
    key: Seq(ColumnName) = Field(("id",), description="a unique key of the table: originals are kept by it, the "
                                                      "backfill batches by it")

    @model_validator(mode="after")
    def _valid(self) -> "Remediation":
        if not self.set:
            raise ValueError("remediation: set needs at least one column")
        if not self.key:
            raise ValueError("remediation: key needs at least one column")
        overlap = sorted(set(self.set) & set(self.key))
        if overlap:
            raise ValueError(f"remediation cannot change the key column {overlap[0]!r}")
        for text in self.set.values():
            expr(text)
        return self


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
            return _not_null(self.table, self.not_null)
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


def as_json(columns, row: str = "") -> sql.Composable:
    """The named columns of a row as one jsonb object (any key and column type fits)."""
    prefix = sql.SQL(f"{row}." if row else "")
    return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
        sql.SQL("{}, {}{}").format(sql.Literal(c), prefix, ident(c)) for c in columns))


def key_is_unique(table_name: str, key, label: str) -> Check:
    """Rows sharing `key`: originals kept by it would be put back on the wrong rows."""
    keys = sql.SQL(", ").join(ident(c) for c in key)
    return check(f"{label}_key_is_unique", f"rows sharing a key ({', '.join(key)}): originals are kept by it",
                 sql.SQL("SELECT {keys}, count(*) AS rows FROM {t} GROUP BY {keys} HAVING count(*) > 1").format(
                     keys=keys, t=ident(table_name)))


def kept_originals(table_name: str, originals_name: str, fix: Remediation, violating: sql.Composable,
                   label: str, description: str) -> tuple[Part, Backfill]:
    """The originals table (expand; its rollback puts every kept original back, then drops it)
    and the backfill that fixes the `violating` rows in key-range batches, keeping each row's
    originals (the first seen, never overwritten) in the batch's transaction. The caller adds
    key_is_unique to its preconditions."""
    table = ident(table_name)
    originals = ident(_schema_of(table_name) + names.fit(originals_name))
    keys = sql.SQL(", ").join(ident(c) for c in fix.key)
    in_batch = sql.SQL("({}) IN (SELECT {} FROM batch)").format(keys, keys)
    backfill = Backfill(
        name=re.sub(r"[^a-z0-9_]+", "_", label.lower())[:63], table=table_name, key=fix.key,
        description=f"{description}; originals kept in {literal_name(render(originals))}",
        sql=render(sql.SQL(
            "WITH saved AS (INSERT INTO {orig} (key, original) SELECT {key_json}, {original_json} FROM {t} "
            "WHERE {in_batch} AND {violating} ON CONFLICT (key) DO NOTHING) "
            "UPDATE {t} SET {assignments} WHERE {in_batch} AND {violating}").format(
            orig=originals, key_json=as_json(fix.key), original_json=as_json(fix.set), t=table,
            in_batch=in_batch, violating=violating, assignments=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(ident(c), expr(e)) for c, e in fix.set.items()))),
        where=render(violating))
    restore = restore_job(originals_name, _schema_of(table_name) + names.fit(originals_name), sql.SQL(
        "UPDATE {t} SET {assignments} FROM {orig} AS o JOIN batch USING (key) CROSS JOIN LATERAL "
        "jsonb_populate_record(NULL::{t}, o.key || o.original) AS r WHERE ({keys}) = ({r_keys})").format(
        t=table, orig=originals, keys=sql.SQL(", ").join(sql.SQL("{}.{}").format(table, ident(c)) for c in fix.key),
        r_keys=sql.SQL(", ").join(sql.SQL("r.{}").format(ident(c)) for c in fix.key),
        assignments=sql.SQL(", ").join(sql.SQL("{} = r.{}").format(ident(c), ident(c)) for c in fix.set)),
        ("key",), f"the originals kept in {literal_name(render(originals))} put back on {table_name}")
    keep = Part("originals", EXPAND,
                (sql.SQL("CREATE TABLE {} (key jsonb PRIMARY KEY, original jsonb NOT NULL)").format(originals),),
                (sql.SQL("DROP TABLE {}").format(originals),), restore=restore)
    return keep, backfill


def _schema_of(table: str) -> str:
    return table.rsplit(".", 1)[0] + "." if "." in table else ""


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


KINDS = (AddConstraint, DropConstraint)
