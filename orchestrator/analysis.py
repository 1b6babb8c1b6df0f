"""What a statement does to the database: the lock it takes, on which table, what that lock
blocks, whether it scans or rewrites the table, whether it may run in a transaction.

Pure: the statement is parsed by PostgreSQL's own parser (libpg_query, through pglast), and
the facts come from the lock table of the PostgreSQL documentation ("Explicit Locking" and
each command's page). The preview prints these facts; the runner uses the same ones to lift
statement_timeout for statements meant to run long without blocking, and to back up tables
before destructive statements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from pglast import enums, parse_sql
from pglast.parser import ParseError

AT = enums.AlterTableType
OBJ = enums.ObjectType

# What each lock mode stops other sessions from doing.
BLOCKS = {
    "ACCESS EXCLUSIVE": "reads, writes and DDL",
    "EXCLUSIVE": "writes and DDL (plain reads go on)",
    "SHARE ROW EXCLUSIVE": "writes and DDL (reads go on)",
    "SHARE": "writes and DDL (reads go on)",
    "SHARE UPDATE EXCLUSIVE": "DDL and VACUUM (reads and writes go on)",
    "ROW EXCLUSIVE": "only DDL that blocks writes (reads and writes go on)",
    "ACCESS SHARE": "only ACCESS EXCLUSIVE DDL",
}
_STRENGTH = ["ACCESS SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE",
             "EXCLUSIVE", "ACCESS EXCLUSIVE"]


@dataclass(frozen=True)
class Effect:
    """The facts about one statement."""

    sql: str
    kind: str
    table: str | None = None  # the table locked (schema-qualified when the statement says so)
    lock: str | None = None
    scans: bool = False  # reads every row of the table while holding its lock
    rewrites: bool = False  # writes a new copy of the table
    transactional: bool = True  # may run inside a transaction block
    long_running_ok: bool = False  # meant to run long without blocking: exempt from statement_timeout
    destructive: bool = False  # loses data or breaks the old application: back up first
    row_locks: bool = False  # locks the rows it changes until commit (UPDATE, DELETE)
    notes: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()  # columns the statement changes, drops or renames
    other_tables: tuple[str, ...] = ()  # tables also locked (a foreign key's referenced table)
    index: str | None = None  # the index a CREATE INDEX builds
    line: int = 1  # first line of the statement within its file

    @property
    def blocks(self) -> str:
        return BLOCKS.get(self.lock or "", "nothing")

    def as_json(self) -> dict:
        return {"sql": self.sql, "kind": self.kind, "table": self.table, "lock": self.lock, "blocks": self.blocks,
                "scans": self.scans, "rewrites": self.rewrites, "transactional": self.transactional,
                "exempt_from_statement_timeout": self.long_running_ok, "destructive": self.destructive,
                "row_locks": self.row_locks, "also_locks": list(self.other_tables), "notes": list(self.notes),
                "line": self.line}


@dataclass
class _Acc:
    """Collects the effects of an ALTER TABLE's subcommands into one statement's facts."""

    lock: str = "ACCESS SHARE"
    kinds: list[str] = field(default_factory=list)
    scans: bool = False
    rewrites: bool = False
    long_running_ok: bool = True
    destructive: bool = False
    notes: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    other_tables: list[str] = field(default_factory=list)

    def take(self, lock: str) -> None:
        if _STRENGTH.index(lock) > _STRENGTH.index(self.lock):
            self.lock = lock


# Functions whose value as a column DEFAULT decides whether ADD COLUMN rewrites the table.
VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v4", "uuid_generate_v1", "clock_timestamp", "timeofday",
            "nextval", "setval", "txid_current", "pg_current_xact_id"}
STABLE = {"now", "transaction_timestamp", "statement_timestamp", "current_timestamp", "current_date",
          "current_setting", "to_jsonb", "jsonb_build_object", "array"}


def _function_name(expression) -> str | None:
    if expression is None or type(expression).__name__ != "FuncCall":
        return None
    return expression.funcname[-1].sval.lower()


def _name(range_var) -> str:
    return f"{range_var.schemaname}.{range_var.relname}" if range_var.schemaname else range_var.relname


@lru_cache(maxsize=512)
def analyze(sql_text: str, *, first_line: int = 1) -> tuple[Effect, ...]:
    """The effects of each statement in `sql_text` (a migration file's text or one statement).

    Cached on the text: the preview, lint and apply all ask about the same files."""
    try:
        parsed = parse_sql(sql_text)
    except ParseError as exc:
        return (Effect(sql=sql_text.strip(), kind="unparsed", notes=(f"PostgreSQL cannot parse it: {exc}",)),)
    effects = []
    for raw in parsed:
        start = raw.stmt_location or 0
        text = sql_text[start:start + raw.stmt_len] if raw.stmt_len else sql_text[start:]
        leading = len(text) - len(text.lstrip())
        line = first_line + sql_text[:start + leading].count("\n")
        effects.append(_analyze(raw.stmt, text.strip(), line))
    return tuple(effects)


def analyze_file(path: str) -> tuple[Effect, ...]:
    """The effects of a migration file's statements, with their line numbers in the file."""
    with open(path, encoding="utf-8") as handle:
        return analyze(handle.read())


def _analyze(node, text: str, line: int) -> Effect:
    kind = type(node).__name__
    handler = _HANDLERS.get(kind)
    if handler is None:
        return Effect(sql=text, kind=kind.removesuffix("Stmt"), line=line,
                      notes=("not analysed: no table lock known for this statement",))
    return handler(node, text, line)


def _alter_table(node, text: str, line: int) -> Effect:
    acc = _Acc()
    table = _name(node.relation)
    for cmd in node.cmds:
        subtype = cmd.subtype
        if subtype == AT.AT_AddColumn:
            acc.take("ACCESS EXCLUSIVE")
            acc.kinds.append("ADD COLUMN")
            acc.long_running_ok = False
            acc.columns.append(cmd.def_.colname)
            constraints = cmd.def_.constraints or ()
            default = next((c.raw_expr for c in constraints if c.contype == enums.ConstrType.CONSTR_DEFAULT), None)
            if any(c.contype == enums.ConstrType.CONSTR_NOTNULL for c in constraints) and default is None:
                acc.notes.append("NOT NULL without a DEFAULT fails on a table that has rows")
            function = _function_name(default)
            if function in VOLATILE:
                acc.rewrites = acc.scans = True
                acc.notes.append(f"a DEFAULT of volatile {function}() rewrites the table: add the column without "
                                 "it, set the default, then backfill")
            elif function is not None and function not in STABLE:
                acc.notes.append(f"rewrites the table if {function}() is volatile (constants and stable "
                                 "defaults do not, since PostgreSQL 11)")
        elif subtype == AT.AT_AddConstraint:
            constraint = cmd.def_
            ctype = constraint.contype
            if ctype == enums.ConstrType.CONSTR_FOREIGN:
                acc.take("SHARE ROW EXCLUSIVE")
                acc.other_tables.append(_name(constraint.pktable))
                acc.kinds.append("ADD FOREIGN KEY" + (" NOT VALID" if constraint.skip_validation else ""))
            elif ctype in (enums.ConstrType.CONSTR_UNIQUE, enums.ConstrType.CONSTR_PRIMARY) and not constraint.indexname:
                acc.take("ACCESS EXCLUSIVE")
                acc.kinds.append("ADD UNIQUE/PRIMARY KEY (builds an index)")
                acc.scans = True
            else:
                acc.take("ACCESS EXCLUSIVE")
                acc.kinds.append("ADD CONSTRAINT" + (" NOT VALID" if constraint.skip_validation else ""))
            if not constraint.skip_validation and ctype in (enums.ConstrType.CONSTR_CHECK, enums.ConstrType.CONSTR_FOREIGN):
                acc.scans = True
            acc.long_running_ok = False
        elif subtype == AT.AT_ValidateConstraint:
            acc.take("SHARE UPDATE EXCLUSIVE")
            acc.kinds.append("VALIDATE CONSTRAINT")
            acc.scans = True
        elif subtype == AT.AT_SetNotNull:
            acc.take("ACCESS EXCLUSIVE")
            acc.kinds.append("SET NOT NULL")
            acc.scans = True
            acc.long_running_ok = False
            acc.columns.append(cmd.name)
            acc.notes.append("scans the table unless a validated CHECK (column IS NOT NULL) exists")
        elif subtype == AT.AT_AlterColumnType:
            acc.take("ACCESS EXCLUSIVE")
            acc.kinds.append("ALTER COLUMN TYPE")
            acc.rewrites = acc.scans = acc.destructive = True
            acc.long_running_ok = False
            acc.columns.append(cmd.name)
            acc.notes.append("rewrites the table and its indexes unless the types are binary coercible")
        elif subtype == AT.AT_DropColumn:
            acc.take("ACCESS EXCLUSIVE")
            acc.kinds.append("DROP COLUMN")
            acc.destructive = True
            acc.long_running_ok = False
            acc.columns.append(cmd.name)
        elif subtype in (AT.AT_EnableTrig, AT.AT_DisableTrig, AT.AT_EnableTrigAll, AT.AT_DisableTrigAll,
                         AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig, AT.AT_EnableTrigUser, AT.AT_DisableTrigUser):
            acc.take("SHARE ROW EXCLUSIVE")
            acc.kinds.append("ENABLE/DISABLE TRIGGER")
            acc.long_running_ok = False
        else:
            acc.take("ACCESS EXCLUSIVE")
            acc.kinds.append(subtype.name.removeprefix("AT_"))
            acc.long_running_ok = False
    return Effect(sql=text, kind="ALTER TABLE " + ", ".join(acc.kinds), table=table, lock=acc.lock, scans=acc.scans,
                  rewrites=acc.rewrites, long_running_ok=acc.long_running_ok, destructive=acc.destructive,
                  notes=tuple(acc.notes), columns=tuple(acc.columns), other_tables=tuple(acc.other_tables), line=line)


def _create_index(node, text: str, line: int) -> Effect:
    table = _name(node.relation)
    columns = tuple(p.name for p in node.indexParams if p.name)
    if node.concurrent:
        return Effect(sql=text, kind="CREATE INDEX CONCURRENTLY", table=table, lock="SHARE UPDATE EXCLUSIVE",
                      scans=True, transactional=False, long_running_ok=True, line=line, columns=columns,
                      index=node.idxname, notes=("two table scans; waits for transactions older than it; a failed "
                                                 "build leaves an INVALID index",))
    return Effect(sql=text, kind="CREATE INDEX", table=table, lock="SHARE", scans=True, line=line, columns=columns,
                  index=node.idxname)


def _drop(node, text: str, line: int) -> Effect:
    kind = OBJ(node.removeType).name.removeprefix("OBJECT_")
    names = [".".join(part.sval for part in obj) if isinstance(obj, tuple) else str(obj) for obj in node.objects]
    target = names[0] if names else None
    if node.removeType == OBJ.OBJECT_INDEX and node.concurrent:
        return Effect(sql=text, kind="DROP INDEX CONCURRENTLY", table=target, lock="SHARE UPDATE EXCLUSIVE",
                      transactional=False, line=line)
    if node.removeType in (OBJ.OBJECT_TABLE, OBJ.OBJECT_INDEX, OBJ.OBJECT_VIEW, OBJ.OBJECT_MATVIEW):
        return Effect(sql=text, kind=f"DROP {kind}", table=target, lock="ACCESS EXCLUSIVE",
                      destructive=node.removeType == OBJ.OBJECT_TABLE, line=line)
    if node.removeType == OBJ.OBJECT_TRIGGER:
        table = ".".join(part.sval for part in node.objects[0][:-1]) if node.objects else None
        return Effect(sql=text, kind="DROP TRIGGER", table=table, lock="ACCESS EXCLUSIVE", line=line)
    return Effect(sql=text, kind=f"DROP {kind}", line=line,
                  destructive=node.removeType in (OBJ.OBJECT_TYPE, OBJ.OBJECT_SCHEMA))


def _rename(node, text: str, line: int) -> Effect:
    what = OBJ(node.renameType).name.removeprefix("OBJECT_")
    table = _name(node.relation) if node.relation else None
    if node.renameType == OBJ.OBJECT_INDEX:  # no application names an index; a brief lock since PostgreSQL 12
        return Effect(sql=text, kind="RENAME INDEX", table=table, lock="SHARE UPDATE EXCLUSIVE", line=line)
    columns = (node.subname,) if node.subname else ()
    return Effect(sql=text, kind=f"RENAME {what}", table=table, lock="ACCESS EXCLUSIVE" if table else None,
                  destructive=True, columns=columns, line=line,
                  notes=("the old application still uses the old name: rename behind a view or a new column",))


def _create_table(node, text: str, line: int) -> Effect:
    referenced = []
    for element in node.tableElts or ():
        for constraint in getattr(element, "constraints", None) or ():
            if constraint.contype == enums.ConstrType.CONSTR_FOREIGN:
                referenced.append(_name(constraint.pktable))
        if getattr(element, "contype", None) == enums.ConstrType.CONSTR_FOREIGN:
            referenced.append(_name(element.pktable))
    # The new table is nobody's yet; the lock that matters is on the tables its foreign keys reference.
    notes = (f"SHARE ROW EXCLUSIVE on {', '.join(referenced)} while the foreign keys are created",) if referenced else ()
    return Effect(sql=text, kind=f"CREATE TABLE {_name(node.relation)}", table=referenced[0] if referenced else None,
                  other_tables=tuple(referenced[1:]), lock="SHARE ROW EXCLUSIVE" if referenced else None,
                  notes=notes, line=line)


def _dml(lock_rows: bool):
    def handler(node, text: str, line: int) -> Effect:
        kind = type(node).__name__.removesuffix("Stmt").upper()
        where = getattr(node, "whereClause", None)
        notes = ("changes every row in one transaction: a backfill batches this",) if lock_rows and where is None else ()
        return Effect(sql=text, kind=kind, table=_name(node.relation), lock="ROW EXCLUSIVE", row_locks=lock_rows,
                      scans=lock_rows and where is None, notes=notes, line=line)
    return handler


def _simple(kind: str, lock: str | None = None, transactional: bool = True, note: str | None = None):
    def handler(node, text: str, line: int) -> Effect:
        relation = getattr(node, "relation", None) or getattr(node, "table", None)
        return Effect(sql=text, kind=kind, table=_name(relation) if relation is not None and lock else None,
                      lock=lock, transactional=transactional, notes=(note,) if note else (), line=line)
    return handler


_HANDLERS = {
    "AlterTableStmt": _alter_table,
    "IndexStmt": _create_index,
    "DropStmt": _drop,
    "RenameStmt": _rename,
    "CreateStmt": _create_table,
    "UpdateStmt": _dml(True),
    "DeleteStmt": _dml(True),
    "InsertStmt": _dml(False),
    "CreateTrigStmt": _simple("CREATE TRIGGER", "SHARE ROW EXCLUSIVE"),
    "CreatePolicyStmt": _simple("CREATE POLICY", "ACCESS EXCLUSIVE"),
    "AlterPolicyStmt": _simple("ALTER POLICY", "ACCESS EXCLUSIVE"),
    "CreateFunctionStmt": _simple("CREATE FUNCTION"),
    "CreateEnumStmt": _simple("CREATE TYPE (enum)"),
    "CreateSchemaStmt": _simple("CREATE SCHEMA"),
    "CreateTableAsStmt": _simple("CREATE TABLE AS", note="reads its source tables under ACCESS SHARE"),
    "AlterEnumStmt": _simple("ALTER TYPE ADD VALUE", note="the new value cannot be used in the transaction that "
                                                         "adds it: use it in a later migration"),
    "CommentStmt": _simple("COMMENT"),
    "VariableSetStmt": _simple("SET"),
    "SelectStmt": _simple("SELECT"),
    "DoStmt": _simple("DO", note="an anonymous block: its statements are not analysed"),
    "ViewStmt": _simple("CREATE VIEW"),
}
