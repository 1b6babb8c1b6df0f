"""Hand-written SQL split into statements, and the undo rollout can write for what it creates
(the sql kind, convert_to_enum's swap_sql).
"""

from __future__ import annotations

from dataclasses import dataclass

import pglast
from pglast.stream import RawStream
from psycopg import sql

from ..analysis.names import quote_ident


def statements(text: str, what: str) -> tuple[sql.Composable, ...]:
    """The statements of `text` as PostgreSQL's parser splits them (comments dropped), or a
    ValueError naming `what` and the parser's complaint."""
    try:
        pglast.parse_sql(text)
        split = pglast.split(text, with_parser=True)
    except pglast.parser.ParseError as exc:
        raise ValueError(f"{what} is not SQL PostgreSQL can parse: {exc}") from None
    return tuple(sql.SQL(part) for part in split)  # noqa: S608 - the plan's own SQL, parsed above


@dataclass(frozen=True)
class Created:
    """Something a statement of `up` creates: how to drop it, and how to find it missing."""

    label: str  # its bare name, for the check's name
    drop: sql.Composable | None  # its inverse; None: rollout cannot tell (`why`)
    keep: sql.Composable | None = None  # runs right before the statement: keeps what the inverse puts back
    on: str | None = None  # the table it belongs to (an index, a policy, row-level security): goes with that table
    probe: sql.Composable | None = None  # returns one row naming it when it is absent (or disabled, or invalid)
    table: str | None = None  # the table it is, for a table
    why: str = ""


def created(text: str) -> list[Created | None]:
    """What each statement of `up` creates (None: a statement that creates nothing rollout knows)."""
    return [_creates(raw.stmt) for raw in pglast.parse_sql(text)]


def undoable(text: str, what: str) -> tuple[tuple[sql.Composable, ...], tuple[sql.Composable, ...]]:
    """`text`'s statements, each preceded by what keeps the definition it replaces, and the
    statements that undo them, last created first; what belongs to a table `text` creates goes
    with it. A ValueError names the first statement rollout cannot undo."""
    made = created(text)
    tables = {o.table for o in made if o and o.table}
    apply, undo = [], []
    for number, (raw, found, statement) in enumerate(zip(pglast.parse_sql(text), made, statements(text, what)), 1):
        if found is not None and found.keep is not None:
            apply.append(found.keep)
        apply.append(statement)
        if found is not None and found.on in tables:
            continue
        if found is None or found.drop is None:
            why = found.why if found is not None else "rollout does not know how to undo it"
            raise ValueError(f"down is needed: statement {number} of {what} ({type(raw.stmt).__name__}): {why}; "
                             "write down")
        undo.append(found.drop)
    return tuple(apply), tuple(reversed(undo))


def _replaced(signature: str) -> tuple[sql.Composable, sql.Composable]:
    """What keeps a function's definition right before CREATE OR REPLACE (none: it is new), and
    what puts it back (or drops the function): rollout's own functions (orchestrator/state.py),
    which key what they keep by the migration running (the runner sets `rollout.migration`), so
    the preview reads the rollback as defining the function again."""
    return (sql.SQL("SELECT rollout.keep_function({})").format(sql.Literal(signature)),
            sql.SQL("SELECT rollout.put_back_function({})").format(sql.Literal(signature)))


def _missing(what: str, name: str) -> sql.Composable:
    return sql.SQL("SELECT {} AS missing WHERE to_regclass({}) IS NULL").format(
        sql.Literal(f"{what} {name}"), sql.Literal(name))


_EXISTED = "IF NOT EXISTS: it may have existed before up, and dropping it would lose it"


def _creates(node) -> Created | None:
    kind = type(node).__name__
    maybe_old = bool(getattr(node, "if_not_exists", False))
    if kind == "CreateStmt":
        name = _qualified(node.relation)
        return Created(node.relation.relname, None if maybe_old else sql.SQL("DROP TABLE {}").format(sql.SQL(name)),
                       probe=_missing("table", name), table=None if maybe_old else name, why=_EXISTED)
    if kind == "ViewStmt":
        name = _qualified(node.view)
        return Created(node.view.relname, None if node.replace else sql.SQL("DROP VIEW {}").format(sql.SQL(name)),
                       probe=_missing("view", name), why="CREATE OR REPLACE: the view it replaces would be lost")
    if kind == "IndexStmt" and node.idxname:
        table = _qualified(node.relation)
        schema = node.relation.schemaname
        name = _text(*((schema,) if schema else ()), node.idxname)  # an index lives in its table's schema
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}" if node.concurrent else "DROP INDEX {}")
        probe = sql.SQL("SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_index WHERE indexrelid = "
                        "to_regclass({}) AND indisvalid)").format(sql.Literal(f"index {name} (absent or invalid)"),
                                                                  sql.Literal(name))
        return Created(node.idxname, None if maybe_old else drop.format(sql.SQL(name)), on=table, probe=probe,
                       why=_EXISTED)
    if kind == "CreateFunctionStmt":
        *schema, name = [n.sval for n in node.funcname]
        qualified = _text(*schema, name)
        arguments = ", ".join(RawStream()(p.argType) for p in node.parameters or () if p.mode in ("i", "b", "v", "d"))
        where = (sql.SQL("pronamespace = to_regnamespace({})").format(sql.Literal(_text(schema[0])))
                 if schema else sql.SQL("pg_function_is_visible(oid)"))
        kind_word = "PROCEDURE" if node.is_procedure else "FUNCTION"
        signature = f"{qualified}({arguments})"
        keep, drop = _replaced(signature) if node.replace else (None, sql.SQL(f"DROP {kind_word} {signature}"))
        why = ""
        if node.replace and any(p.argType.pct_type for p in node.parameters or ()):  # to_regprocedure reads type names
            keep, drop = None, None
            why = ("an argument's type is written with %TYPE: write the type itself (bigint, text) so rollout can "
                   "find the function it replaces")
        return Created(name, drop, keep=keep, why=why, probe=sql.SQL(
            "SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_proc WHERE proname = {} AND {})").format(
            sql.Literal(f"function {qualified}"), sql.Literal(name), where))
    if kind == "CreateTrigStmt":
        table = _qualified(node.relation)
        # dropped on its own even with its table: a function it calls goes before the table does
        return Created(node.trigname, None if node.replace else sql.SQL("DROP TRIGGER {} ON {}").format(
            sql.Identifier(node.trigname), sql.SQL(table)), probe=sql.SQL(
            "SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass({}) "
            "AND tgname = {} AND tgenabled <> 'D')").format(
            sql.Literal(f"trigger {node.trigname} on {table} (absent or disabled)"), sql.Literal(table),
            sql.Literal(node.trigname)), why="CREATE OR REPLACE: the trigger it replaces would be lost")
    if kind == "CreatePolicyStmt":
        table = _qualified(node.table)
        return Created(node.policy_name, sql.SQL("DROP POLICY {} ON {}").format(
            sql.Identifier(node.policy_name), sql.SQL(table)), on=table)
    if kind == "AlterTableStmt" and all(c.subtype.name == "AT_EnableRowSecurity" for c in node.cmds):
        return Created("row level security", None, on=_qualified(node.relation),
                       why="row-level security on a table up does not create: it may have been on already")
    named = {"CreateEnumStmt": ("TYPE", lambda: [n.sval for n in node.typeName]),
             "CompositeTypeStmt": ("TYPE", lambda: _names(node.typevar)),
             "CreateSeqStmt": ("SEQUENCE", lambda: _names(node.sequence)),
             "CreateDomainStmt": ("DOMAIN", lambda: [n.sval for n in node.domainname])}.get(kind)
    if named is not None:
        parts = named[1]()
        return Created(parts[-1], None if maybe_old else sql.SQL(f"DROP {named[0]} {{}}").format(
            sql.SQL(_text(*parts))), why=_EXISTED)
    if kind == "CreateSchemaStmt" and node.schemaname and not node.schemaElts:
        return Created(node.schemaname, None if maybe_old else sql.SQL("DROP SCHEMA {}").format(
            sql.Identifier(node.schemaname)), why=_EXISTED)
    if kind == "CreateExtensionStmt":
        return Created(node.extname, None if maybe_old else sql.SQL("DROP EXTENSION {}").format(
            sql.Identifier(node.extname)), why=_EXISTED)
    return None


def _names(relation) -> list[str]:
    return [p for p in (relation.schemaname, relation.relname) if p]


def _text(*parts: str) -> str:
    """A name as SQL writes it, each part quoted where PostgreSQL needs it (a dot inside a name stays in it)."""
    return ".".join(quote_ident(part) for part in parts)


def _qualified(relation) -> str:
    return _text(*_names(relation))
