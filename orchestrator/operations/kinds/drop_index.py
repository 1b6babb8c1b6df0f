"""drop_index: an index dropped CONCURRENTLY at the contract, built again from its definition on
rollback.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...plan_parts import ColumnName, Seq, TableName
from ..base import CONTRACT, Compiled, Operation, Part
from .create_index import CreateIndex


class DropIndex(Operation):
    """An index dropped without blocking reads, in the contract phase (the old application may
    still rely on it until then). Its definition is needed to rebuild it on rollback."""

    op: Literal["drop_index"]
    name: ColumnName
    table: TableName
    columns: Seq(ColumnName) = Field(description="the indexed columns, to rebuild it on rollback")
    unique: bool = False
    where: str | None = None
    using: Literal["btree", "hash", "gist", "gin", "brin"] = "btree"

    def compile(self) -> Compiled:
        rebuild = CreateIndex(op="create_index", name=self.name, table=self.table, columns=self.columns,
                              unique=self.unique, where=self.where, using=self.using).compile().parts[0]
        return Compiled((Part("drop_index", CONTRACT, rebuild.rollback, rebuild.apply, transactional=False),))
