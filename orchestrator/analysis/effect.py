"""The facts about one statement, as values every consumer reads (preview, lint, apply)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .lockmode import Lock


@dataclass(frozen=True)
class RelationLock:
    """A lock the statement takes on one relation, and why (when it is not the obvious target)."""

    relation: str  # as the statement writes it; the catalog pass makes it schema-qualified
    lock: Lock
    why: str = ""
    only_if: tuple[str, str] | None = None  # (trigger|policy|rule|plain_index, name): taken only if it exists
    since: int = 0  # the first PostgreSQL major version that takes it (measured on 15 and 18; 16 and 17 get it)

    def as_json(self) -> dict:
        return {"relation": self.relation, "lock": self.lock.label, "blocks": self.lock.blocks, "why": self.why}


@dataclass(frozen=True)
class Effect:
    """What a statement does: the locks it takes, whether it scans or rewrites, what it breaks.

    Consumers ask for facts (`loses_data`, `builds_index`, `adds_enum_value`...), never for a
    statement's kind by name: `kind` is a label for people."""

    sql: str
    kind: str
    locks: tuple[RelationLock, ...] = ()  # the statement's own target first
    scans: bool = False  # reads every row of a table while holding its lock
    rewrites: bool = False  # writes a new copy of a table
    transactional: bool = True  # may run inside a transaction block
    long_running_ok: bool = False  # meant to run long without blocking: exempt from statement_timeout
    loses_data: bool = False  # drops or empties data: back up first
    breaks_old_readers: bool = False  # the application written for the old schema fails on it
    row_locks: bool = False  # locks the rows it changes (or selects FOR UPDATE) until commit
    changes_rows: bool = False  # UPDATE, DELETE, MERGE: PostgreSQL can estimate how many
    unbounded: bool = False  # DML with no WHERE: every row
    planned: bool = False  # SELECT, UPDATE, DELETE: the planner leaves out the partitions its conditions exclude
    inserted: tuple | None = None  # INSERT ... VALUES of constants: (columns, rows of SQL literals), for routing
    on_conflict: tuple | None = None  # ON CONFLICT's arbiter: ("columns", names), ("constraint", (name,)) or ("any", ())
    assumed: bool = False  # not in the table of known statements: the strongest lock is assumed
    controls_transaction: bool = False  # BEGIN, COMMIT, ROLLBACK, SAVEPOINT
    columns: tuple[str, ...] = ()  # columns it adds, changes, drops or renames
    builds_index: bool = False
    index: str | None = None  # the name of the index it builds, when the statement gives one
    adds_enum_value: bool = False
    sets_not_null: tuple[tuple[str, str], ...] = ()  # (table, column)
    not_null_checks: tuple[tuple[str, str, str], ...] = ()  # CHECK (col IS NOT NULL) added: (name, table, column)
    validates: tuple[str, ...] = ()  # constraints it validates
    defines: tuple[str, ...] = ()  # relations it creates or renames to (bare names)
    creates_table: str | None = None  # a table it creates: invisible to other sessions until commit
    functions_defined: tuple[str, ...] = ()
    functions_dropped: tuple[str, ...] = ()
    retypes: tuple[tuple[str, str, bool], ...] = ()  # (column, new type as SQL, USING changes the value)
    volatile_candidates: tuple[str, ...] = ()  # functions in an ADD COLUMN default the catalog must judge
    column_types: tuple[str, ...] = ()  # types of added columns: a domain with constraints rewrites
    rewrite_unless: tuple[tuple[str, str], ...] = ()  # (access_method|tablespace|persistence, value): no-op when already so
    expand: tuple[str, ...] = ()  # what the catalog pass adds (see catalog.py)
    notes: tuple[str, ...] = ()
    line: int = 1  # first line of the statement within its file

    @property
    def table(self) -> str | None:
        """The statement's own target."""
        return self.locks[0].relation if self.locks else None

    @property
    def lock(self) -> Lock | None:
        """The strongest lock it takes on any relation."""
        return Lock.combine([r.lock for r in self.locks])

    @property
    def other_tables(self) -> tuple[str, ...]:
        return tuple(r.relation for r in self.locks[1:])

    def lock_on(self, relation: str) -> Lock | None:
        return Lock.combine([r.lock for r in self.locks if r.relation == relation])

    def with_(self, **changes) -> Effect:
        return replace(self, **changes)

    def as_json(self) -> dict:
        lock = self.lock
        return {"sql": self.sql, "kind": self.kind, "line": self.line, "table": self.table,
                "lock": lock.label if lock else None, "blocks": lock.blocks if lock else "nothing",
                "locks": [r.as_json() for r in self.locks], "lock_assumed": self.assumed,
                "scans": self.scans, "rewrites": self.rewrites, "transactional": self.transactional,
                "exempt_from_statement_timeout": self.long_running_ok, "loses_data": self.loses_data,
                "breaks_old_readers": self.breaks_old_readers, "row_locks": self.row_locks,
                "unbounded": self.unbounded, "notes": list(self.notes)}
