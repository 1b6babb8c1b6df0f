"""sql: the escape hatch, SQL written by hand inside a step of operations, with its rollback."""

from __future__ import annotations

from typing import Literal

import pglast
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
    `down` ('' when there is nothing to undo). `transactional: false` runs the statements one by
    one outside a transaction (for CREATE INDEX CONCURRENTLY and the like: make them idempotent);
    BEGIN, COMMIT and the like are refused when the plan is loaded, with their line, since
    rollout commits each migration with its bookkeeping."""

    op: Literal["sql"]
    up: str = Field(description="the statements to run")
    down: str = Field(description="the statements that undo them, in the order they run ('' for nothing)")
    phase: Literal["expand", "contract"] = "expand"
    transactional: bool = True

    @model_validator(mode="after")
    def _parses(self) -> "Sql":
        if not statements(self.up, "up"):
            raise ValueError("up holds no statement")
        statements(self.down, "down")
        return self

    def compile(self) -> Compiled:
        part = Part("sql", EXPAND if self.phase == "expand" else CONTRACT, statements(self.up, "up"),
                    statements(self.down, "down"), transactional=self.transactional)
        missing = _missing(self.up) if self.phase == "expand" else []
        if not missing:
            return Compiled((part,))
        names = [name for name, _ in missing]
        label = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
        return Compiled((part,), verify=(check(
            f"{label} exist", f"what up creates, present after the expand: {', '.join(names)}",
            sql.SQL(" UNION ALL ").join(query for _, query in missing)),))


def _missing(text: str) -> list[tuple[str, sql.Composable]]:
    """For each table, view, index, function and trigger `up` creates: (its name, a query that
    returns one row naming it when it is absent, or disabled for a trigger)."""
    found = []
    for raw in pglast.parse_sql(text):
        node = raw.stmt
        kind = type(node).__name__
        if kind == "CreateTrigStmt":
            table = _qualified(node.relation)
            what = f"trigger {node.trigname} on {table}"
            found.append((node.trigname, sql.SQL(
                "SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass({}) "
                "AND tgname = {} AND tgenabled <> 'D')").format(
                sql.Literal(what + " (absent or disabled)"), sql.Literal(table), sql.Literal(node.trigname))))
            continue
        if kind == "CreateFunctionStmt":
            *schema, name = [n.sval for n in node.funcname]
            where = (sql.SQL("pronamespace = to_regnamespace({})").format(sql.Literal(literal_name(schema[0])))
                     if schema else sql.SQL("pg_function_is_visible(oid)"))
            found.append((name, sql.SQL("SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_proc WHERE proname = {} "
                                        "AND {})").format(sql.Literal(f"function {name}"), sql.Literal(name), where)))
            continue
        relation = {"CreateStmt": ("table", lambda: node.relation), "ViewStmt": ("view", lambda: node.view),
                    "CreateTableAsStmt": ("table", lambda: node.into.rel)}.get(kind)
        if kind == "IndexStmt" and node.idxname:
            table = _qualified(node.relation)  # an index lives in its table's schema
            noun, name = "index", (table.rsplit(".", 1)[0] + "." if "." in table else "") + literal_name(node.idxname)
        elif relation is not None:
            noun, name = relation[0], _qualified(relation[1]())
        else:
            continue
        found.append((name.rsplit(".", 1)[-1].strip('"'), sql.SQL(
            "SELECT {} AS missing WHERE to_regclass({}) IS NULL").format(sql.Literal(f"{noun} {name}"),
                                                                          sql.Literal(name))))
    return found


def _qualified(relation) -> str:
    """A RangeVar as SQL writes it, quoted where needed."""
    return ".".join(literal_name(p) for p in (relation.schemaname, relation.relname) if p)


KINDS = (Sql,)
