"""Constraints as the kinds that add them write them (add_constraint, the column kinds, table
definitions): NOT NULL through a validated CHECK (so SET NOT NULL does not scan), a foreign key's
reference, and a remediation's originals kept for an exact rollback.
"""

from __future__ import annotations

import re
from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ..plan_parts import Backfill, Check, ColumnName, Seq, TableName, _Model
from . import names
from .base import EXPAND, Compiled, Part, check
from .restores import restore_job
from .sql import expr, ident, literal_name, render


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
    originals = ident(schema_of(table_name) + names.fit(originals_name))
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
    restore = restore_job(originals_name, schema_of(table_name) + names.fit(originals_name), sql.SQL(
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


def schema_of(table: str) -> str:
    return table.rsplit(".", 1)[0] + "." if "." in table else ""


def set_not_null(table_name: str, column: str) -> Compiled:
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


class Reference(_Model):
    """A column's foreign key: the referenced table and column."""

    table: TableName
    column: ColumnName
    on_delete: Literal["no action", "restrict", "cascade", "set null", "set default"] = "no action"
