"""The safe way to write a statement, written out from the operator's own statement.

Each alternative is SQL that PostgreSQL runs as it stands (tests/rules runs every one on a real
server and checks it does not take the lock the finding warned about). Statements that must run
outside a transaction are preceded by the directive their migration needs. Names are quoted by
pglast's printer or quote_ident, never pasted raw."""

from __future__ import annotations

import copy

from pglast import enums, parse_sql
from pglast.stream import RawStream

from ..analysis.names import quote_ident, relation
from .context import Statement

AT = enums.AlterTableType
C = enums.ConstrType
OWN_MIGRATION = "-- in a migration of its own:"
NO_TRANSACTION = "-- in a migration of its own, whose first line is: -- transactional: false"


def _node(statement: Statement):
    try:
        return parse_sql(statement.effect.sql)[0].stmt
    except Exception:  # noqa: BLE001 - no alternative for what pglast cannot read
        return None


def _sql(node) -> str:
    return RawStream()(node) + ";"


def _alter_cmds(statement: Statement, *subtypes):
    node = _node(statement)
    if type(node).__name__ != "AlterTableStmt":
        return None, []
    return node, [cmd for cmd in node.cmds if cmd.subtype in subtypes]


def _single(statement: Statement, subtype):
    """(statement node, its subcommand) of an ALTER TABLE that does exactly one `subtype`."""
    node, cmds = _alter_cmds(statement, subtype)
    if node is None or len(cmds) != 1 or len(node.cmds) != 1:
        return None, None
    return node, cmds[0]


def _constraint_name(table: str, constraint, suffix: str) -> str:
    if constraint.conname:
        return constraint.conname
    columns = [c.sval for c in constraint.fk_attrs or constraint.keys or ()] or ["col"]
    return f"{table.split('.')[-1].strip(chr(34))}_{'_'.join(columns)}_{suffix}"[:63]


def not_valid_then_validate(statement: Statement) -> str | None:
    """ADD CONSTRAINT (CHECK or FOREIGN KEY) NOT VALID, then VALIDATE in a later migration; a
    UNIQUE or PRIMARY KEY through an index built concurrently; a VALIDATE written in the same
    migration moves to its own; ADD COLUMN ... REFERENCES splits into the column and the key."""
    node, cmds = _alter_cmds(statement, AT.AT_AddConstraint, AT.AT_ValidateConstraint, AT.AT_AddColumn)
    if node is None or len(cmds) != len(node.cmds) or len(cmds) != 1:
        return None
    cmd = cmds[0]
    table = relation(node.relation)
    if cmd.subtype == AT.AT_ValidateConstraint:
        return f"{OWN_MIGRATION}\n{_sql(node)}"
    if cmd.subtype == AT.AT_AddColumn:
        return _column_then_key(node, cmd, table)
    constraint = cmd.def_
    if constraint.contype in (C.CONSTR_UNIQUE, C.CONSTR_PRIMARY):
        return _unique_through_index(node, constraint, table)
    if constraint.contype not in (C.CONSTR_CHECK, C.CONSTR_FOREIGN):
        return None
    name = _constraint_name(table, constraint, "check" if constraint.contype == C.CONSTR_CHECK else "fkey")
    added = copy.deepcopy(node)
    added.cmds[0].def_.conname = name
    added.cmds[0].def_.skip_validation, added.cmds[0].def_.initially_valid = True, False
    return (f"{_sql(added)}\n{OWN_MIGRATION} (it scans without blocking reads or writes)\n"
            f"ALTER TABLE {table} VALIDATE CONSTRAINT {quote_ident(name)};")


def _column_then_key(node, cmd, table: str) -> str | None:
    column = copy.deepcopy(cmd.def_)
    references = [c for c in column.constraints or () if c.contype == C.CONSTR_FOREIGN]
    if not references:
        return None
    column.constraints = tuple(c for c in column.constraints if c.contype != C.CONSTR_FOREIGN) or None
    bare = copy.deepcopy(node)
    bare.cmds[0].def_ = column
    key = references[0]
    name = key.conname or f"{node.relation.relname}_{column.colname}_fkey"[:63]
    target = RawStream()(key.pktable) + (" (" + ", ".join(quote_ident(a.sval) for a in key.pk_attrs) + ")"
                                         if key.pk_attrs else "")
    return (f"{_sql(bare)}\nALTER TABLE {table} ADD CONSTRAINT {quote_ident(name)} FOREIGN KEY "
            f"({quote_ident(column.colname)}) REFERENCES {target} NOT VALID;\n"
            f"{OWN_MIGRATION} (it scans without blocking reads or writes)\n"
            f"ALTER TABLE {table} VALIDATE CONSTRAINT {quote_ident(name)};")


def _unique_through_index(node, constraint, table: str) -> str | None:
    if constraint.indexname or not constraint.keys:
        return None
    name = _constraint_name(table, constraint, "key" if constraint.contype == C.CONSTR_UNIQUE else "pkey")
    columns = ", ".join(quote_ident(k.sval) for k in constraint.keys)
    kind = "UNIQUE" if constraint.contype == C.CONSTR_UNIQUE else "PRIMARY KEY"
    return (f"{NO_TRANSACTION}\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(name)} ON {table} "
            f"({columns});\n{OWN_MIGRATION} (a brief lock: the index is already built)\n"
            f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(name)} {kind} USING INDEX {quote_ident(name)};")


def concurrent_index(statement: Statement) -> str | None:
    node = _node(statement)
    if type(node).__name__ == "IndexStmt":
        node.concurrent, node.if_not_exists = True, True
    elif type(node).__name__ == "DropStmt" and node.removeType == enums.ObjectType.OBJECT_INDEX:
        node.concurrent, node.missing_ok = True, True
    else:
        return None
    return f"{NO_TRANSACTION}\n{_sql(node)}"


def not_null_through_check(statement: Statement) -> str | None:
    node, cmd = _single(statement, AT.AT_SetNotNull)
    if node is None:
        return None
    table, column = relation(node.relation), cmd.name
    check = quote_ident(f"{node.relation.relname}_{column}_not_null"[:63])
    return (f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({quote_ident(column)} IS NOT NULL) NOT VALID;\n"
            f"{OWN_MIGRATION} (it scans without blocking reads or writes)\n"
            f"ALTER TABLE {table} VALIDATE CONSTRAINT {check};\n"
            f"{OWN_MIGRATION} (no scan: the validated CHECK proves it)\n"
            f"ALTER TABLE {table} ALTER COLUMN {quote_ident(column)} SET NOT NULL;\n"
            f"ALTER TABLE {table} DROP CONSTRAINT {check};")


def new_column_for_type(statement: Statement) -> str | None:
    node, cmd = _single(statement, AT.AT_AlterColumnType)
    if node is None:
        return None
    table, column = relation(node.relation), cmd.name
    new_type = RawStream()(cmd.def_.typeName)
    using = RawStream()(cmd.def_.raw_default) if cmd.def_.raw_default else f"{quote_ident(column)}::{new_type}"
    shadow = quote_ident(f"{column}_new"[:63])
    return (f"-- expand: a new column beside the old one (no rewrite)\n"
            f"ALTER TABLE {table} ADD COLUMN {shadow} {new_type};\n"
            f"-- fill it with a backfill on the step (batches that commit as they go), setting {shadow} = {using}, "
            "and keep it in step with a trigger while the old application writes;\n"
            f"-- contract (finalize), once readers use the new column:\n"
            f"ALTER TABLE {table} DROP COLUMN {quote_ident(column)};\n"
            f"ALTER TABLE {table} RENAME COLUMN {shadow} TO {quote_ident(column)};")


def default_after_column(statement: Statement) -> str | None:
    node, cmd = _single(statement, AT.AT_AddColumn)
    if node is None:
        return None
    column = copy.deepcopy(cmd.def_)
    defaults = [c for c in column.constraints or () if c.contype == C.CONSTR_DEFAULT]
    if not defaults or any(c.contype in (C.CONSTR_NOTNULL, C.CONSTR_PRIMARY) for c in column.constraints):
        return None
    column.constraints = tuple(c for c in column.constraints if c.contype != C.CONSTR_DEFAULT) or None
    bare = copy.deepcopy(node)
    bare.cmds[0].def_ = column
    table = relation(node.relation)
    return (f"{_sql(bare)}\nALTER TABLE {table} ALTER COLUMN {quote_ident(column.colname)} SET DEFAULT "
            f"{RawStream()(defaults[0].raw_expr)};\n"
            f"-- then fill the existing rows with a backfill on the step (batches that commit as they go)")


def view_for_old_name(statement: Statement) -> str | None:
    node = _node(statement)
    if type(node).__name__ != "RenameStmt" or node.renameType != enums.ObjectType.OBJECT_TABLE:
        return None
    old = relation(node.relation)
    new = (quote_ident(node.relation.schemaname) + "." if node.relation.schemaname else "") + quote_ident(node.newname)
    return (f"{_sql(node)}\n-- the old name keeps working for the old application (a simple view is updatable):\n"
            f"CREATE VIEW {old} AS SELECT * FROM {new};\n"
            f"-- contract (finalize), once nothing uses the old name:\nDROP VIEW {old};")


ALTERNATIVES = {
    "constraint-missing-not-valid": not_valid_then_validate,
    "adding-foreign-key-constraint": not_valid_then_validate,
    "disallowed-unique-constraint": not_valid_then_validate,
    "require-concurrent-index-creation": concurrent_index,
    "require-concurrent-index-deletion": concurrent_index,
    "adding-not-nullable-field": not_null_through_check,
    "changing-column-type": new_column_for_type,
    "adding-field-with-default": default_after_column,
    "renaming-table": view_for_old_name,
}
