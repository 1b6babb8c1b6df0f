"""SQL for generated migrations: names quoted by psycopg.sql, operator expressions checked by
PostgreSQL's parser before they are used, and the text a Migration stores."""

from __future__ import annotations

import pglast
from pglast.enums.primnodes import CoercionForm
from psycopg import sql

from ..analysis.names import quote_ident


def ident(name: str) -> sql.Identifier:
    """A table name as the plan writes it (`orders` or `app.orders`), or any other name."""
    return sql.Identifier(*name.split("."))


def in_schema(table: str, name: str) -> sql.Identifier:
    """An object that lives in its table's schema (a function, an index, a kept table)."""
    return ident(f"{table.split('.')[0]}.{name}" if "." in table else name)


def regclass(name: str) -> sql.Composable:
    """`to_regclass('"Name"')`: the relation the plan's name means, or NULL."""
    return sql.SQL("to_regclass({})").format(sql.Literal(render(ident(name))))


def regtype(name: str) -> sql.Composable:
    """`to_regtype('"Name"')`: the type the plan's name means, or NULL."""
    return sql.SQL("to_regtype({})").format(sql.Literal(render(ident(name))))


def expr(text: str) -> sql.SQL:
    """An operator's SQL expression (`using`, `up`, `down`, `check`, `default`), refused unless
    PostgreSQL's parser reads it as exactly one expression: it cannot end the statement it is
    put in or start another."""
    try:  # the newline: a trailing line comment cannot swallow the closing bracket
        statements = pglast.parse_sql(f"SELECT ({text}\n)")
    except pglast.parser.ParseError as exc:
        raise ValueError(f"{text!r} is not an SQL expression: {exc}") from None
    select = statements[0].stmt if len(statements) == 1 else None
    clauses = ("fromClause", "whereClause", "groupClause", "havingClause", "sortClause", "limitCount",
               "limitOffset", "withClause", "lockingClause", "windowClause", "distinctClause", "intoClause")
    target = select.targetList[0] if select is not None and len(getattr(select, "targetList", None) or ()) == 1 else None
    if (target is None or type(select).__name__ != "SelectStmt" or target.name is not None
            or any(getattr(select, c, None) for c in clauses)
            or (type(target.val).__name__ == "RowExpr" and target.val.row_format == CoercionForm.COERCE_IMPLICIT_CAST)):
        raise ValueError(f"{text!r} is not a single SQL expression")
    if any(token.name == "SQL_COMMENT" for token in pglast.parser.scan(text)):
        raise ValueError(f"{text!r} holds a line comment (--), which would hide the SQL written after the "
                         "expression on its line: use /* ... */")
    return sql.SQL(text)  # noqa: S608 - checked above: one expression, nothing more


def type_name(text: str) -> sql.SQL:
    """A type as SQL writes it (`bigint`, `varchar(255)`, `app.mood[]`), checked by the parser."""
    try:
        statements = pglast.parse_sql(f"SELECT NULL::{text}")
    except pglast.parser.ParseError as exc:
        raise ValueError(f"{text!r} is not a type name: {exc}") from None
    if len(statements) != 1 or type(statements[0].stmt.targetList[0].val).__name__ != "TypeCast":
        raise ValueError(f"{text!r} is not a type name")
    return sql.SQL(text)


def render(statement: sql.Composable) -> str:
    return statement.as_string(None)


def literal_name(name: str) -> str:
    """A name as SQL text (quoted where PostgreSQL needs it), for comments and messages."""
    return ".".join(quote_ident(part) for part in name.split("."))


def dollar_quoted(body: sql.Composable) -> sql.Composable:
    """A function body between dollar quotes whose tag the body does not contain."""
    text = render(body)
    tag = next(t for t in (f"$rollout{n or ''}$" for n in range(100)) if t not in text)
    return sql.SQL(f"{tag}\n{text}\n{tag}")
