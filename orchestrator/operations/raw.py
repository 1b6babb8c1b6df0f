"""sql: the escape hatch, SQL written by hand inside a step of operations, with its rollback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pglast
from pglast.stream import RawStream
from psycopg import sql
from pydantic import Field, model_validator

from .base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from .sql import literal_name


def statements(text: str, what: str) -> tuple[sql.Composable, ...]:
    """The statements of `text` as PostgreSQL's parser splits them (comments dropped), or a
    ValueError naming `what` and the parser's complaint."""
    try:
        pglast.parse_sql(text)
        split = pglast.split(text, with_parser=True)
    except pglast.parser.ParseError as exc:
        raise ValueError(f"{what} is not SQL PostgreSQL can parse: {exc}") from None
    return tuple(sql.SQL(part) for part in split)  # noqa: S608 - the plan's own SQL, parsed above


class Sql(Operation):
    """SQL written by hand, for what no other operation says: `up` runs as a migration of its
    own in the phase given (expand by default, or contract), `down` is its rollback, statements
    run in the order written.

    SQL: exactly `up` and `down`, split into statements by PostgreSQL's parser (which must read
    both). Locks: whatever the statements take; `rollout plan` shows each one's locks and the
    lint judges them like any migration's (a blocking finding stops apply unless the step allows
    the rule). Both versions: keeping the old application working is up to the SQL. Rollback:
    `down` ('' when there is nothing to undo); without `down`, rollout writes it when `up` only
    creates things (tables, views, indexes, functions, triggers, policies, types, sequences,
    schemas, extensions, row-level security): each is dropped, in the reverse order, except
    what goes with a table `up` creates too. `transactional: false` runs the statements one by
    one outside a transaction (for CREATE INDEX CONCURRENTLY and the like: make them idempotent);
    BEGIN, COMMIT and the like are refused when the plan is loaded, with their line, since
    rollout commits each migration with its bookkeeping. Verification (expand phase): what `up`
    creates exists, and its triggers are enabled."""

    op: Literal["sql"]
    up: str = Field(description="the statements to run")
    down: str | None = Field(None, description="the statements that undo them, in the order they run ('' for "
                                               "nothing); omitted: rollout drops what up creates")
    phase: Literal["expand", "contract"] = "expand"
    transactional: bool = True

    @model_validator(mode="after")
    def _parses(self) -> "Sql":
        if not statements(self.up, "up"):
            raise ValueError("up holds no statement")
        if self.down is None:
            _inverse(self.up)
        else:
            statements(self.down, "down")
        return self

    def compile(self) -> Compiled:
        rollback = statements(self.down, "down") if self.down is not None else _inverse(self.up)
        part = Part("sql", EXPAND if self.phase == "expand" else CONTRACT, statements(self.up, "up"), rollback,
                    transactional=self.transactional)
        probes = [o for o in _created(self.up) if o and o.probe is not None] if self.phase == "expand" else []
        if not probes:
            return Compiled((part,))
        names = [o.label for o in probes]
        label = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
        return Compiled((part,), verify=(check(
            f"{label} exist", f"what up creates, present after the expand: {', '.join(names)}",
            sql.SQL(" UNION ALL ").join(o.probe for o in probes)),))


@dataclass(frozen=True)
class _Created:
    """Something a statement of `up` creates: how to drop it, and how to find it missing."""

    label: str  # its bare name, for the check's name
    on: str | None  # the table it belongs to (an index, a policy): dropped with that table
    drop: sql.Composable  # its inverse
    probe: sql.Composable | None = None  # returns one row naming it when it is absent (or disabled)
    table: str | None = None  # the table it is, for a table


def _created(text: str) -> list[_Created | None]:
    """What each statement of `up` creates (None: a statement rollout does not know how to undo)."""
    return [_creates(raw.stmt) for raw in pglast.parse_sql(text)]


def _inverse(text: str) -> tuple[sql.Composable, ...]:
    """The drops that undo `up`, last created first; what lives on a table `up` creates goes with it."""
    made = _created(text)
    for number, (raw, found) in enumerate(zip(pglast.parse_sql(text), made), 1):
        if found is None:
            raise ValueError(f"down is needed: rollout does not know how to undo statement {number} of up "
                             f"({type(raw.stmt).__name__}); write down")
    tables = {o.table for o in made if o.table}
    return tuple(o.drop for o in reversed(made) if o.on not in tables)


def _missing(what: str, name: str) -> sql.Composable:
    return sql.SQL("SELECT {} AS missing WHERE to_regclass({}) IS NULL").format(
        sql.Literal(f"{what} {name}"), sql.Literal(name))


def _creates(node) -> _Created | None:
    kind = type(node).__name__
    if kind == "CreateStmt":
        name = _qualified(node.relation)
        return _Created(node.relation.relname, None, sql.SQL("DROP TABLE {}").format(sql.SQL(name)),
                        _missing("table", name), table=name)
    if kind == "ViewStmt" and not node.replace:
        name = _qualified(node.view)
        return _Created(node.view.relname, None, sql.SQL("DROP VIEW {}").format(sql.SQL(name)), _missing("view", name))
    if kind == "IndexStmt" and node.idxname:
        table = _qualified(node.relation)
        name = (table.rsplit(".", 1)[0] + "." if "." in table else "") + literal_name(node.idxname)
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}" if node.concurrent else "DROP INDEX {}")
        return _Created(node.idxname, table, drop.format(sql.SQL(name)), _missing("index", name))
    if kind == "CreateFunctionStmt" and not node.replace:
        *schema, name = [n.sval for n in node.funcname]
        qualified = ".".join(literal_name(p) for p in (*schema, name))
        arguments = ", ".join(RawStream()(p.argType) for p in node.parameters or () if p.mode in ("i", "b", "v", "d"))
        where = (sql.SQL("pronamespace = to_regnamespace({})").format(sql.Literal(literal_name(schema[0])))
                 if schema else sql.SQL("pg_function_is_visible(oid)"))
        kind_word = "PROCEDURE" if node.is_procedure else "FUNCTION"
        return _Created(name, None, sql.SQL(f"DROP {kind_word} {{}}({{}})").format(sql.SQL(qualified), sql.SQL(arguments)),
                        sql.SQL("SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_proc WHERE proname = {} "
                                "AND {})").format(sql.Literal(f"function {qualified}"), sql.Literal(name), where))
    if kind == "CreateTrigStmt" and not node.replace:
        table = _qualified(node.relation)
        # dropped on its own even with its table: a function it calls goes before the table does
        return _Created(node.trigname, None, sql.SQL("DROP TRIGGER {} ON {}").format(
            sql.Identifier(node.trigname), sql.SQL(table)), sql.SQL(
            "SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass({}) "
            "AND tgname = {} AND tgenabled <> 'D')").format(
            sql.Literal(f"trigger {node.trigname} on {table} (absent or disabled)"), sql.Literal(table),
            sql.Literal(node.trigname)))
    if kind == "CreatePolicyStmt":
        table = _qualified(node.table)
        return _Created(node.policy_name, table, sql.SQL("DROP POLICY {} ON {}").format(
            sql.Identifier(node.policy_name), sql.SQL(table)))
    if kind == "AlterTableStmt" and all(c.subtype.name == "AT_EnableRowSecurity" for c in node.cmds):
        table = _qualified(node.relation)
        return _Created("row level security", table, sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(
            sql.SQL(table)))
    named = {"CreateEnumStmt": ("TYPE", lambda: node.typeName), "CompositeTypeStmt": ("TYPE", lambda: _names(node.typevar)),
             "CreateSeqStmt": ("SEQUENCE", lambda: _names(node.sequence)),
             "CreateDomainStmt": ("DOMAIN", lambda: node.domainname)}.get(kind)
    if named is not None:
        parts = [n.sval if hasattr(n, "sval") else n for n in named[1]()]
        return _Created(parts[-1], None, sql.SQL(f"DROP {named[0]} {{}}").format(
            sql.SQL(".".join(literal_name(p) for p in parts))))
    if kind == "CreateSchemaStmt":
        return _Created(node.schemaname, None, sql.SQL("DROP SCHEMA {}").format(sql.Identifier(node.schemaname)))
    if kind == "CreateExtensionStmt":
        return _Created(node.extname, None, sql.SQL("DROP EXTENSION {}").format(sql.Identifier(node.extname)))
    return None


def _names(relation) -> list[str]:
    return [p for p in (relation.schemaname, relation.relname) if p]


def _qualified(relation) -> str:
    """A RangeVar as SQL writes it, quoted where needed."""
    return ".".join(literal_name(p) for p in _names(relation))


KINDS = (Sql,)
