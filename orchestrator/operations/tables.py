"""create_table, drop_table and rename_table: a new table in the expand phase, an old one kept
until the contract (the old application may still use it), and a rename that leaves a view
with the old name so that both applications work while the rollout runs."""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ..plan_parts import Allowance, ColumnName, Seq, TableName, _Model
from .base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from .sql import expr, ident, literal_name, render, type_name

# serial types are shorthands, not types: the column they make has the integer type
_SERIAL = {"smallserial": "smallint", "serial2": "smallint", "serial": "integer", "serial4": "integer",
           "bigserial": "bigint", "serial8": "bigint"}


class Reference(_Model):
    """A column's foreign key: the referenced table and column."""

    table: TableName
    column: ColumnName
    on_delete: Literal["no action", "restrict", "cascade", "set null", "set default"] = "no action"


class Column(_Model):
    name: ColumnName
    type: str = Field(description="the type as SQL writes it: bigint, text, varchar(64), timestamptz, app.mood")
    default: str | None = Field(None, description="an SQL expression")
    not_null: bool = False
    primary_key: bool = False
    references: Reference | None = None

    @model_validator(mode="after")
    def _sql_parses(self) -> "Column":
        type_name(self.type)
        if self.default is not None:
            expr(self.default)
        return self


class TableDefinition(_Model):
    """A table's columns, unique column groups and named checks."""

    columns: Seq(Column) = Field(description="the columns, in order")
    unique: Seq(Seq(ColumnName)) = Field((), description="groups of columns that are unique together")
    checks: dict[ColumnName, str] = Field(default_factory=dict, description="constraint name -> CHECK expression")

    @model_validator(mode="after")
    def _consistent(self) -> "TableDefinition":
        _validate_definition(self)
        return self


def _validate_definition(definition) -> None:
    names = [c.name for c in definition.columns]
    if not names:
        raise ValueError("a table needs at least one column")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"column {repeated[0]!r} is listed twice")
    for group in definition.unique:
        unknown = [c for c in group if c not in names]
        if not group or unknown:
            raise ValueError(f"unique {list(group)}: {'no such column ' + repr(unknown[0]) if unknown else 'empty'}")
    for expression in definition.checks.values():
        expr(expression)


def create_statement(table: str, definition) -> sql.Composable:
    """CREATE TABLE from a definition, written so PostgreSQL names its constraints the way it
    names those of a table created by hand (t_pkey, t_a_b_key, t_col_fkey)."""
    keys = [c.name for c in definition.columns if c.primary_key]
    items = []
    for column in definition.columns:
        parts = [sql.SQL("{} {}").format(ident(column.name), type_name(column.type))]
        if column.default is not None:
            parts.append(sql.SQL("DEFAULT {}").format(expr(column.default)))
        if column.not_null:
            parts.append(sql.SQL("NOT NULL"))
        if column.primary_key and len(keys) == 1:
            parts.append(sql.SQL("PRIMARY KEY"))
        if column.references is not None:
            ref = column.references
            parts.append(sql.SQL("REFERENCES {} ({}) ON DELETE {}").format(
                ident(ref.table), ident(ref.column), sql.SQL(ref.on_delete.upper())))
        items.append(sql.SQL(" ").join(parts))
    if len(keys) > 1:
        items.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(ident, keys))))
    for group in definition.unique:
        items.append(sql.SQL("UNIQUE ({})").format(sql.SQL(", ").join(map(ident, group))))
    for name, expression in definition.checks.items():
        items.append(sql.SQL("CONSTRAINT {} CHECK ({})").format(ident(name), expr(expression)))
    return sql.SQL("CREATE TABLE {} ({})").format(ident(table), sql.SQL(", ").join(items))


def _regclass(name: str) -> sql.Composable:
    """`to_regclass('"Name"')`: the relation the plan's name means, or NULL."""
    return sql.SQL("to_regclass({})").format(sql.Literal(render(ident(name))))


class CreateTable(Operation):
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
    columns: Seq(Column) = Field(description="the columns, in order")
    unique: Seq(Seq(ColumnName)) = Field((), description="groups of columns that are unique together")
    checks: dict[ColumnName, str] = Field(default_factory=dict, description="constraint name -> CHECK expression")

    @model_validator(mode="after")
    def _consistent(self) -> "CreateTable":
        _validate_definition(self)
        return self

    def compile(self) -> Compiled:
        taken = sql.SQL("SELECT {0} AS existing WHERE {0} IS NOT NULL").format(_regclass(self.table))
        return Compiled(
            (Part("create_table", EXPAND, (create_statement(self.table, self),),
                  (sql.SQL("DROP TABLE {}").format(ident(self.table)),)),),
            preconditions=(check(f"{self.table}_is_new", f"a relation named {literal_name(self.table)} exists "
                                 "already", taken),))


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
            sql.SQL("({}, {}, {})").format(sql.Literal(c.name), sql.Literal(_SERIAL.get(c.type.lower(), c.type)),
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
            want=wanted, rel=_regclass(self.table), table=sql.Literal(self.table))
        return Compiled(
            (Part("drop_table", CONTRACT, (sql.SQL("DROP TABLE {}").format(ident(self.table)),),
                  (create_statement(self.table, self.definition),)),),
            preconditions=(check(f"{self.table}_matches_definition",
                                 f"columns where {literal_name(self.table)} and the definition the rollback would "
                                 "recreate it from differ", differs),))


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
        taken = sql.SQL("SELECT {0} AS existing WHERE {0} IS NOT NULL").format(_regclass(schema + self.to))
        return Compiled(
            (Part("rename_table", EXPAND,
                  (sql.SQL("ALTER TABLE {} RENAME TO {}").format(old, ident(self.to)), view),
                  (drop_view, sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, ident(self.table.split(".")[-1]))),
                  allows=(Allowance(rule="renaming-table", reason=reason),)),
             Part("drop_old_name", CONTRACT, (drop_view,), (view,))),
            preconditions=(check(f"{self.to}_is_free", f"a relation named {literal_name(schema + self.to)} exists "
                                 "already", taken),))


KINDS = (CreateTable, DropTable, RenameTable)
