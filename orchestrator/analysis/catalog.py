"""The second pass: what only the live database knows about a statement.

`resolve(conn, effect)` answers the static pass's questions (`Effect.expand`) from the catalog
and returns the statement's full facts: every relation it locks, named schema.relation as
quote_ident spells them, and whether it really rewrites (a type change PostgreSQL performs
without one, a default whose function is not volatile). Only SELECTs on the catalog: it runs
inside the preview's READ ONLY transaction. A relation that does not exist yet (made by an
earlier statement of the same step) keeps the name the statement gives it.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from pglast import parse_sql

from .effect import Effect, RelationLock
from .lockmode import Lock
from .names import quote_ident

_RELATION = """
    SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind
      FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
"""


class Catalog:
    """The catalog as one preview sees it: relation names are looked up once."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self._relations: dict[str, tuple[int, str] | None] = {}

    def relation(self, name: str) -> tuple[int, str] | None:
        """(oid, schema.relation as quote_ident spells it) of a relation name, or None."""
        if name not in self._relations:
            try:
                with self.conn.transaction():  # a savepoint: a name PostgreSQL cannot read ends nothing
                    row = self.conn.execute(_RELATION + " WHERE c.oid = to_regclass(%s)", (name,)).fetchone()
            except psycopg.Error:
                row = None
            self._relations[name] = (row[0], row[1]) if row else None
        return self._relations[name]

    def oid(self, name: str) -> int | None:
        found = self.relation(name)
        return found[0] if found else None

    def canonical(self, name: str) -> str:
        found = self.relation(name)
        return found[1] if found else name

    def resolve(self, effect: Effect) -> Effect:
        """The effect with its locks completed and named by the catalog, and its rewrites judged."""
        conn = self.conn
        locks = [RelationLock(self.canonical(r.relation), r.lock, r.why) for r in effect.locks]
        for question in effect.expand:
            oid = self.oid(question.relation)
            if oid is None and question.what not in _BY_NAME:
                continue
            for name, lock, why in QUESTIONS[question.what](conn, oid or question.relation, question):
                locks.append(RelationLock(name, lock, why))
        merged: dict[str, RelationLock] = {}
        for r in locks:  # one entry per relation, with the mode that blocks all its modes block
            if r.relation in merged:
                old = merged[r.relation]
                r = RelationLock(r.relation, Lock.combine([old.lock, r.lock]), old.why or r.why)
            merged[r.relation] = r
        changes = {"locks": tuple(merged.values())}
        table = self.oid(effect.table) if effect.table else None
        if effect.retypes and table is not None:
            if not any(_retype_rewrites(conn, table, *retype) for retype in effect.retypes):
                changes.update(rewrites=False, scans=False, notes=effect.notes + (
                    "no rewrite: PostgreSQL keeps the stored values for this type change (binary coercible, or a "
                    "wider length or precision)",))
        if effect.volatile_candidates and not effect.rewrites and _any_volatile(conn, effect.volatile_candidates):
            changes.update(rewrites=True, scans=True, notes=effect.notes + (
                "its DEFAULT calls a volatile function: every existing row gets its own value, so the table is "
                "rewritten",))
        if effect.sets_not_null and effect.scans and all(
                self.oid(t) is not None and _proven_not_null(conn, self.oid(t), c) for t, c in effect.sets_not_null):
            changes.update(scans=False, notes=effect.notes + ("no scan: a validated CHECK (column IS NOT NULL) "
                                                              "proves it",))
        return effect.with_(**changes)


def resolve(conn: psycopg.Connection, effect: Effect) -> Effect:
    """One statement's full facts (see Catalog.resolve), for a caller with no catalog of its own."""
    return Catalog(conn).resolve(effect)


def _names(conn, query: str, params, lock: Lock, why: str) -> list[tuple[str, Lock, str]]:
    rows = conn.execute(f"{_RELATION} WHERE c.oid IN ({query})", params).fetchall()
    return [(row[1], lock, why) for row in rows]


def _children(conn, oid, q):
    return _names(conn, """
        WITH RECURSIVE tree(oid) AS (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s
                                     UNION SELECT i.inhrelid FROM pg_inherits AS i JOIN tree ON i.inhparent = tree.oid)
        SELECT oid FROM tree""", (oid,), q.lock, "partition or child")


def _view_tables(conn, oid, q):
    return _names(conn, """
        WITH RECURSIVE used(oid) AS (
            SELECT d.refobjid FROM pg_rewrite AS r
              JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
             WHERE r.ev_class = %(oid)s AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> %(oid)s
            UNION
            SELECT d.refobjid FROM used JOIN pg_rewrite AS r ON r.ev_class = used.oid
              JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
             WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> used.oid)
        SELECT oid FROM used WHERE (SELECT relkind FROM pg_class WHERE oid = %(oid)s) IN ('v', 'm')""",
                  {"oid": oid}, q.lock, "behind the view")


def _keys_touch(columns) -> str:
    """SQL that is true when an FK's columns (`keys`, attnums of `rel`) include one of %(cols)s."""
    return ("(%(cols)s::text[] IS NULL OR EXISTS (SELECT 1 FROM pg_attribute AS a WHERE a.attrelid = rel "
            "AND a.attnum = ANY (keys) AND a.attname = ANY (%(cols)s::text[])))")


def _foreign_keys_out(conn, oid, q):
    """Tables the statement's rows must be checked against (the referenced side)."""
    return _names(conn, f"""
        SELECT confrelid FROM (SELECT confrelid, conrelid AS rel, conkey AS keys FROM pg_constraint
                                WHERE contype = 'f' AND conrelid = %(oid)s) AS fk WHERE {_keys_touch(q.columns)}""",
                  {"oid": oid, "cols": list(q.columns) if q.columns is not None else None}, q.lock, "foreign key check")


def _foreign_keys_in(conn, oid, q):
    """Tables whose rows reference the statement's rows: checked (ROW SHARE) or changed by the
    key's ON DELETE / ON UPDATE action (ROW EXCLUSIVE)."""
    rows = conn.execute(f"""
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), bool_or(fk.confdeltype IN ('c', 'n', 'd')
               OR fk.confupdtype IN ('c', 'n', 'd'))
          FROM (SELECT conrelid, confrelid AS rel, confkey AS keys, confdeltype, confupdtype FROM pg_constraint
                 WHERE contype = 'f' AND confrelid = %(oid)s) AS fk
          JOIN pg_class AS c ON c.oid = fk.conrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE {_keys_touch(q.columns)} GROUP BY 1""",
                        {"oid": oid, "cols": list(q.columns) if q.columns is not None else None}).fetchall()
    return [(name, Lock.ROW_EXCLUSIVE if acts else q.lock, "references it") for name, acts in rows]


def _foreign_keys_out_all(conn, oid, q):
    return _names(conn, "SELECT confrelid FROM pg_constraint WHERE contype = 'f' AND conrelid = %s AND confrelid <> %s",
                  (oid, oid), q.lock, "its foreign key's trigger is dropped")


def _foreign_keys_in_all(conn, oid, q):
    return _names(conn, """
        WITH RECURSIVE refs(oid) AS (SELECT conrelid FROM pg_constraint WHERE contype = 'f' AND confrelid = %s
                                     UNION SELECT c.conrelid FROM pg_constraint AS c JOIN refs ON c.confrelid = refs.oid
                                      WHERE c.contype = 'f')
        SELECT oid FROM refs WHERE oid <> %s""", (oid, oid), q.lock, "references it")


def _column_sequences(conn, oid, q):
    return _names(conn, """
        SELECT d.refobjid FROM pg_attrdef AS ad
          JOIN pg_depend AS d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
         WHERE ad.adrelid = %(oid)s AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> %(oid)s
        UNION
        SELECT d.objid FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %(oid)s
           AND d.deptype = 'i' AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S'""",
                  {"oid": oid}, q.lock, "column default's sequence")


def _owned_sequences(conn, oid, q):
    return _names(conn, """
        SELECT d.objid FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %s
           AND d.deptype IN ('a', 'i') AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S'""",
                  (oid,), q.lock, "owned sequence")


def _default_partition(conn, oid, q):
    return _names(conn, "SELECT partdefid FROM pg_partitioned_table WHERE partrelid = %s AND partdefid <> 0", (oid,),
                  q.lock, "default partition (scanned for rows of the new bounds)")


def _index_table(conn, oid, q):
    return _names(conn, "SELECT indrelid FROM pg_index WHERE indexrelid = %s", (oid,), q.lock, "the index's table")


def _indexes(conn, oid, q):
    return _names(conn, "SELECT indexrelid FROM pg_index WHERE indrelid = %s", (oid,), q.lock, "its index")


def _dependents(conn, oid, q):
    """Relations dropped with it by CASCADE: views and rules over it, tables whose keys point to it."""
    return _names(conn, """
        WITH RECURSIVE deps(oid) AS (
            SELECT %(oid)s::oid
            UNION
            SELECT coalesce(r.ev_class, fk.conrelid) FROM deps
              JOIN pg_depend AS d ON d.refobjid = deps.oid AND d.refclassid = 'pg_class'::regclass
              LEFT JOIN pg_rewrite AS r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
              LEFT JOIN pg_constraint AS fk ON d.classid = 'pg_constraint'::regclass AND fk.oid = d.objid
             WHERE coalesce(r.ev_class, fk.conrelid) IS NOT NULL)
        SELECT oid FROM deps WHERE oid <> %(oid)s""", {"oid": oid}, q.lock, "dropped with it (CASCADE)")


def _function_dependents(conn, name, q):
    return _names(conn, """
        SELECT t.tgrelid FROM pg_trigger AS t WHERE t.tgfoid IN (SELECT oid FROM pg_proc WHERE proname = %(name)s)
        UNION
        SELECT ad.adrelid FROM pg_attrdef AS ad JOIN pg_depend AS d ON d.classid = 'pg_attrdef'::regclass
           AND d.objid = ad.oid AND d.refclassid = 'pg_proc'::regclass
         WHERE d.refobjid IN (SELECT oid FROM pg_proc WHERE proname = %(name)s)
        UNION
        SELECT r.ev_class FROM pg_rewrite AS r JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass
           AND d.objid = r.oid AND d.refclassid = 'pg_proc'::regclass
         WHERE d.refobjid IN (SELECT oid FROM pg_proc WHERE proname = %(name)s)""",
                  {"name": name.split(".")[-1].strip('"')}, q.lock, "uses the function (CASCADE)")


def _type_users(conn, name, q):
    return _names(conn, """
        SELECT a.attrelid FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm', 'f')
           AND (a.atttypid = to_regtype(%(name)s)
                OR a.atttypid IN (SELECT typarray FROM pg_type WHERE oid = to_regtype(%(name)s))
                OR a.atttypid IN (SELECT oid FROM pg_type WHERE typbasetype = to_regtype(%(name)s)))""",
                  {"name": name}, q.lock, "has a column of the type")


def _schema_relations(conn, name, q):
    return _names(conn, """
        SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')""", (name,), q.lock, "in the schema")


def _statistics_table(conn, name, q):
    return _names(conn, "SELECT stxrelid FROM pg_statistic_ext WHERE stxname = %s",
                  (name.split(".")[-1].strip('"'),), q.lock, "the statistics' table")


def _constraint_other_table(conn, oid, q):
    return _names(conn, "SELECT confrelid FROM pg_constraint WHERE contype = 'f' AND conrelid = %s AND conname = ANY (%s) "
                        "AND confrelid <> %s", (oid, list(q.columns or ()), oid), q.lock,
                  "the foreign key's referenced table")


QUESTIONS: dict[str, Callable] = {
    "children": _children, "view_tables": _view_tables, "foreign_keys_out": _foreign_keys_out,
    "foreign_keys_in": _foreign_keys_in, "foreign_keys_out_all": _foreign_keys_out_all,
    "foreign_keys_in_all": _foreign_keys_in_all, "column_sequences": _column_sequences,
    "owned_sequences": _owned_sequences, "default_partition": _default_partition, "index_table": _index_table,
    "indexes": _indexes, "dependents": _dependents, "function_dependents": _function_dependents,
    "type_users": _type_users, "schema_relations": _schema_relations, "statistics_table": _statistics_table,
    "constraint_other_table": _constraint_other_table,
}
# Questions about objects that are not relations: they get the name, not an oid.
_BY_NAME = {"function_dependents", "type_users", "schema_relations", "statistics_table"}


def _any_volatile(conn, functions: tuple[str, ...]) -> bool:
    row = conn.execute("SELECT bool_or(provolatile = 'v') FROM pg_proc WHERE proname = ANY (%s)",
                       (list(functions),)).fetchone()
    return bool(row[0])


def _proven_not_null(conn, oid: int, column: str) -> bool:
    return conn.execute("""
        SELECT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conrelid = %s AND c.contype = 'c' AND c.convalidated
                          AND pg_get_expr(c.conbin, c.conrelid) IN (%s, %s))""",
                        (oid, f"({quote_ident(column)} IS NOT NULL)", f"{quote_ident(column)} IS NOT NULL")).fetchone()[0]


# Types whose length, precision or scale PostgreSQL can widen without touching stored values
# (their typmod support functions: varchar_support, numeric_support, varbit_support, ...).
_WIDENABLE = {"varchar", "numeric", "varbit", "timestamp", "timestamptz", "time", "timetz", "interval"}


def _retype_rewrites(conn, oid: int, column: str, new_type: str, changes_value: bool) -> bool:
    """Whether ALTER COLUMN ... TYPE rewrites the table, judged the way PostgreSQL judges it
    (ATColumnChangeRequiresRewrite): unless the USING changes the value, no rewrite when the old
    type is binary coercible to the new one and the new typmod does not constrain it further."""
    if changes_value:
        return True
    try:
        type_name = parse_sql(f"SELECT NULL::{new_type}")[0].stmt.targetList[0].val.typeName
        with conn.transaction():  # a savepoint: an unknown type must not end the preview's transaction
            row = conn.execute("""
            SELECT a.atttypid, a.atttypmod, t.oid, t.typname, old.typname,
                   EXISTS (SELECT 1 FROM pg_cast WHERE castsource = a.atttypid AND casttarget = t.oid
                              AND castmethod = 'b'),
                   extract(timezone FROM now()) = 0, current_setting('server_version_num')::int
              FROM pg_attribute AS a, pg_type AS t, pg_type AS old
             WHERE a.attrelid = %s AND a.attname = %s AND t.oid = to_regtype(%s) AND old.oid = a.atttypid""",
                               (oid, column, new_type)).fetchone()
    except (psycopg.Error, Exception):  # noqa: BLE001 - an unknown type or column: assume the worst
        return True
    if row is None:
        return True
    old_type, old_mod, new_oid, new_name, old_name, binary, utc, version = row
    new_mod = _typmod(new_name, type_name.typmods or ())
    if new_mod is None:
        return True
    if old_type != new_oid:
        if {old_name, new_name} == {"timestamp", "timestamptz"} and utc and version >= 120000:
            return new_mod not in (-1, old_mod) and not (old_mod != -1 and new_mod >= old_mod)
        if not binary:
            return True
        return new_mod != -1 and not (new_name in _WIDENABLE and old_mod != -1 and _wider(new_name, old_mod, new_mod))
    if new_mod in (-1, old_mod):
        return False if new_mod == old_mod or new_name in _WIDENABLE else True
    return not (new_name in _WIDENABLE and old_mod != -1 and _wider(new_name, old_mod, new_mod))


def _wider(type_name: str, old: int, new: int) -> bool:
    if type_name == "numeric":  # precision in the high 16 bits, scale in the low: same scale, more digits
        return ((old - 4) & 0xFFFF) == ((new - 4) & 0xFFFF) and (new - 4) >> 16 >= (old - 4) >> 16
    return new >= old


def _typmod(type_name: str, modifiers) -> int | None:
    """The typmod PostgreSQL stores for a type written with these modifiers (-1 for none)."""
    values = [getattr(m.val, "ival", None) for m in modifiers]
    if any(v is None for v in values):
        return None
    if not values:
        return -1
    if type_name in ("varchar", "bpchar"):
        return values[0] + 4
    if type_name == "numeric":
        return ((values[0] << 16) | (values[1] if len(values) > 1 else 0)) + 4
    if type_name in ("timestamp", "timestamptz", "time", "timetz", "bit", "varbit"):
        return values[0]
    return None
