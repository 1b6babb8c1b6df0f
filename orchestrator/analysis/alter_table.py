"""ALTER TABLE (and ALTER INDEX / VIEW / SEQUENCE, which share its node): a table from each
subcommand to its facts, and small inspectors for the subcommands whose facts depend on how
they are written (a default, NOT VALID, CONCURRENTLY, a foreign key's other table).

The lock levels follow AlterTableGetLockLevel in PostgreSQL's tablecmds.c; the statement takes
the strongest lock of its subcommands. tests/analysis checks them against pg_locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pglast import enums
from pglast.stream import RawStream
from pglast.visitors import Visitor

from .effect import Effect, RelationLock
from .expand import Expand
from .lockmode import Lock
from .names import relation

AT = enums.AlterTableType
C = enums.ConstrType
_A, _RS, _RE, _SUE, _S, _SRE, _E, _AE = Lock


@dataclass(frozen=True)
class Sub:
    label: str
    lock: Lock
    recurses: bool = True  # applies to the partitions / inheritance children too
    scans: bool = False
    rewrites: bool = False
    long_running_ok: bool = False
    loses_data: bool = False
    breaks_old_readers: bool = False
    note: str = ""


_TRIGGERS = Sub("ENABLE/DISABLE TRIGGER", _SRE)
_TRIGGER = Sub("ENABLE/DISABLE TRIGGER", _SRE, recurses=False)  # one trigger: its copies are asked for
_ONE_TRIGGER = {AT.AT_EnableTrig, AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig, AT.AT_DisableTrig}
_RULES = Sub("ENABLE/DISABLE RULE", _AE)
_RLS = Sub("ROW LEVEL SECURITY", _AE, recurses=False)
SUBCOMMANDS: dict[AT, Sub] = {
    AT.AT_AddColumn: Sub("ADD COLUMN", _AE),
    AT.AT_AddColumnToView: Sub("ADD COLUMN (view)", _AE),
    AT.AT_ColumnDefault: Sub("SET/DROP DEFAULT", _AE, note="affects only rows inserted later: no rewrite"),
    AT.AT_CookedColumnDefault: Sub("SET DEFAULT", _AE),
    AT.AT_DropNotNull: Sub("DROP NOT NULL", _AE),
    AT.AT_SetNotNull: Sub("SET NOT NULL", _AE, scans=True,
                          note="scans the table unless a validated CHECK (column IS NOT NULL) exists"),
    AT.AT_SetExpression: Sub("SET EXPRESSION", _AE, scans=True, rewrites=True),
    AT.AT_DropExpression: Sub("DROP EXPRESSION", _AE),
    AT.AT_SetStatistics: Sub("SET STATISTICS", _SUE),
    AT.AT_SetOptions: Sub("SET (attribute options)", _SUE, recurses=False),
    AT.AT_ResetOptions: Sub("RESET (attribute options)", _SUE, recurses=False),
    AT.AT_SetStorage: Sub("SET STORAGE", _AE),
    AT.AT_SetCompression: Sub("SET COMPRESSION", _AE, recurses=False),
    AT.AT_DropColumn: Sub("DROP COLUMN", _AE, loses_data=True, breaks_old_readers=True),
    AT.AT_AlterConstraint: Sub("ALTER CONSTRAINT", _AE),
    AT.AT_ValidateConstraint: Sub("VALIDATE CONSTRAINT", _SUE, scans=True, long_running_ok=True,
                                  note="scans without blocking reads or writes"),
    AT.AT_DropConstraint: Sub("DROP CONSTRAINT", _AE),
    AT.AT_AlterColumnType: Sub("ALTER COLUMN TYPE", _AE, scans=True, rewrites=True,
                               note="rewrites the table and its indexes unless the new type is binary coercible"),
    AT.AT_AlterColumnGenericOptions: Sub("ALTER COLUMN OPTIONS", _AE),
    AT.AT_ChangeOwner: Sub("OWNER TO", _AE, recurses=False),
    AT.AT_ClusterOn: Sub("CLUSTER ON", _SUE, recurses=False),
    AT.AT_DropCluster: Sub("SET WITHOUT CLUSTER", _SUE, recurses=False),
    AT.AT_SetLogged: Sub("SET LOGGED", _AE, recurses=False, scans=True, rewrites=True),
    AT.AT_SetUnLogged: Sub("SET UNLOGGED", _AE, recurses=False, scans=True, rewrites=True),
    AT.AT_SetAccessMethod: Sub("SET ACCESS METHOD", _AE, recurses=False, scans=True, rewrites=True),
    AT.AT_SetTableSpace: Sub("SET TABLESPACE", _AE, recurses=False, scans=True, rewrites=True),
    AT.AT_ReplaceRelOptions: Sub("CREATE OR REPLACE VIEW", _AE),
    AT.AT_EnableTrig: _TRIGGER, AT.AT_EnableAlwaysTrig: _TRIGGER, AT.AT_EnableReplicaTrig: _TRIGGER,
    AT.AT_DisableTrig: _TRIGGER, AT.AT_EnableTrigAll: _TRIGGERS, AT.AT_DisableTrigAll: _TRIGGERS,
    AT.AT_EnableTrigUser: _TRIGGERS, AT.AT_DisableTrigUser: _TRIGGERS,
    AT.AT_EnableRule: _RULES, AT.AT_EnableAlwaysRule: _RULES, AT.AT_EnableReplicaRule: _RULES,
    AT.AT_DisableRule: _RULES,
    AT.AT_AddInherit: Sub("INHERIT", _AE, recurses=False),
    AT.AT_DropInherit: Sub("NO INHERIT", _AE, recurses=False),
    AT.AT_AddOf: Sub("OF", _AE, recurses=False),
    AT.AT_DropOf: Sub("NOT OF", _AE, recurses=False),
    AT.AT_ReplicaIdentity: Sub("REPLICA IDENTITY", _AE, recurses=False),
    AT.AT_EnableRowSecurity: _RLS, AT.AT_DisableRowSecurity: _RLS,
    AT.AT_ForceRowSecurity: _RLS, AT.AT_NoForceRowSecurity: _RLS,
    AT.AT_GenericOptions: Sub("OPTIONS", _AE),
    AT.AT_AttachPartition: Sub("ATTACH PARTITION", _SUE, recurses=False),
    AT.AT_DetachPartition: Sub("DETACH PARTITION", _AE, recurses=False, breaks_old_readers=True),
    AT.AT_DetachPartitionFinalize: Sub("DETACH PARTITION FINALIZE", _SUE, recurses=False),
    AT.AT_AddIdentity: Sub("ADD IDENTITY", _AE),
    AT.AT_SetIdentity: Sub("SET IDENTITY", _AE),
    AT.AT_DropIdentity: Sub("DROP IDENTITY", _AE),
}
_FALLBACK = Sub("(not in rollout's table)", _AE)

# Storage parameters that take SHARE UPDATE EXCLUSIVE (reloptions.c marks each option's lock);
# any other takes ACCESS EXCLUSIVE: the GIN, GiST and BRIN index options (fastupdate,
# gin_pending_list_limit, buffering, pages_per_range, autosummarize), user_catalog_table and
# the view options, as measured on PostgreSQL 18.
LIGHT_OPTIONS = {
    "fillfactor", "autovacuum_enabled", "toast_tuple_target", "parallel_workers", "vacuum_index_cleanup",
    "vacuum_truncate", "log_autovacuum_min_duration", "deduplicate_items", "vacuum_max_eager_freeze_failure_rate",
}
LIGHT_OPTION_PREFIXES = ("autovacuum_", "toast.autovacuum_", "toast.vacuum_", "toast.log_autovacuum")

# Functions whose value as a column DEFAULT decides whether ADD COLUMN rewrites the table. Any
# other function is judged by the catalog (pg_proc.provolatile).
VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v4", "uuid_generate_v1", "clock_timestamp", "timeofday",
            "nextval", "setval", "txid_current", "pg_current_xact_id", "uuidv7", "uuidv4", "random_normal"}
NOT_VOLATILE = {"now", "transaction_timestamp", "statement_timestamp", "current_timestamp", "current_date",
                "current_setting", "to_jsonb", "jsonb_build_object", "json_build_object", "array", "lower", "upper",
                "concat", "make_interval", "to_timestamp", "date_trunc", "coalesce", "abs", "length"}
# rollout's own functions that are STABLE (orchestrator/publish.py), known by their qualified name
ROLLOUT_STABLE = {"rollout.actor"}


@dataclass
class _Facts:
    """The facts of an ALTER TABLE's subcommands, gathered into one Effect."""

    target: str
    inh: bool
    labels: list[str] = field(default_factory=list)
    locks: list[RelationLock] = field(default_factory=list)
    expand: list[Expand] = field(default_factory=list)
    flags: dict = field(default_factory=lambda: {"scans": False, "rewrites": False, "loses_data": False,
                                                 "breaks_old_readers": False, "assumed": False})
    long_running_ok: bool = True
    transactional: bool = True
    notes: list[str] = field(default_factory=list)
    effect: dict = field(default_factory=lambda: {"columns": [], "sets_not_null": [], "not_null_checks": [],
                                                  "validates": [], "retypes": [], "volatile_candidates": [],
                                                  "column_types": [], "rewrite_unless": []})

    def take(self, sub: Sub, lock: Lock | None = None, *, recurses: bool | None = None) -> None:
        lock = lock or sub.lock
        self.labels.append(sub.label)
        self.locks.append(RelationLock(self.target, lock))
        if (sub.recurses if recurses is None else recurses) and self.inh:
            self.expand.append(Expand("children", self.target, lock))
        for name in ("scans", "rewrites", "loses_data", "breaks_old_readers"):
            self.flags[name] |= getattr(sub, name)
        self.long_running_ok &= sub.long_running_ok
        if sub.note:
            self.notes.append(sub.note)

    def other(self, name: str, lock: Lock, why: str) -> None:
        self.locks.append(RelationLock(name, lock, why))


def analyze(node, text: str) -> Effect:
    facts = _Facts(relation(node.relation), bool(node.relation.inh))
    for cmd in node.cmds:
        inspector = _INSPECTORS.get(cmd.subtype)
        if inspector is not None:
            inspector(facts, cmd)
            continue
        sub = SUBCOMMANDS.get(cmd.subtype, _FALLBACK)
        if sub is _FALLBACK:
            facts.flags["assumed"] = True
            facts.notes.append(f"{cmd.subtype.name.removeprefix('AT_')} is not in rollout's table: "
                               "ACCESS EXCLUSIVE is assumed")
        facts.take(sub)
        if cmd.name and cmd.subtype in (AT.AT_DropColumn, AT.AT_SetNotNull, AT.AT_DropNotNull, AT.AT_ColumnDefault):
            facts.effect["columns"].append(cmd.name)
        if cmd.subtype == AT.AT_SetNotNull:
            facts.effect["sets_not_null"].append((facts.target, cmd.name))
        if cmd.subtype == AT.AT_ValidateConstraint:
            facts.effect["validates"].append(cmd.name)
        if cmd.subtype == AT.AT_DropConstraint and not facts.inh:  # ONLY: the children keep it as their own
            facts.expand.append(Expand("children", facts.target, _AE))
        if cmd.subtype == AT.AT_DropConstraint:
            facts.expand += [Expand("constraint_other_table", facts.target, _AE, (cmd.name,)),
                             Expand("constraint_index", facts.target, _AE, (cmd.name,))]
            if cmd.behavior == enums.DropBehavior.DROP_CASCADE:
                facts.expand.append(Expand("constraint_referencing", facts.target, _AE, (cmd.name,)))
        if cmd.subtype == AT.AT_ValidateConstraint:
            facts.expand.append(Expand("constraint_other_table", facts.target, _RS, (cmd.name,)))
        if cmd.subtype == AT.AT_AlterConstraint and getattr(cmd.def_, "alterEnforceability", False):
            lock = _SRE if getattr(cmd.def_, "is_enforced", True) else _AE  # the other side's triggers change
            facts.expand.append(Expand("constraint_other_table", facts.target, lock, (cmd.def_.conname,)))
        if cmd.subtype in (AT.AT_DropIdentity, AT.AT_SetIdentity):
            lock = _AE if cmd.subtype == AT.AT_DropIdentity else _SRE
            facts.expand.append(Expand("identity_sequence", facts.target, lock, (cmd.name,)))
        if cmd.subtype == AT.AT_ColumnDefault and cmd.def_ is not None:
            facts.locks += _default_sequences(cmd.def_)
        if cmd.subtype in (AT.AT_ClusterOn,):
            facts.expand.append(Expand("sibling_index", facts.target, _SUE, (cmd.name,)))
        if cmd.subtype == AT.AT_ReplicaIdentity and getattr(cmd.def_, "name", None):
            facts.expand.append(Expand("sibling_index", facts.target, _S, (cmd.def_.name,)))
        if cmd.subtype in (AT.AT_SetLogged, AT.AT_SetUnLogged):  # its own sequences follow
            facts.expand.append(Expand("owned_sequences", facts.target, _AE))
        if cmd.subtype in _ONE_TRIGGER and cmd.name:  # a row trigger's copies on the partitions
            facts.expand.append(Expand("trigger_clones", facts.target, _SRE, (cmd.name,)))
        if cmd.subtype == AT.AT_ChangeOwner:  # the table's own sequences change owner with it
            facts.expand.append(Expand("owned_sequences", facts.target, _AE))
        if cmd.subtype == AT.AT_DropColumn:
            facts.expand.append(Expand("column_foreign_keys_out", facts.target, _AE, (cmd.name,)))
            if not facts.inh:  # ONLY: the children keep the column as their own
                facts.expand.append(Expand("children", facts.target, _AE))
            if cmd.behavior == enums.DropBehavior.DROP_CASCADE:
                facts.expand.append(Expand("column_dependents", facts.target, _AE, (cmd.name,)))
        if cmd.subtype in _SAME_STORAGE:
            facts.effect["rewrite_unless"].append(_SAME_STORAGE[cmd.subtype](cmd))
    kind = ("ALTER " + enums.ObjectType(node.objtype).name.removeprefix("OBJECT_").replace("_", " ") + " "
            + ", ".join(dict.fromkeys(facts.labels)))
    if node.objtype == enums.ObjectType.OBJECT_TYPE:  # a composite type: its typed tables change with CASCADE
        facts.expand.append(Expand("typed_tables", facts.target, _AE))
        # its typed tables are rewritten with CASCADE, unless the change keeps the stored values (judged
        # on the composite type's own attribute, as for a table's column)
        cascade = any(cmd.behavior == enums.DropBehavior.DROP_CASCADE for cmd in node.cmds)
        facts.flags["rewrites"] = facts.flags["rewrites"] and cascade
    elif node.objtype != enums.ObjectType.OBJECT_TABLE and node.objtype != enums.ObjectType.OBJECT_MATVIEW:
        facts.flags["rewrites"] = False  # an index or a sequence is no table to rewrite
    return Effect(text, kind, locks=tuple(facts.locks), expand=tuple(facts.expand),
                  long_running_ok=facts.long_running_ok and not facts.flags["rewrites"],
                  transactional=facts.transactional, notes=tuple(dict.fromkeys(facts.notes)),
                  **facts.flags, **{k: tuple(v) for k, v in facts.effect.items()})


def _add_column(facts: _Facts, cmd) -> None:
    column = cmd.def_
    constraints = column.constraints or ()
    default = next((c.raw_expr for c in constraints if c.contype == C.CONSTR_DEFAULT), None)
    generated = any(c.contype == C.CONSTR_GENERATED and getattr(c, "generated_kind", "s") != "v" for c in constraints)
    identity = any(c.contype == C.CONSTR_IDENTITY for c in constraints)
    serial = column.typeName is not None and column.typeName.names[-1].sval.lower() in (
        "serial", "bigserial", "smallserial", "serial4", "serial8", "serial2")
    functions = _functions(default)
    volatile = [f for f in functions if f in VOLATILE]
    unknown = [f for f in functions if f not in VOLATILE and f not in NOT_VOLATILE]
    rewrites = bool(volatile) or generated or identity or serial
    facts.take(Sub("ADD COLUMN", _AE, scans=rewrites, rewrites=rewrites))
    facts.long_running_ok = False
    facts.effect["columns"].append(column.colname)
    if column.typeName is not None and not rewrites:
        facts.effect["column_types"].append(RawStream()(column.typeName))
    if default is not None:
        facts.locks += _default_sequences(default)
    if unknown and not rewrites:
        facts.effect["volatile_candidates"].extend(unknown)
    if volatile or serial or identity:
        facts.notes.append("a volatile DEFAULT (" + ", ".join(f"{f}()" for f in volatile or ["nextval"]) +
                           ") rewrites the table: add the column without it, set the default, then backfill")
    if generated:
        facts.notes.append("a STORED generated column is computed for every row: the table is rewritten")
    if any(c.contype == C.CONSTR_NOTNULL for c in constraints) and default is None and not (identity or serial):
        facts.notes.append("NOT NULL without a DEFAULT fails on a table that has rows")
    for constraint in constraints:
        if constraint.contype == C.CONSTR_FOREIGN:
            facts.other(relation(constraint.pktable), _SRE, "foreign key")
            facts.expand.append(Expand("partitions", relation(constraint.pktable), _SRE))
            facts.flags["scans"] = facts.flags["scans"] or default is not None
        elif constraint.contype in (C.CONSTR_UNIQUE, C.CONSTR_PRIMARY):
            facts.flags["scans"] = True
            facts.notes.append("builds a unique index under ACCESS EXCLUSIVE")
        elif constraint.contype == C.CONSTR_CHECK and default is not None:
            facts.flags["scans"] = True


def _add_constraint(facts: _Facts, cmd) -> None:
    constraint = cmd.def_
    kind = constraint.contype
    valid = not constraint.skip_validation
    label = {C.CONSTR_FOREIGN: "ADD FOREIGN KEY", C.CONSTR_CHECK: "ADD CHECK", C.CONSTR_UNIQUE: "ADD UNIQUE",
             C.CONSTR_PRIMARY: "ADD PRIMARY KEY", C.CONSTR_EXCLUSION: "ADD EXCLUDE",
             C.CONSTR_NOTNULL: "ADD NOT NULL"}.get(kind, "ADD CONSTRAINT") + ("" if valid else " NOT VALID")
    if kind == C.CONSTR_FOREIGN:  # partitions get the key; inheritance children too since PostgreSQL 16
        facts.take(Sub(label, _SRE, scans=valid), recurses=False)
        if facts.inh:
            facts.expand += [Expand("partitions", facts.target, _SRE), Expand("inheritors", facts.target, _SRE, since=16)]
        facts.other(relation(constraint.pktable), _SRE, "foreign key")
        facts.expand.append(Expand("partitions", relation(constraint.pktable), _SRE))
        if valid:
            facts.notes.append("checks every row against the referenced table while writes wait: add it NOT VALID, "
                               "then VALIDATE")
    elif kind in (C.CONSTR_UNIQUE, C.CONSTR_PRIMARY, C.CONSTR_EXCLUSION):
        builds = not constraint.indexname
        # a primary key sets NOT NULL on the children too (ACCESS EXCLUSIVE); a unique key's index is
        # built on each partition under SHARE, and since PostgreSQL 16 they are locked like their parent
        facts.take(Sub(label + (" USING INDEX" if not builds else ""), _AE, scans=builds or kind == C.CONSTR_PRIMARY),
                   recurses=kind == C.CONSTR_PRIMARY)
        if facts.inh and kind != C.CONSTR_PRIMARY:
            facts.expand += [Expand("partitions", facts.target, _S), Expand("partitions", facts.target, _AE, since=16)]
        if not builds:  # the index is renamed to the constraint's name (SHARE UPDATE EXCLUSIVE), or just read
            renamed = constraint.conname not in (None, constraint.indexname)
            facts.expand.append(Expand("sibling_index", facts.target, _SUE if renamed else _A, (constraint.indexname,)))
        if builds:
            facts.notes.append("builds its index under ACCESS EXCLUSIVE: build a unique index CONCURRENTLY first, "
                               "then ADD ... USING INDEX")
    else:
        facts.take(Sub(label, _AE, scans=valid), recurses=not constraint.is_no_inherit)
        if constraint.is_no_inherit and facts.inh:  # checked against the children since PostgreSQL 16
            facts.expand.append(Expand("children", facts.target, _AE, since=16))
        test = constraint.raw_expr
        if (kind == C.CONSTR_CHECK and type(test).__name__ == "NullTest"
                and test.nulltesttype == enums.NullTestType.IS_NOT_NULL and type(test.arg).__name__ == "ColumnRef"):
            name = constraint.conname or ""
            facts.effect["not_null_checks"].append((name, facts.target, test.arg.fields[-1].sval))
            if valid and name:
                facts.effect["validates"].append(name)
    facts.long_running_ok = False


def _alter_type(facts: _Facts, cmd) -> None:
    definition = cmd.def_
    using = definition.raw_default
    changes_value = using is not None and not _is_plain_cast_of(using, cmd.name)
    facts.take(SUBCOMMANDS[AT.AT_AlterColumnType])
    facts.expand += [Expand("column_foreign_keys", facts.target, _AE, (cmd.name,)),
                     Expand("identity_sequence", facts.target, _SRE, (cmd.name,)),  # its type follows
                     Expand("column_default_sequences", facts.target, _A, (cmd.name,), since=16)]
    facts.effect["columns"].append(cmd.name)
    facts.effect["retypes"].append((cmd.name, RawStream()(definition.typeName), changes_value))
    facts.flags["breaks_old_readers"] = True


def _is_plain_cast_of(expression, column: str) -> bool:
    """USING col or USING col::type: the value itself is unchanged."""
    while type(expression).__name__ == "TypeCast":
        expression = expression.arg
    return type(expression).__name__ == "ColumnRef" and getattr(expression.fields[-1], "sval", None) == column


def _rel_options(facts: _Facts, cmd) -> None:
    names = [(f"{o.defnamespace}." if o.defnamespace else "") + o.defname for o in cmd.def_]
    light = all(n in LIGHT_OPTIONS or n.startswith(LIGHT_OPTION_PREFIXES) for n in names)
    label = "SET" if cmd.subtype == AT.AT_SetRelOptions else "RESET"
    facts.take(Sub(f"{label} ({', '.join(names)})", _SUE if light else _AE, recurses=False))


def _attach(facts: _Facts, cmd) -> None:
    partition = relation(cmd.def_.name)
    is_index = facts.target and cmd.def_.bound is None
    if is_index:  # ALTER INDEX parent ATTACH PARTITION child
        facts.take(Sub("ATTACH PARTITION (index)", _SUE, recurses=False))
        facts.other(partition, _AE, "attached index")
        facts.expand += [Expand("index_table", partition, _A), Expand("index_table", facts.target, _A)]
        return
    facts.take(SUBCOMMANDS[AT.AT_AttachPartition], recurses=False)
    facts.other(partition, _AE, "attached partition")
    facts.expand += [Expand("default_partition", facts.target, _AE), *partition_keys(facts.target, _SRE),
                     Expand("children", partition, _AE), Expand("ancestors", facts.target, _A),
                     # a key of its own that matches the parent's is merged: its triggers go
                     Expand("foreign_keys_out_all", partition, _AE)]
    facts.flags["scans"] = True
    facts.notes.append("scans the new partition to check its rows fit the bounds, unless a validated CHECK "
                       "constraint already proves it")


def _detach(facts: _Facts, cmd) -> None:
    concurrent = cmd.def_.concurrent
    lock = _SUE if concurrent else _AE
    facts.take(Sub("DETACH PARTITION" + (" CONCURRENTLY" if concurrent else ""), lock, recurses=False,
                   breaks_old_readers=True))
    facts.other(relation(cmd.def_.name), _AE, "detached partition")
    if concurrent:
        facts.transactional = False
    facts.expand += [Expand("default_partition", facts.target, lock), *partition_keys(facts.target, _AE),
                     Expand("children", relation(cmd.def_.name), _AE)]


def _finalize(facts: _Facts, cmd) -> None:
    facts.take(SUBCOMMANDS[AT.AT_DetachPartitionFinalize], recurses=False)
    facts.other(relation(cmd.def_.name), _AE, "detached partition")


def partition_keys(parent: str, referencing: Lock) -> list[Expand]:
    """A partition gets its own share of its parent's foreign keys: triggers change on the tables
    the parent's keys reference (SHARE ROW EXCLUSIVE) and on the tables whose keys reference the
    parent (`referencing`: ACCESS EXCLUSIVE when a detach takes the share away)."""
    return [Expand("foreign_keys_out_any", parent, _SRE), Expand("foreign_keys_in_direct", parent, referencing)]


def _add_inherit(facts: _Facts, cmd) -> None:
    facts.take(SUBCOMMANDS[cmd.subtype])
    facts.other(relation(cmd.def_), _SUE if cmd.subtype == AT.AT_AddInherit else _A, "parent")


def _default_sequences(expression) -> list[RelationLock]:
    """A DEFAULT nextval('s') records a dependency on s, reading it under ACCESS SHARE (since
    PostgreSQL 16)."""
    from .statements import sequence_calls  # statements imports this module
    return [replace(r, since=16) for r in sequence_calls(expression, _A)[0]]


_SAME_STORAGE = {  # subcommands that rewrite only when they change something
    AT.AT_SetAccessMethod: lambda cmd: ("access_method", cmd.name or "heap"),
    AT.AT_SetTableSpace: lambda cmd: ("tablespace", cmd.name),
    AT.AT_SetLogged: lambda cmd: ("persistence", "p"),
    AT.AT_SetUnLogged: lambda cmd: ("persistence", "u"),
}


def _functions(expression) -> list[str]:
    if expression is None:
        return []
    names: list[str] = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors, node):
            names.append(node.funcname[-1].sval.lower())

        def visit_SQLValueFunction(self, ancestors, node):
            names.append("now")

    Calls()(expression)
    return names


_INSPECTORS = {
    AT.AT_AddColumn: _add_column,
    AT.AT_AddConstraint: _add_constraint,
    AT.AT_AlterColumnType: _alter_type,
    AT.AT_SetRelOptions: _rel_options,
    AT.AT_ResetRelOptions: _rel_options,
    AT.AT_AttachPartition: _attach,
    AT.AT_DetachPartition: _detach,
    AT.AT_DetachPartitionFinalize: _finalize,
    AT.AT_AddInherit: _add_inherit,
    AT.AT_DropInherit: _add_inherit,
}
