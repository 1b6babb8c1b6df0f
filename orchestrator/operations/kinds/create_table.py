"""create_table: a new table in the expand phase.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from ...plan_parts import TableName
from ..base import EXPAND, Compiled, Operation, Part, check
from ..sql import ident, literal_name, regclass
from ..table_definition import TableDefinition, create_statement


class CreateTable(TableDefinition, Operation):
    """A new table, created in the expand phase.

    SQL: `CREATE TABLE t (col type [DEFAULT ..] [NOT NULL] [PRIMARY KEY] [REFERENCES ..], ...,
    UNIQUE (..), CONSTRAINT name CHECK (..))` in one transaction. Locks: none on existing tables,
    except SHARE ROW EXCLUSIVE on each table a foreign key references (reads and row writes go
    on; held only for the instant of the CREATE). Both versions: the old application does not
    know the table; the new one uses it from the expand on. Rollback: `DROP TABLE t` (rollout
    backs the table up first: rows the new application wrote are in that dump). A precondition
    refuses a name that is taken before anything changes."""

    op: Literal["create_table"]
    table: TableName

    def compile(self) -> Compiled:
        taken = sql.SQL("SELECT {0} AS existing WHERE {0} IS NOT NULL").format(regclass(self.table))
        return Compiled(
            (Part("create_table", EXPAND, (create_statement(self.table, self),),
                  (sql.SQL("DROP TABLE {}").format(ident(self.table)),)),),
            preconditions=(check(f"{self.table}_is_new", f"a relation named {literal_name(self.table)} exists "
                                 "already", taken),))
