"""drop_table: an old table kept until the contract (the old application may still use it).
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import TableName
from ..base import CONTRACT, Compiled, Operation, Part, check
from ..sql import ident, literal_name, regclass
from ..table_definition import SERIAL_TYPES, TableDefinition, create_statement


class DropTable(Operation):
    """A table dropped in the contract phase: until then the old application may still use it.

    SQL: `DROP TABLE t` (no CASCADE: a view or foreign key that still needs the table makes the
    contract fail, and the lint reports it first). Locks: ACCESS EXCLUSIVE on t, and on the
    tables its foreign keys reference, for the instant of the drop. rollout writes a pg_dump of
    t to .rollout/backups/<env>/ before the statement (it loses data). Rollback: before the
    contract nothing was dropped; after it, `CREATE TABLE t (...)` from `definition`, empty:
    PostgreSQL cannot bring rows back, so restore them from that dump with
    `pg_restore --data-only --table t --dbname ... <dump>`. A precondition compares `definition`
    with the live table (columns, their types, NOT NULL) so that the rollback recreates the same
    shape."""

    op: Literal["drop_table"]
    table: TableName
    definition: TableDefinition = Field(description=(
        "the table as create_table lists it (columns, unique, checks): the rollback after the contract "
        "recreates it from this, empty; its rows come back from rollout's pg_dump with pg_restore --data-only"))

    @model_validator(mode="before")
    @classmethod
    def _needs_definition(cls, data):
        if isinstance(data, dict) and "definition" not in data:
            raise ValueError(
                "drop_table needs 'definition' (its columns, as create_table lists them, and any unique groups "
                "and checks): after the contract, rollback can only recreate the table from it. The rows are not "
                "recreated: rollout dumps the table with pg_dump to .rollout/backups/<env>/ before dropping it; "
                "restore them with pg_restore --data-only --table <table> --dbname <database> <dump>")
        return data

    def compile(self) -> Compiled:
        wanted = sql.SQL(", ").join(
            sql.SQL("({}, {}, {})").format(sql.Literal(c.name), sql.Literal(SERIAL_TYPES.get(c.type.lower(), c.type)),
                                           sql.Literal(c.not_null or c.primary_key))
            for c in self.definition.columns)
        differs = sql.SQL(
            "WITH want (name, type, not_null) AS (VALUES {want}), "
            "have AS (SELECT a.attname::text AS name, a.atttypid, a.attnotnull FROM pg_attribute AS a "
            "WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped) "
            "SELECT coalesce(w.name, h.name) AS column_name, w.type AS in_definition, "
            "format_type(h.atttypid, NULL) AS in_database, w.not_null AS not_null_in_definition, "
            "h.attnotnull AS not_null_in_database "
            "FROM want AS w FULL JOIN have AS h ON h.name = w.name "
            "WHERE w.name IS NULL OR h.name IS NULL OR to_regtype(w.type) IS DISTINCT FROM h.atttypid "
            "OR w.not_null <> h.attnotnull "
            "UNION ALL SELECT {table}, 'the table', 'missing', NULL, NULL WHERE {rel} IS NULL").format(
            want=wanted, rel=regclass(self.table), table=sql.Literal(self.table))
        return Compiled(
            (Part("drop_table", CONTRACT, (sql.SQL("DROP TABLE {}").format(ident(self.table)),),
                  (create_statement(self.table, self.definition),)),),
            preconditions=(check(f"{self.table}_matches_definition",
                                 f"columns where {literal_name(self.table)} and the definition the rollback would "
                                 "recreate it from differ", differs),))
