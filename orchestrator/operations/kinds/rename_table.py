"""rename_table: a rename that leaves a view with the old name, so that both applications work while
the rollout runs.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field

from ...plan_parts import Allowance, ColumnName, TableName
from ..base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from ..sql import ident, literal_name, regclass


class RenameTable(Operation):
    """A table renamed while both applications run, through a view with the old name.

    SQL, expand (one transaction): `ALTER TABLE old RENAME TO new; CREATE VIEW old AS SELECT *
    FROM new`. Locks: ACCESS EXCLUSIVE on the table for the instant of the rename (no scan, no
    rewrite). Both versions: the new application uses the new name; the old one keeps the old
    name, now a simple view in the same schema, which PostgreSQL makes automatically updatable:
    its SELECT, INSERT, UPDATE and DELETE go through to the table (the table's defaults apply,
    RETURNING works), so each sees the other's rows. The view lists the columns the table has at
    the expand; grant the old application's role on the view if it is not the owner (the table's
    grants stay with the table). Contract: `DROP VIEW old`. Rollback: before the contract,
    `DROP VIEW old; ALTER TABLE new RENAME TO old`; after it, the view comes back first.
    squawk's renaming-table rule fires on the rename; this migration answers it (the view is
    the safe pattern that rule asks for), so it is shown as allowed, with the reason."""

    op: Literal["rename_table"]
    table: TableName = Field(description="the table's current name: name or schema.name")
    to: ColumnName = Field(description="its new name, in the same schema")

    def compile(self) -> Compiled:
        schema = self.table.rsplit(".", 1)[0] + "." if "." in self.table else ""
        old, new = ident(self.table), ident(schema + self.to)
        view = sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(old, new)
        drop_view = sql.SQL("DROP VIEW {}").format(old)
        reason = (f"rename_table keeps the old name working: the view {literal_name(self.table)} reads and writes "
                  f"through to {literal_name(schema + self.to)} until the contract drops it")
        taken = sql.SQL("SELECT {0} AS existing WHERE {0} IS NOT NULL").format(regclass(schema + self.to))
        return Compiled(
            (Part("rename_table", EXPAND,
                  (sql.SQL("ALTER TABLE {} RENAME TO {}").format(old, ident(self.to)), view),
                  (drop_view, sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, ident(self.table.split(".")[-1]))),
                  allows=(Allowance(rule="renaming-table", reason=reason),)),
             Part("drop_old_name", CONTRACT, (drop_view,), (view,))),
            preconditions=(check(f"{self.to}_is_free", f"a relation named {literal_name(schema + self.to)} exists "
                                 "already", taken),))
