"""The static facts of each kind of statement: one registry from pglast's node type to a small
function that reads the statement and returns its Effect.

The locks are PostgreSQL's (AlterTableGetLockLevel in tablecmds.c, each command's page, and
tests/analysis/truth.json, measured on real servers). What a statement does to relations it
does not name (partitions, views' tables, foreign keys' other side, dependents of a CASCADE)
is asked of the catalog: `expand` lists those questions and catalog.py answers them.
A statement not in the registry gets ACCESS EXCLUSIVE on every relation it names, marked
`assumed`: a preview that guesses must guess on the side of caution.
"""

from __future__ import annotations

from dataclasses import replace

from pglast import ast, enums, parse_plpgsql, parse_sql
from pglast.stream import RawStream
from pglast.visitors import Visitor

from . import alter_table
from .effect import Effect, RelationLock
from .expand import Expand
from .lockmode import Lock
from .names import from_list, relation

OBJ = enums.ObjectType
_A, _RS, _RE, _SUE, _S, _SRE, _E, _AE = Lock

RELATION_OBJECTS = {OBJ.OBJECT_TABLE, OBJ.OBJECT_VIEW, OBJ.OBJECT_MATVIEW, OBJ.OBJECT_INDEX, OBJ.OBJECT_SEQUENCE,
                    OBJ.OBJECT_FOREIGN_TABLE}
# Objects that belong to one table and are named (schema.)table.name.
TABLE_OBJECTS = {OBJ.OBJECT_TRIGGER, OBJ.OBJECT_POLICY, OBJ.OBJECT_RULE, OBJ.OBJECT_TABCONSTRAINT}


def analyze_node(node, text: str) -> Effect:
    handler = _HANDLERS.get(type(node).__name__)
    if handler is None:
        return unknown(node, text)
    return handler(node, text)


def unknown(node, text: str) -> Effect:
    kind = type(node).__name__.removesuffix("Stmt")
    named = _range_vars(node)
    return Effect(text, kind, locks=tuple(RelationLock(r, _AE) for r in named), assumed=True,
                  notes=("not in rollout's table of statements: ACCESS EXCLUSIVE is assumed on every relation it "
                         "names; check it before relying on it",))


class _Relations(Visitor):
    """Every RangeVar under a node, minus references to the statement's own CTEs."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, bool, str | None]] = []  # (name, inh, the bare name when unqualified)
        self.ctes: set[str] = set()

    def visit_CommonTableExpr(self, ancestors, node):
        self.ctes.add(node.ctename)

    def visit_RangeVar(self, ancestors, node):
        self.found.append((relation(node), bool(node.inh), node.schemaname is None and node.relname))


def _range_vars(node, *, skip: tuple = ()) -> list[str]:
    visitor = _Relations()
    visitor(node)
    names = []
    for name, _, bare in visitor.found:
        if (bare and bare in visitor.ctes) or name in skip or name in names:
            continue
        names.append(name)
    return names


def _aliases(node) -> dict[str, str]:
    """alias -> relation, for the relations a query names with an alias (FOR UPDATE OF o)."""
    found = {}

    class Aliases(Visitor):
        def visit_RangeVar(self, ancestors, rv):
            if rv.alias is not None:
                found[rv.alias.aliasname] = relation(rv)

    Aliases()(node)
    return found


def _reads(node, *, skip: tuple = (), lock: Lock = _A) -> list[RelationLock]:
    """ACCESS SHARE (or `lock`) on every relation a query reads, and what the catalog adds:
    the tables behind views, and partitions."""
    return [RelationLock(name, lock, "read") for name in _range_vars(node, skip=skip)]


def _read_expansions(locks: list[RelationLock]) -> tuple[Expand, ...]:
    return tuple(e for r in locks for e in (Expand("view_tables", r.relation, r.lock),
                                            Expand("children", r.relation, r.lock)))


def sequence_calls(node, lock: Lock = _RE) -> tuple[list[RelationLock], list[Expand]]:
    """nextval('s') and setval('s', ...) lock the sequence they name (ROW EXCLUSIVE when they
    run; ACCESS SHARE when a DDL statement only records them in a default);
    setval(pg_get_serial_sequence('t', 'c'), ...) asks the catalog for the sequence."""
    found, asked = [], []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors, call):
            name = call.funcname[-1].sval.lower()
            args = call.args or ()
            if name not in ("nextval", "setval", "currval") or not args:
                return
            first = args[0]
            while type(first).__name__ == "TypeCast":
                first = first.arg
            if type(first).__name__ == "A_Const" and getattr(first.val, "sval", None):
                found.append(RelationLock(first.val.sval, lock, f"{name}()"))
            elif type(first).__name__ == "FuncCall" and first.funcname[-1].sval == "pg_get_serial_sequence":
                names = [getattr(a.val, "sval", None) for a in first.args or () if type(a).__name__ == "A_Const"]
                if len(names) == 2 and all(names):
                    asked.append(Expand("serial_sequence", names[0], lock, (names[1],)))

    Calls()(node)
    return found, asked


def _calls(node) -> tuple[Expand, ...]:
    """Functions the statement calls by name: the catalog reads the bodies of the user's own."""
    names: list[str] = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors, call):
            names.append(from_list(call.funcname))

    Calls()(node)
    return tuple(Expand("calls", name, _A) for name in dict.fromkeys(names))


# --- DML and queries ---------------------------------------------------------------------

def _put_back(node) -> str | None:
    """The function `SELECT rollout.put_back_function('f(args)')` defines again (the rollback of a
    replacement the plan's `sql` operation made: orchestrator/operations/raw_sql.py), else None.
    It defines it again as it was, or, when a later step's replacement is in place, leaves that
    one: either way the function stays what a step applied made it."""
    targets = node.targetList or ()
    if node.fromClause or len(targets) != 1 or type(targets[0].val).__name__ != "FuncCall":
        return None
    call = targets[0].val
    if from_list(call.funcname) != "rollout.put_back_function" or len(call.args or ()) != 1:
        return None
    signature = getattr(getattr(call.args[0], "val", None), "sval", None)
    try:
        return from_list(parse_sql(f"DROP ROUTINE {signature}")[0].stmt.objects[0].objname) if signature else None
    except Exception:  # noqa: BLE001 - not a signature: an ordinary SELECT
        return None


def _select(node, text: str) -> Effect:
    if node.intoClause is not None:
        return _create_table_as(node, text)
    put_back = _put_back(node)
    if put_back is not None:
        return Effect(text, "PUT BACK FUNCTION", functions_defined=(put_back,))
    locking = node.lockingClause or ()
    aliases = _aliases(node)
    named = {aliases.get(relation(r), relation(r)) for clause in locking for r in clause.lockedRels or ()}
    reads = [RelationLock(r.relation, _RS if locking and (not named or r.relation in named) else _A, r.why)
             for r in _reads(node)]
    sequences, asked = sequence_calls(node)
    return _with_modifying_ctes(
        Effect(text, "SELECT" + (" FOR UPDATE/SHARE" if locking else ""), locks=tuple(reads + sequences),
               row_locks=bool(locking), planned=True, expand=_read_expansions(reads) + tuple(asked) + _calls(node)), node)


def _merge_actions(node) -> dict[str, tuple[str, ...] | None]:
    """What a MERGE does, by event: the columns its UPDATE actions set and its INSERT actions
    give (None: every column), and whether it deletes."""
    done: dict[str, tuple[str, ...] | None] = {}
    for clause in node.mergeWhenClauses or ():
        event = {enums.CmdType.CMD_UPDATE: "UPDATE", enums.CmdType.CMD_INSERT: "INSERT",
                 enums.CmdType.CMD_DELETE: "DELETE"}.get(clause.commandType)
        if event is None:
            continue
        columns = tuple(t.name for t in clause.targetList or () if t.name) or None
        if event in done and (done[event] is None or columns is None):
            done[event] = None
        else:
            done[event] = tuple(dict.fromkeys((*(done.get(event) or ()), *(columns or ())))) or None
    return done


def _writes(kind: str, node) -> dict[str, tuple[str, ...] | None]:
    """Each event the statement performs, with the columns it sets (UPDATE) or gives (INSERT)."""
    if kind == "MERGE":
        return _merge_actions(node)
    if kind == "UPDATE":
        return {"UPDATE": tuple(t.name for t in node.targetList or () if t.name)}
    if kind == "INSERT":
        update = node.onConflictClause.targetList if node.onConflictClause is not None else None
        given = tuple(c.name for c in node.cols or ()) or None
        return {"INSERT": given, **({"UPDATE": tuple(t.name for t in update if t.name)} if update else {})}
    return {"DELETE": None}


def _dml(kind: str):
    def handler(node, text: str) -> Effect:
        target = relation(node.relation)
        where = getattr(node, "whereClause", None)
        changes_rows = kind in ("UPDATE", "DELETE", "MERGE")
        reads = _reads(node, skip=(target,))
        sequences, asked = sequence_calls(node)
        writes = _writes(kind, node)
        columns = writes.get("UPDATE") or () if kind == "UPDATE" else ()
        expand = [*((Expand("partitions" if kind == "INSERT" else "children", target, _RE),) if node.relation.inh else ()),
                  Expand("view_tables", target, _RE, tuple(writes)),
                  Expand("triggers", target, _RE, tuple(writes), set_columns=writes.get("UPDATE")),
                  Expand("rules", target, _RE, tuple(writes)), *_read_expansions(reads), *asked, *_calls(node)]
        if "INSERT" in writes:  # keys on the columns it gives or defaults (a column left NULL is not checked)
            expand += [Expand("foreign_keys_out_inserted", target, _RS, writes["INSERT"]),
                       Expand("column_sequences", target, _RE, writes["INSERT"])]
        if "UPDATE" in writes:
            expand += [Expand("foreign_keys_out_moving", target, _RS, writes["UPDATE"]),
                       Expand("foreign_keys_in_update", target, _RS, writes["UPDATE"])]
        if "DELETE" in writes:
            expand.append(Expand("foreign_keys_in_delete", target, _RS))
        conflict = getattr(node, "onConflictClause", None)
        if conflict is not None and conflict.infer is not None and conflict.infer.conname:
            expand.append(Expand("sibling_index", target, _RE, (conflict.infer.conname,)))
        if kind in ("INSERT", "UPDATE"):  # a row written to a partition is checked against its ancestors' bounds
            expand.append(Expand("ancestors", target, _A))
        unbounded = changes_rows and kind != "MERGE" and where is None
        notes = ("changes every row in one transaction: a backfill batches this",) if unbounded else ()
        effect = Effect(text, kind, locks=(RelationLock(target, _RE), *reads, *sequences), row_locks=changes_rows,
                        inserted=_constant_rows(node) if kind == "INSERT" else None,
                        on_conflict=_arbiter(conflict) if kind == "INSERT" and conflict is not None else None,
                        changes_rows=changes_rows, unbounded=unbounded, scans=unbounded, columns=columns,
                        expand=tuple(expand), notes=notes, planned=kind in ("UPDATE", "DELETE"))
        return _with_modifying_ctes(effect, node)
    return handler


def _constant_rows(node) -> tuple | None:
    """(columns, rows, functions) of an INSERT ... VALUES: each value that reads no column,
    parameter or subquery as SQL, any other as None (columns None: the table's, in order), and
    the functions those values call (the catalog evaluates them only if all are PostgreSQL's own
    immutable ones): enough to tell which partition each row goes to and what it conflicts with."""
    query = node.selectStmt
    if query is None or not getattr(query, "valuesLists", None):
        return None
    functions: list[str] = []
    rows = []
    for row in query.valuesLists:
        rows.append(tuple(RawStream()(v) if _constant(v, functions) else None for v in row))
    return (tuple(c.name for c in node.cols) if node.cols else None), tuple(rows), tuple(dict.fromkeys(functions))


def _constant(value, functions: list[str]) -> bool:
    """Whether an expression reads nothing (no column, parameter or subquery); the functions it
    calls are added to `functions`."""
    found = {"reads": False}

    class Reads(Visitor):
        def visit_ColumnRef(self, ancestors, node):
            found["reads"] = True

        def visit_ParamRef(self, ancestors, node):
            found["reads"] = True

        def visit_SubLink(self, ancestors, node):
            found["reads"] = True

        def visit_FuncCall(self, ancestors, node):
            functions.append(node.funcname[-1].sval)

    Reads()(value)
    return not found["reads"] and type(value).__name__ != "SetToDefault"


def _arbiter(conflict) -> tuple | None:
    """What an ON CONFLICT clause checks a new row against (None: an expression rollout does not read)."""
    if conflict.infer is None:
        return ("any", ())
    if conflict.infer.conname:
        return ("constraint", (conflict.infer.conname,))
    names = tuple(e.name for e in conflict.infer.indexElems or ())
    return ("columns", names) if names and all(names) else None


def _with_modifying_ctes(effect: Effect, node) -> Effect:
    """A WITH clause's INSERT, UPDATE, DELETE or MERGE runs with the statement, with its own locks."""
    clause = getattr(node, "withClause", None)
    inner = [analyze_node(cte.ctequery, "") for cte in (clause.ctes if clause is not None else ())
             if type(cte.ctequery).__name__ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")]
    if not inner:
        return effect
    return effect.with_(locks=effect.locks + tuple(r for e in inner for r in e.locks),
                        expand=effect.expand + tuple(x for e in inner for x in e.expand),
                        row_locks=True, changes_rows=True,
                        unbounded=effect.unbounded or any(e.unbounded for e in inner),
                        scans=effect.scans or any(e.scans for e in inner),
                        notes=effect.notes + tuple(n for e in inner for n in e.notes))


def _explain(node, text: str) -> Effect:
    """EXPLAIN plans its statement (the planner takes the statement's own locks); with ANALYZE it
    also runs it."""
    inner = analyze_node(node.query, text)
    if "analyze" in _options(node):
        return inner.with_(kind="EXPLAIN ANALYZE " + inner.kind)
    planned = tuple(e for e in inner.expand if e.what in ("children", "view_tables", "partitions"))
    return Effect(text, "EXPLAIN " + inner.kind, locks=inner.locks, expand=planned)


def _call(node, text: str) -> Effect:
    return Effect(text, "CALL", expand=_calls(node), notes=("a procedure: the locks of the statements in its body",))


def _copy(node, text: str) -> Effect:
    if node.relation is None:
        return analyze_node(node.query, text) if node.query is not None else Effect(text, "COPY")
    target = relation(node.relation)
    lock = _RE if node.is_from else _A
    return Effect(text, "COPY " + ("FROM" if node.is_from else "TO"), locks=(RelationLock(target, lock),),
                  expand=(Expand("children", target, lock),))


# --- tables ----------------------------------------------------------------------------

def _create_table(node, text: str) -> Effect:
    locks, expand = [], []
    for element in node.tableElts or ():
        for constraint in (getattr(element, "constraints", None) or ()) + ((element,) if type(element).__name__ == "Constraint" else ()):
            if constraint.contype == enums.ConstrType.CONSTR_FOREIGN:
                locks.append(RelationLock(relation(constraint.pktable), _SRE, "foreign key"))
                expand.append(Expand("partitions", relation(constraint.pktable), _SRE))
        if type(element).__name__ == "TableLikeClause":
            locks.append(RelationLock(relation(element.relation), _A, "LIKE"))
            if element.options & _LIKE_DEFAULTS:
                expand.append(Expand("attrdef_sequences", relation(element.relation), _A, since=16))
    sequences, _ = sequence_calls(node, _A)
    locks += [replace(r, since=16) for r in sequences]  # a default's sequence is read since PostgreSQL 16
    for parent in node.inhRelations or ():
        name = relation(parent)
        # the new table copies its parent's defaults, recording their sequences (since PostgreSQL 16)
        expand.append(Expand("attrdef_sequences", name, _A, since=16))
        if node.partbound is not None:
            locks.append(RelationLock(name, _AE, "new partition"))
            expand += [Expand("default_partition", name, _AE), *alter_table.partition_keys(name, _SRE)]
        else:
            locks.append(RelationLock(name, _SUE, "inherited"))
    notes = ("a new table: nobody else uses it yet",) if not locks else ()
    return Effect(text, f"CREATE TABLE {relation(node.relation)}", locks=tuple(locks), expand=tuple(expand),
                  notes=notes, defines=(node.relation.relname,),
                  # IF NOT EXISTS may find the table there already, with its readers and writers
                  creates_table=None if node.if_not_exists else relation(node.relation))


_LIKE_DEFAULTS = enums.TableLikeOption.CREATE_TABLE_LIKE_DEFAULTS


def _create_table_as(node, text: str) -> Effect:
    query = getattr(node, "query", None) or node
    reads = _reads(query, skip=(relation(node.intoClause.rel) if getattr(node, "intoClause", None) else "",))
    kind = "CREATE MATERIALIZED VIEW" if getattr(node, "objtype", None) == OBJ.OBJECT_MATVIEW else "CREATE TABLE AS"
    into = getattr(node, "into", None)
    # like CREATE TABLE, the new relation is invisible to other sessions until the commit
    made = relation(into.rel) if into is not None and not getattr(node, "if_not_exists", False) else None
    if into is not None and into.skipData:  # WITH NO DATA: the query is analysed, not run
        return Effect(text, kind + " WITH NO DATA", locks=tuple(reads), creates_table=made)
    return Effect(text, kind, locks=tuple(reads), expand=_read_expansions(reads), planned=True, creates_table=made)


def _truncate(node, text: str) -> Effect:
    names = [relation(r) for r in node.relations]
    expand = [Expand("children", relation(r), _AE) for r in node.relations if r.inh]
    expand += [Expand("triggers", n, _RE, ("TRUNCATE",)) for n in names]
    if node.behavior == enums.DropBehavior.DROP_CASCADE:
        expand += [Expand("foreign_keys_in_all", n, _AE) for n in names]
        expand += [Expand("cascaded_triggers", n, _RE, ("TRUNCATE",)) for n in names]
        if node.restart_seqs:
            expand += [Expand("cascaded_sequences", n, _AE) for n in names]
    if node.restart_seqs:
        expand += [Expand("owned_sequences", n, _AE) for n in names]
    return Effect(text, "TRUNCATE", locks=tuple(RelationLock(n, _AE) for n in names), loses_data=True,
                  breaks_old_readers=False, expand=tuple(expand),
                  notes=("empties the table: every row is gone (instant: a new empty file, no scan)",))


def _drop(node, text: str) -> Effect:
    what = node.removeType
    kind = "DROP " + OBJ(what).name.removeprefix("OBJECT_").replace("_", " ")
    cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
    locks, expand, effect = [], [], {}
    if what in RELATION_OBJECTS:
        names = [from_list(obj) for obj in node.objects]
        mode = _SUE if node.concurrent else _AE
        # DROP INDEX CONCURRENTLY ends with ACCESS EXCLUSIVE on the index, once no query can use it
        locks = [RelationLock(n, _AE if what == OBJ.OBJECT_INDEX else mode) for n in names]
        if what == OBJ.OBJECT_INDEX:
            expand += [Expand("index_table", n, mode) for n in names]
            expand += [Expand("index_partitions", n, mode) for n in names]
            effect = {"transactional": not node.concurrent, "long_running_ok": node.concurrent}
            kind += " CONCURRENTLY" if node.concurrent else ""
        if what in (OBJ.OBJECT_TABLE, OBJ.OBJECT_FOREIGN_TABLE):
            effect = {"loses_data": True, "breaks_old_readers": True}
            expand += [Expand("children", n, _AE) for n in names]
            expand += [Expand("foreign_keys_out_all", n, _AE) for n in names]
            expand += [Expand("foreign_keys_in_direct", n, _AE) for n in names]
            expand += [Expand("owned_sequences", n, _AE) for n in names]
            expand += [Expand("parents", n, _AE) for n in names]
            expand += [Expand("sibling_default", n, _AE) for n in names]
        if what in (OBJ.OBJECT_VIEW, OBJ.OBJECT_MATVIEW):
            effect = {"breaks_old_readers": True}
        if cascade:
            expand += [Expand("dependents", n, _AE) for n in names]
    elif what in TABLE_OBJECTS:
        for obj in node.objects:
            table = from_list(obj[:-1])
            label = OBJ(what).name.removeprefix("OBJECT_").lower()
            locks.append(RelationLock(table, _AE, f"{label} {obj[-1].sval}",
                                      only_if=(label, obj[-1].sval) if node.missing_ok else None))
            if what == OBJ.OBJECT_TRIGGER:  # a partitioned table's row trigger goes from its partitions too
                expand.append(Expand("trigger_clones", table, _AE, (obj[-1].sval,)))
    elif what == OBJ.OBJECT_STATISTIC_EXT:
        expand = [Expand("statistics_table", from_list(obj), _SUE) for obj in node.objects]
    elif what in (OBJ.OBJECT_TYPE, OBJ.OBJECT_DOMAIN) and not cascade:
        expand = [Expand("type_relation", from_list(obj.names), _AE) for obj in node.objects]
    elif what in (OBJ.OBJECT_FUNCTION, OBJ.OBJECT_PROCEDURE, OBJ.OBJECT_ROUTINE, OBJ.OBJECT_AGGREGATE):
        effect = {"functions_dropped": tuple(from_list(obj.objname) for obj in node.objects)}
        if cascade:
            expand = [Expand("function_dependents", from_list(obj.objname), _AE) for obj in node.objects]
    elif what in (OBJ.OBJECT_TYPE, OBJ.OBJECT_DOMAIN):
        if cascade:
            expand = [Expand("type_users", from_list(obj.names), _AE) for obj in node.objects]
            effect = {"loses_data": True, "breaks_old_readers": True}
    elif what == OBJ.OBJECT_SCHEMA:
        if cascade:
            expand = [Expand("schema_cascade", obj.sval, _AE) for obj in node.objects]
            effect = {"loses_data": True, "breaks_old_readers": True}
    return Effect(text, kind, locks=tuple(locks), expand=tuple(expand), **effect)


def _rename(node, text: str) -> Effect:
    what = node.renameType
    label = OBJ(what).name.removeprefix("OBJECT_").replace("_", " ")
    if node.relation is not None:
        table = relation(node.relation)
    elif what in TABLE_OBJECTS or what == OBJ.OBJECT_COLUMN:
        table = from_list(node.object[:-1]) if isinstance(node.object, tuple) else None
    else:
        return Effect(text, f"RENAME {label}")
    if what == OBJ.OBJECT_INDEX:  # no application names an index; a brief lock since PostgreSQL 12
        return Effect(text, "RENAME INDEX", locks=(RelationLock(table, _SUE),), defines=(node.newname,))
    expand = []
    if what == OBJ.OBJECT_COLUMN and node.relation is not None and node.relation.inh:
        expand.append(Expand("children", table, _AE))
    if what == OBJ.OBJECT_TABCONSTRAINT:
        expand.append(Expand("constraint_index", table, _SUE, (node.subname,)))
    if what == OBJ.OBJECT_TRIGGER:  # a partitioned table's row trigger is renamed on its partitions too
        expand.append(Expand("trigger_clones", table, _AE, (node.subname,)))
    breaks = what in (OBJ.OBJECT_TABLE, OBJ.OBJECT_COLUMN, OBJ.OBJECT_VIEW, OBJ.OBJECT_MATVIEW,
                      OBJ.OBJECT_FOREIGN_TABLE, OBJ.OBJECT_SEQUENCE)
    return Effect(text, f"RENAME {label}", locks=(RelationLock(table, _AE),), breaks_old_readers=breaks,
                  defines=(node.newname,), expand=tuple(expand),
                  columns=(node.subname,) if node.subname else (),
                  notes=("the old application still uses the old name: keep both names through the rollout "
                         "(a view, or a new column kept in step by a trigger)",) if breaks else ())


def _set_schema(node, text: str) -> Effect:
    if node.relation is None:
        return Effect(text, "SET SCHEMA")
    name = relation(node.relation)
    return Effect(text, "SET SCHEMA", locks=(RelationLock(name, _AE),), breaks_old_readers=True,
                  expand=(Expand("owned_sequences", name, _AE),))


# --- indexes, maintenance ----------------------------------------------------------------

def _create_index(node, text: str) -> Effect:
    table = relation(node.relation)
    mode = _SUE if node.concurrent else _S
    columns = tuple(p.name for p in node.indexParams if p.name)
    notes = (("two table scans; waits for transactions older than it; a failed build leaves an INVALID index",)
             if node.concurrent else ())
    return Effect(text, "CREATE INDEX" + (" CONCURRENTLY" if node.concurrent else ""),
                  locks=(RelationLock(table, mode), *(_reads(node.whereClause, skip=(table,)) if node.whereClause else ())), scans=True,
                  transactional=not node.concurrent, long_running_ok=node.concurrent, columns=columns,
                  builds_index=True, index=node.idxname, defines=(node.idxname,) if node.idxname else (),
                  expand=(Expand("partitions", table, mode),) if node.relation.inh else (), notes=notes)


def _options(node) -> set[str]:
    return {o.defname for o in getattr(node, "params", None) or getattr(node, "options", None) or ()}


def _reindex(node, text: str) -> Effect:
    concurrently = "concurrently" in _options(node)
    kind = enums.ReindexObjectType(node.kind)
    heap, index = (_SUE, _SUE) if concurrently else (_S, _AE)
    if kind == enums.ReindexObjectType.REINDEX_OBJECT_INDEX:
        name = relation(node.relation)
        locks = (RelationLock(name, index, only_if=("plain_index", name)),)
        expand = (Expand("index_table", name, heap), Expand("index_leaves", name, heap),
                  Expand("partitioned_not_transactional", name, heap))
    elif kind == enums.ReindexObjectType.REINDEX_OBJECT_TABLE:
        name = relation(node.relation)
        locks, expand = (RelationLock(name, heap),), (Expand("indexes", name, index), Expand("children", name, heap),
                                                      Expand("partitioned_not_transactional", name, heap))
    elif kind == enums.ReindexObjectType.REINDEX_OBJECT_SCHEMA:
        return Effect(text, "REINDEX SCHEMA", transactional=False, scans=True, long_running_ok=concurrently,
                      expand=(Expand("schema_tables", node.name, heap),),
                      notes=("rebuilds every index of every table in the schema, one table at a time",))
    else:
        return Effect(text, f"REINDEX {kind.name.removeprefix('REINDEX_OBJECT_')}", transactional=False,
                      assumed=True, notes=("rebuilds every index it covers, each under its lock",))
    return Effect(text, "REINDEX" + (" CONCURRENTLY" if concurrently else ""), locks=locks, expand=expand,
                  scans=True, transactional=not concurrently, long_running_ok=concurrently,
                  notes=() if concurrently else ("ACCESS EXCLUSIVE on the indexes: queries that would use them "
                                                 "wait while they are rebuilt",))


def _vacuum(node, text: str) -> Effect:
    options = _options(node)
    full = "full" in options
    mode = _AE if full else _SUE
    names = [relation(r.relation) for r in node.rels or ()]
    kind = ("VACUUM" + (" FULL" if full else "")) if node.is_vacuumcmd else "ANALYZE"
    notes = () if names else ("names no table: it works through every table of the database",)
    # partitions are processed with their table; inheritance children too since PostgreSQL 18, and
    # ANALYZE reads a sample of the children's rows (with ONLY, since 18, that sample is all)
    analyzes = "analyze" in options or not node.is_vacuumcmd
    expand = tuple(e for r in node.rels or () for n in (relation(r.relation),) for e in (
        (Expand("partitions", n, mode), Expand("children", n, mode, since=18)) if r.relation.inh else ()) +
        ((Expand("leaves", n, _A),) if analyzes else ())) or (() if names else (Expand("all_tables", "", mode),))
    return Effect(text, kind, locks=tuple(RelationLock(n, mode) for n in names), scans=True, rewrites=full,
                  transactional=not node.is_vacuumcmd, long_running_ok=not full, expand=expand, notes=notes)


def _cluster(node, text: str) -> Effect:
    if node.relation is None:
        return Effect(text, "CLUSTER", transactional=False, scans=True, rewrites=True,
                      expand=(Expand("clustered_tables", "", _AE),),
                      notes=("reclusters every table of yours that has a clustered index, each under ACCESS EXCLUSIVE",))
    table = relation(node.relation)
    named = (Expand("sibling_plain_index", table, _AE, (node.indexname,)),) if node.indexname else ()
    return Effect(text, "CLUSTER", locks=(RelationLock(table, _AE),), scans=True, rewrites=True,
                  expand=(Expand("children", table, _AE), Expand("partitioned_not_transactional", table, _AE), *named))


def _refresh(node, text: str) -> Effect:
    name = relation(node.relation)
    mode = _E if node.concurrent else _AE
    return Effect(text, "REFRESH MATERIALIZED VIEW" + (" CONCURRENTLY" if node.concurrent else ""),
                  locks=(RelationLock(name, mode),), scans=True, rewrites=not node.concurrent,
                  expand=() if node.skipData else (Expand("matview_tables", name, _A),),
                  notes=() if node.concurrent else ("readers of the view wait until it is refreshed",))


def _lock(node, text: str) -> Effect:
    mode = Lock(node.mode)
    names = [(relation(r), r.inh) for r in node.relations]
    expand = tuple(e for n, inh in names for e in ((Expand("children", n, mode),) if inh else ()) +
                   (Expand("view_tables", n, mode),))
    return Effect(text, f"LOCK TABLE IN {mode.label} MODE", locks=tuple(RelationLock(n, mode) for n, _ in names),
                  expand=expand)


def _comment(node, text: str) -> Effect:
    what = node.objtype
    if what in RELATION_OBJECTS:
        target, lock = from_list(node.object), _SUE
    elif what == OBJ.OBJECT_COLUMN:
        target, lock = from_list(node.object[:-1]), _SUE
    elif what in TABLE_OBJECTS:
        target, lock = from_list(node.object[:-1]), _A
    else:
        return Effect(text, "COMMENT")
    return Effect(text, "COMMENT", locks=(RelationLock(target, lock),))


def _grant(node, text: str) -> Effect:
    on_relations = node.targtype == enums.GrantTargetType.ACL_TARGET_OBJECT and node.objtype in RELATION_OBJECTS
    # PostgreSQL 16 started to lock what it grants on (ACCESS SHARE), against a concurrent DROP
    locks = tuple(RelationLock(relation(r), _A, since=16) for r in node.objects or ()) if on_relations else ()
    return Effect(text, "GRANT" if node.is_grant else "REVOKE", locks=locks)


def _publication(node, text: str) -> Effect:
    relations = [o.pubtable.relation for o in node.pubobjects or () if o.pubtable is not None]
    replaces = getattr(node, "action", None) == enums.AlterPublicationAction.AP_SetObjects
    return Effect(text, type(node).__name__.removesuffix("Stmt"),
                  locks=tuple(RelationLock(relation(r), _SUE) for r in relations),
                  expand=tuple(Expand("inheritors", relation(r), _SUE) for r in relations if r.inh)
                  + ((Expand("publication_tables", node.pubname, _SUE),) if replaces else ()))


def _owned(node, text: str) -> Effect:
    return Effect(text, type(node).__name__.removesuffix("Stmt"), loses_data=type(node).__name__ == "DropOwnedStmt",
                  expand=tuple(Expand("owned_by_role_cascade" if getattr(node, "behavior", None) == enums.DropBehavior.DROP_CASCADE
                                      else "owned_by_role", r.rolename, _AE) for r in node.roles if r.rolename)
                  + tuple(Expand("role_policies", r.rolename, _AE) for r in node.roles
                          if r.rolename and type(node).__name__ == "DropOwnedStmt"))


# --- views, triggers, policies, rules -----------------------------------------------------

def _view(node, text: str) -> Effect:
    name = relation(node.view)
    reads = _reads(node.query)
    own = (RelationLock(name, _AE, "replaced"),) if node.replace else ()
    return Effect(text, "CREATE OR REPLACE VIEW" if node.replace else "CREATE VIEW", locks=own + tuple(reads),
                  defines=(node.view.relname,))


def _on_table(kind: str, mode: Lock, attr: str = "relation"):
    def handler(node, text: str) -> Effect:
        table = relation(getattr(node, attr))
        reads = _reads(node, skip=(table,))
        return Effect(text, kind, locks=(RelationLock(table, mode), *reads), expand=_read_expansions(reads))
    return handler


def _trigger(node, text: str) -> Effect:
    table = relation(node.relation)
    mode = _SRE
    locks = [RelationLock(table, mode)]
    if node.constrrel is not None:
        locks.append(RelationLock(relation(node.constrrel), _A, "constraint trigger"))
    copies = (Expand("partitions", table, mode),) if node.row else ()  # statement triggers stay on the parent
    return Effect(text, "CREATE TRIGGER", locks=tuple(locks), expand=copies)


# --- types, functions, sequences --------------------------------------------------------

def _alter_enum(node, text: str) -> Effect:
    if node.oldVal:
        return Effect(text, "ALTER TYPE RENAME VALUE")
    return Effect(text, "ALTER TYPE ADD VALUE", adds_enum_value=True,
                  notes=("the new value cannot be used in the transaction that adds it: use it in a later migration",))


def _alter_domain(node, text: str) -> Effect:
    name = from_list(node.typeName)
    if node.subtype == "C":  # ADD CONSTRAINT
        checks = not node.def_.skip_validation
        return Effect(text, "ALTER DOMAIN ADD CONSTRAINT" + ("" if checks else " NOT VALID"), scans=checks,
                      expand=(Expand("type_data_users", name, _S),) if checks else ())
    if node.subtype in ("V", "O"):  # VALIDATE CONSTRAINT, SET NOT NULL
        return Effect(text, "ALTER DOMAIN " + ("VALIDATE" if node.subtype == "V" else "SET NOT NULL"), scans=True,
                      expand=(Expand("type_data_users", name, _S),))
    return Effect(text, "ALTER DOMAIN")


def _create_function(node, text: str) -> Effect:
    """PostgreSQL parses and analyses a LANGUAGE sql body when the function is created, which
    takes its statements' locks; a PL/pgSQL body is only syntax-checked."""
    language = next((o.arg.sval for o in node.options or () if o.defname == "language"), "sql")
    body = next((o.arg for o in node.options or () if o.defname == "as"), None)
    statements = []
    if node.sql_body:
        statements = _flatten(node.sql_body)
    elif language == "sql" and body:
        try:
            statements = [raw.stmt for raw in parse_sql(body[0].sval)]
        except Exception:  # noqa: BLE001 - PostgreSQL reports the body's syntax error itself
            statements = []
    effect = Effect(text, "CREATE PROCEDURE" if node.is_procedure else "CREATE FUNCTION",
                    functions_defined=(from_list(node.funcname),))
    return _with_bodies(effect, statements)


def _flatten(value) -> list:
    if isinstance(value, (tuple, list)):
        return [node for item in value for node in _flatten(item)]
    return [value] if value is not None else []


def _with_bodies(effect: Effect, statements) -> Effect:
    """The effect plus the locks parse analysis takes for the statements of a body (a rule's
    actions, a SQL function's body): each statement's own relations, nothing it would reach
    when run."""
    locks = [r for node in statements if isinstance(node, ast.Node) for r in analyze_node(node, "").locks]
    return effect.with_(locks=effect.locks + tuple(locks))


def _alter_sequence(node, text: str) -> Effect:
    name = relation(node.sequence)
    owned = [o for o in node.options or () if o.defname == "owned_by"]
    locks = [RelationLock(name, _SRE)]
    if owned and len(owned[0].arg) > 1:
        locks.append(RelationLock(from_list(owned[0].arg[:-1]), _A, "OWNED BY"))
    return Effect(text, "ALTER SEQUENCE", locks=tuple(locks))


def _create_sequence(node, text: str) -> Effect:
    owned = [o for o in node.options or () if o.defname == "owned_by"]
    locks = (RelationLock(from_list(owned[0].arg[:-1]), _A, "OWNED BY"),) if owned and len(owned[0].arg) > 1 else ()
    return Effect(text, "CREATE SEQUENCE", locks=locks)


def _statistics(node, text: str) -> Effect:
    return Effect(text, "CREATE STATISTICS", locks=tuple(RelationLock(relation(r), _SUE) for r in node.relations))


def _transaction(node, text: str) -> Effect:
    kind = enums.TransactionStmtKind(node.kind).name.removeprefix("TRANS_STMT_")
    return Effect(text, kind, controls_transaction=True)


def _do(node, text: str) -> Effect:
    """An anonymous block: its statements are analysed from its PL/pgSQL body where it parses."""
    body = next((o.arg.sval for o in node.args if o.defname == "as"), "")
    language = next((o.arg.sval for o in node.args if o.defname == "language"), "plpgsql")
    inner = plpgsql_statements(body) if language == "plpgsql" else None
    if inner is None:
        return Effect(text, "DO", assumed=True, notes=("an anonymous block rollout cannot read: check its locks by "
                                                       "hand",))
    effects = [analyze_node(parse_sql(q)[0].stmt, q) for q in inner]
    locks = tuple(r for e in effects for r in e.locks)
    return Effect(text, "DO", locks=locks, expand=tuple(x for e in effects for x in e.expand),
                  scans=any(e.scans for e in effects), rewrites=any(e.rewrites for e in effects),
                  loses_data=any(e.loses_data for e in effects), row_locks=any(e.row_locks for e in effects),
                  unbounded=any(e.unbounded for e in effects), assumed=any(e.assumed for e in effects),
                  notes=("an anonymous block: the locks of the statements in its body; dynamic SQL (EXECUTE) is "
                         "not seen",))


def plpgsql_statements(body: str, returns: str = "void") -> list[str] | None:
    """The SQL a PL/pgSQL body runs: its statements, and its expressions as SELECTs (an IF EXISTS
    (SELECT ...) reads a table too); None when it does not parse (`returns` trigger gives the body
    NEW, OLD and TG_ variables; a body that returns a value, or rows, is tried as such)."""
    tree = None
    for kind in dict.fromkeys((returns, "record", "SETOF record")):
        try:
            tree = parse_plpgsql(f"CREATE FUNCTION pg_temp.rollout_do() RETURNS {kind} LANGUAGE plpgsql "
                                 f"AS $rollout${body}$rollout$")
            break
        except Exception:  # noqa: BLE001 - any parser failure means "cannot read it" (as this kind)
            continue
    if tree is None:
        return None
    found: list[str] = []

    def walk(value, key=None):
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "PLpgSQL_expr":
                    query = v.get("query", "")
                    for text in (query, f"SELECT {query}"):  # a statement, or an expression
                        try:
                            parse_sql(text)
                        except Exception:  # noqa: BLE001 - not this form
                            continue
                        found.append(text)
                        break
                else:
                    walk(v, k)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)

    walk(tree)
    return found


def _nothing(kind: str):
    return lambda node, text: Effect(text, kind)


def _not_in_transaction(kind: str):
    return lambda node, text: Effect(text, kind, transactional=False)


_HANDLERS = {
    "AlterTableStmt": alter_table.analyze,
    "IndexStmt": _create_index,
    "DropStmt": _drop,
    "RenameStmt": _rename,
    "AlterObjectSchemaStmt": _set_schema,
    "CreateStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "TruncateStmt": _truncate,
    "UpdateStmt": _dml("UPDATE"),
    "DeleteStmt": _dml("DELETE"),
    "InsertStmt": _dml("INSERT"),
    "MergeStmt": _dml("MERGE"),
    "SelectStmt": _select,
    "CopyStmt": _copy,
    "ReindexStmt": _reindex,
    "VacuumStmt": _vacuum,
    "ClusterStmt": _cluster,
    "RefreshMatViewStmt": _refresh,
    "LockStmt": _lock,
    "CommentStmt": _comment,
    "GrantStmt": _grant,
    "CreatePublicationStmt": _publication,
    "AlterPublicationStmt": _publication,
    "DropOwnedStmt": _owned,
    "ReassignOwnedStmt": _owned,
    "ExplainStmt": _explain,
    "ReturnStmt": lambda node, text: Effect(text, "RETURN", locks=tuple(_reads(node))),
    "CallStmt": _call,
    "GrantRoleStmt": _nothing("GRANT ROLE"),
    "AlterDefaultPrivilegesStmt": _nothing("ALTER DEFAULT PRIVILEGES"),
    "ViewStmt": _view,
    "CreateTrigStmt": _trigger,
    "CreatePolicyStmt": _on_table("CREATE POLICY", _AE, "table"),
    "AlterPolicyStmt": _on_table("ALTER POLICY", _AE, "table"),
    "RuleStmt": lambda node, text: _with_bodies(Effect(text, "CREATE RULE", locks=(
        RelationLock(relation(node.relation), _AE),)), node.actions or ()),
    "CreateStatsStmt": _statistics,
    "AlterStatsStmt": _nothing("ALTER STATISTICS"),
    "CreateFunctionStmt": _create_function,
    "AlterFunctionStmt": _nothing("ALTER FUNCTION"),
    "CreateEnumStmt": _nothing("CREATE TYPE (enum)"),
    "CompositeTypeStmt": _nothing("CREATE TYPE (composite)"),
    "CreateDomainStmt": _nothing("CREATE DOMAIN"),
    "CreateRangeStmt": _nothing("CREATE TYPE (range)"),
    "DefineStmt": _nothing("CREATE"),
    "AlterEnumStmt": _alter_enum,
    "AlterDomainStmt": _alter_domain,
    "AlterOwnerStmt": _nothing("OWNER TO"),
    "CreateSeqStmt": _create_sequence,
    "AlterSeqStmt": _alter_sequence,
    "CreateSchemaStmt": _nothing("CREATE SCHEMA"),
    "CreateExtensionStmt": _nothing("CREATE EXTENSION"),
    "AlterExtensionStmt": _nothing("ALTER EXTENSION"),
    "CreateCastStmt": _nothing("CREATE CAST"),
    "CreateOpClassStmt": _nothing("CREATE OPERATOR CLASS"),
    "CreateConversionStmt": _nothing("CREATE CONVERSION"),
    "CreateEventTrigStmt": _nothing("CREATE EVENT TRIGGER"),
    "CreateRoleStmt": _nothing("CREATE ROLE"),
    "AlterRoleStmt": _nothing("ALTER ROLE"),
    "AlterRoleSetStmt": _nothing("ALTER ROLE SET"),
    "DropRoleStmt": _nothing("DROP ROLE"),
    "AlterTypeStmt": _nothing("ALTER TYPE"),
    "VariableSetStmt": _nothing("SET"),
    "VariableShowStmt": _nothing("SHOW"),
    "DiscardStmt": _nothing("DISCARD"),
    "NotifyStmt": _nothing("NOTIFY"),
    "ListenStmt": _nothing("LISTEN"),
    "UnlistenStmt": _nothing("UNLISTEN"),
    "CheckPointStmt": _nothing("CHECKPOINT"),
    "LoadStmt": _nothing("LOAD"),
    "TransactionStmt": _transaction,
    "DoStmt": _do,
    "CreatedbStmt": _not_in_transaction("CREATE DATABASE"),
    "DropdbStmt": _not_in_transaction("DROP DATABASE"),
    "AlterSystemStmt": _not_in_transaction("ALTER SYSTEM"),
    "CreateTableSpaceStmt": _not_in_transaction("CREATE TABLESPACE"),
    "DropTableSpaceStmt": _not_in_transaction("DROP TABLESPACE"),
}
