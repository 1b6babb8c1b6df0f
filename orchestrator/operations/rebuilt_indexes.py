"""Indexes that move to a new column: built concurrently on it under a temporary name in the expand
phase, renamed to the old names at the contract (alter_column, rename_column, convert_to_enum).
"""

from __future__ import annotations

from psycopg import sql
from pydantic import Field

from ..plan_parts import Check, ColumnName, Seq, _Model
from . import names
from .base import CONTRACT, EXPAND, Part, check
from .column_sql import fits, rename_index
from .sql import ident, in_schema, literal_name


class RebuiltIndex(_Model):
    """An index on the column, built again on the new column (the old one goes with the column)."""

    name: ColumnName
    columns: Seq(ColumnName) = Field(description="the indexed columns, in order (this column by its old name)")
    unique: bool = False


def _build_index(table: str, index: RebuiltIndex, name: str, columns: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("CREATE {}INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
        sql.SQL("UNIQUE " if index.unique else ""), ident(name), ident(table),
        sql.SQL(", ").join(ident(c) for c in columns))


def new_indexes(table: str, column: str, new: str, indexes: tuple[RebuiltIndex, ...]) -> tuple[Part, ...]:
    """Each index built on the new column in the expand phase, concurrently and under a temporary
    name (`_rollout_<name>`, renamed at the contract), so the new application's reads have it
    from the first stage of the flag (the backfill maintains it as it fills the column)."""
    return tuple(Part(f"index_{i.name}", EXPAND,
                      (_build_index(table, i, f"_rollout_{i.name}", tuple(new if c == column else c for c in i.columns)),),
                      (sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(in_schema(table, f"_rollout_{i.name}")),),
                      transactional=False) for i in indexes)


def old_indexes(table: str, indexes: tuple[RebuiltIndex, ...]) -> tuple[Part, ...]:
    """Rollback only: the old column's indexes built again, concurrently, once the rollback of
    the contract has brought the old column back (they go before that part)."""
    return tuple(Part(f"restore_index_{i.name}", CONTRACT, (), (_build_index(table, i, i.name, i.columns),),
                      transactional=False) for i in indexes)


def index_renames(table: str, indexes: tuple[RebuiltIndex, ...], *, back: bool = False) -> tuple[sql.Composable, ...]:
    """The new column's indexes take the old names at the contract (and give them back on rollback)."""
    pairs = ((i.name, f"_rollout_{i.name}") if back else (f"_rollout_{i.name}", i.name) for i in indexes)
    return tuple(rename_index(table, old, new) for old, new in pairs)


def goes_with_the_column(table: str, column: str, indexes: tuple[RebuiltIndex, ...]) -> Check:
    """What PostgreSQL drops with the old column and the operation would not bring back:
    constraints (NOT NULL aside: the operation carries it) and indexes `indexes` does not list;
    and listed indexes that are not on the column."""
    t, c = sql.Literal(literal_name(table)), sql.Literal(column)
    listed = sql.SQL("ARRAY[{}]::name[]").format(sql.SQL(", ").join(sql.Literal(i.name) for i in indexes))
    query = sql.SQL(
        "SELECT 'index ' || x.relname AS goes_with_the_column FROM pg_depend AS d "
        "JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "JOIN pg_class AS x ON x.oid = d.objid "
        "WHERE d.refclassid = 'pg_class'::regclass AND d.classid = 'pg_class'::regclass AND x.relkind = 'i' "
        "AND d.refobjid = to_regclass({t}) AND a.attname = {c} AND x.relname <> ALL ({listed}) "
        "UNION ALL SELECT 'constraint ' || k.conname FROM pg_depend AS d "
        "JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "JOIN pg_constraint AS k ON k.oid = d.objid "
        "WHERE d.refclassid = 'pg_class'::regclass AND d.classid = 'pg_constraint'::regclass AND k.contype <> 'n' "
        "AND d.refobjid = to_regclass({t}) AND a.attname = {c} "
        "UNION ALL SELECT 'listed index ' || n || ' is not an index on the column' FROM unnest({listed}) AS n "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_index AS i JOIN pg_class AS x ON x.oid = i.indexrelid "
        "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
        "WHERE i.indrelid = to_regclass({t}) AND x.relname = n AND a.attname = {c})").format(
        t=t, c=c, listed=listed)
    return check(f"{names.bare(table)}_{column}_keeps_its_dependents",
                 f"indexes and constraints on {literal_name(table)}.{literal_name(column)} that would go with the "
                 "old column: list its indexes in `indexes` to rebuild them; constraints are not moved", query)


def indexes_fit(indexes: tuple[RebuiltIndex, ...]) -> None:
    for index in indexes:
        fits(index.name, "the index name")
        names.fit(f"_rollout_{index.name}")
