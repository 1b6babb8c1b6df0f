"""sql: the escape hatch, SQL written by hand inside a step of operations, with its rollback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pglast
from pglast.stream import RawStream
from psycopg import sql
from pydantic import Field, model_validator

from ..analysis.names import quote_ident
from .base import CONTRACT, EXPAND, Compiled, Operation, Part, check


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
    domains, schemas, extensions): each is dropped, in the reverse order, except what belongs to
    a table `up` creates too (its indexes, policies, row-level security). A function `up`
    replaces (CREATE OR REPLACE FUNCTION or PROCEDURE) gets its definition back: right before
    the statement, in the same transaction, `rollout.keep_function` keeps the definition it
    replaces in rollout.replaced_functions (none: the function is new, and the rollback drops
    it), and the rollback's `rollout.put_back_function` restores the latest one kept for that
    signature (replacements are undone last first, as rollbacks run). `down` stays required for
    what may have existed before `up` (IF NOT EXISTS, OR REPLACE of anything but a function,
    row-level security on a table `up` does not create), for a replaced function outside a
    transaction, and for any other statement. `transactional: false` runs the statements one by
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
            if not self.transactional and any(o and o.keep for o in _created(self.up)):
                raise ValueError("down is needed: up replaces a function outside a transaction, where its old "
                                 "definition could not be kept in the same transaction; write down")
            undoable(self.up, "up")
        else:
            statements(self.down, "down")
        return self

    def compile(self) -> Compiled:
        apply, rollback = ((statements(self.up, "up"), statements(self.down, "down")) if self.down is not None
                           else undoable(self.up, "up"))
        part = Part("sql", EXPAND if self.phase == "expand" else CONTRACT, apply, rollback,
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
    drop: sql.Composable | None  # its inverse; None: rollout cannot tell (`why`)
    keep: sql.Composable | None = None  # runs right before the statement: keeps what the inverse puts back
    on: str | None = None  # the table it belongs to (an index, a policy, row-level security): goes with that table
    probe: sql.Composable | None = None  # returns one row naming it when it is absent (or disabled, or invalid)
    table: str | None = None  # the table it is, for a table
    why: str = ""


def _created(text: str) -> list[_Created | None]:
    """What each statement of `up` creates (None: a statement that creates nothing rollout knows)."""
    return [_creates(raw.stmt) for raw in pglast.parse_sql(text)]


def undoable(text: str, what: str) -> tuple[tuple[sql.Composable, ...], tuple[sql.Composable, ...]]:
    """`text`'s statements, each preceded by what keeps the definition it replaces, and the
    statements that undo them, last created first; what belongs to a table `text` creates goes
    with it. A ValueError names the first statement rollout cannot undo."""
    made = _created(text)
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
    what puts the latest kept back (or drops the function): rollout's own functions
    (orchestrator/state.py), so the preview reads the rollback as defining the function again."""
    return (sql.SQL("SELECT rollout.keep_function({})").format(sql.Literal(signature)),
            sql.SQL("SELECT rollout.put_back_function({})").format(sql.Literal(signature)))


def _missing(what: str, name: str) -> sql.Composable:
    return sql.SQL("SELECT {} AS missing WHERE to_regclass({}) IS NULL").format(
        sql.Literal(f"{what} {name}"), sql.Literal(name))


_EXISTED = "IF NOT EXISTS: it may have existed before up, and dropping it would lose it"


def _creates(node) -> _Created | None:
    kind = type(node).__name__
    maybe_old = bool(getattr(node, "if_not_exists", False))
    if kind == "CreateStmt":
        name = _qualified(node.relation)
        return _Created(node.relation.relname, None if maybe_old else sql.SQL("DROP TABLE {}").format(sql.SQL(name)),
                        probe=_missing("table", name), table=None if maybe_old else name, why=_EXISTED)
    if kind == "ViewStmt":
        name = _qualified(node.view)
        return _Created(node.view.relname, None if node.replace else sql.SQL("DROP VIEW {}").format(sql.SQL(name)),
                        probe=_missing("view", name), why="CREATE OR REPLACE: the view it replaces would be lost")
    if kind == "IndexStmt" and node.idxname:
        table = _qualified(node.relation)
        schema = node.relation.schemaname
        name = _text(*((schema,) if schema else ()), node.idxname)  # an index lives in its table's schema
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}" if node.concurrent else "DROP INDEX {}")
        probe = sql.SQL("SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_index WHERE indexrelid = "
                        "to_regclass({}) AND indisvalid)").format(sql.Literal(f"index {name} (absent or invalid)"),
                                                                   sql.Literal(name))
        return _Created(node.idxname, None if maybe_old else drop.format(sql.SQL(name)), on=table, probe=probe,
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
        return _Created(name, drop, keep=keep, probe=sql.SQL(
            "SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_proc WHERE proname = {} AND {})").format(
            sql.Literal(f"function {qualified}"), sql.Literal(name), where))
    if kind == "CreateTrigStmt":
        table = _qualified(node.relation)
        # dropped on its own even with its table: a function it calls goes before the table does
        return _Created(node.trigname, None if node.replace else sql.SQL("DROP TRIGGER {} ON {}").format(
            sql.Identifier(node.trigname), sql.SQL(table)), probe=sql.SQL(
            "SELECT {} AS missing WHERE NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass({}) "
            "AND tgname = {} AND tgenabled <> 'D')").format(
            sql.Literal(f"trigger {node.trigname} on {table} (absent or disabled)"), sql.Literal(table),
            sql.Literal(node.trigname)), why="CREATE OR REPLACE: the trigger it replaces would be lost")
    if kind == "CreatePolicyStmt":
        table = _qualified(node.table)
        return _Created(node.policy_name, sql.SQL("DROP POLICY {} ON {}").format(
            sql.Identifier(node.policy_name), sql.SQL(table)), on=table)
    if kind == "AlterTableStmt" and all(c.subtype.name == "AT_EnableRowSecurity" for c in node.cmds):
        return _Created("row level security", None, on=_qualified(node.relation),
                        why="row-level security on a table up does not create: it may have been on already")
    named = {"CreateEnumStmt": ("TYPE", lambda: [n.sval for n in node.typeName]),
             "CompositeTypeStmt": ("TYPE", lambda: _names(node.typevar)),
             "CreateSeqStmt": ("SEQUENCE", lambda: _names(node.sequence)),
             "CreateDomainStmt": ("DOMAIN", lambda: [n.sval for n in node.domainname])}.get(kind)
    if named is not None:
        parts = named[1]()
        return _Created(parts[-1], None if maybe_old else sql.SQL(f"DROP {named[0]} {{}}").format(
            sql.SQL(_text(*parts))), why=_EXISTED)
    if kind == "CreateSchemaStmt" and node.schemaname and not node.schemaElts:
        return _Created(node.schemaname, None if maybe_old else sql.SQL("DROP SCHEMA {}").format(
            sql.Identifier(node.schemaname)), why=_EXISTED)
    if kind == "CreateExtensionStmt":
        return _Created(node.extname, None if maybe_old else sql.SQL("DROP EXTENSION {}").format(
            sql.Identifier(node.extname)), why=_EXISTED)
    return None


def _names(relation) -> list[str]:
    return [p for p in (relation.schemaname, relation.relname) if p]


def _text(*parts: str) -> str:
    """A name as SQL writes it, each part quoted where PostgreSQL needs it (a dot inside a name stays in it)."""
    return ".".join(quote_ident(part) for part in parts)


def _qualified(relation) -> str:
    return _text(*_names(relation))


KINDS = (Sql,)
