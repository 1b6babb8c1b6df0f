"""The second pass: what only the live database knows about a statement.

`resolve(conn, effect)` answers the static pass's questions (`Effect.expand`) from the catalog
and returns the statement's full facts: every relation it locks, named schema.relation as
quote_ident spells them, and whether it really rewrites (a type change PostgreSQL performs
without one, a default whose function is not volatile). Only SELECTs on the catalog: it runs
inside the preview's READ ONLY transaction. A relation that does not exist yet (made by an
earlier statement of the same step) keeps the name the statement gives it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import psycopg
from pglast import parse_sql
from psycopg import sql
from pglast.parser import ParseError

from .effect import Effect, RelationLock
from .expand import Expand
from .statements import _flatten, analyze_node, plpgsql_statements
from .lockmode import Lock
from .names import quote_ident

def analyze_text(text: str) -> list[Effect]:
    """The effects of the statements of a function or trigger body (static facts)."""
    try:
        return [analyze_node(raw.stmt, text) for raw in parse_sql(text)]
    except ParseError:
        return []


_RELATION = """
    SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind
      FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
"""


class Catalog:
    """The catalog as one preview sees it: relation names are looked up once."""

    def __init__(self, conn: psycopg.Connection, depth: int = 0):
        self.conn = conn
        self.depth = depth  # bodies within bodies: triggers that call functions that fire triggers
        self._relations: dict[str, tuple[int, str] | None] = {}
        self._major: int | None = None

    @property
    def major(self) -> int:
        """The server's major version: some locks depend on it (RelationLock.since)."""
        if self._major is None:
            self._major = self.conn.info.server_version // 10000
        return self._major

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
        if effect.inserted and not self._evaluable(effect.inserted[2]):
            effect = effect.with_(inserted=None)
        if effect.on_conflict and effect.inserted and effect.table and self._conflicts(effect):
            effect = effect.with_(expand=_conflicted(effect.expand), notes=effect.notes + (
                "every row it inserts conflicts with a row there now: nothing is inserted (no key is checked and "
                "no AFTER INSERT trigger fires), as long as those rows stay",))
        locks = [RelationLock(self.canonical(r.relation), r.lock, r.why) for r in effect.locks
                 if r.since <= self.major and (r.only_if is None or _exists(conn, self.oid(r.relation), *r.only_if))]
        changes: dict = {}
        for question in effect.expand:
            if question.since > self.major:
                continue
            if question.what in _BODIES:
                locks += self._bodies(question)
                continue
            subject = question.relation if question.what in _BY_NAME else self.oid(question.relation)
            if subject is None:
                continue
            if question.what == "partitioned_not_transactional":
                if _relkind(conn, subject) in ("p", "I"):
                    changes["transactional"] = False
                continue
            if question.what == "view_tables" and question.columns and _instead(conn, subject, question.columns):
                # the view's INSTEAD OF trigger or DO INSTEAD rule does the write: the tables behind it
                # are only read, for the rows an UPDATE or DELETE finds
                if question.columns == ("INSERT",):
                    continue
                question = Expand(question.what, question.relation, Lock.ACCESS_SHARE)
            for oid in self._through_views(subject, question):
                for name, lock, why in QUESTIONS[question.what](conn, oid, question):
                    locks.append(RelationLock(name, lock, why))
                if question.what in _CASCADING:  # the rows the key's action changes fire their triggers
                    locks += self._cascades(oid, question)
        if effect.planned:
            locks = self._unpruned(effect, locks)
        if effect.inserted and effect.table:
            locks = self._routed(effect.table, *effect.inserted[:2], locks)
        merged: dict[str, RelationLock] = {}
        for r in locks:  # one entry per relation, with the mode that blocks all its modes block
            if r.relation in merged:
                old = merged[r.relation]
                r = RelationLock(r.relation, Lock.combine([old.lock, r.lock]), old.why or r.why)
            merged[r.relation] = r
        changes["locks"] = tuple(merged.values())
        table = self.oid(effect.table) if effect.table else None
        if effect.rewrite_unless and table is not None and all(
                _already(conn, table, what, value) for what, value in effect.rewrite_unless):
            changes.update(rewrites=False, scans=False)
        if effect.column_types and not effect.rewrites and _constrained_domain(conn, effect.column_types):
            changes.update(rewrites=True, scans=True, notes=effect.notes + (
                "the new column's type is a domain with constraints: PostgreSQL rewrites the table to check them",))
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


    def _unpruned(self, effect: Effect, locks: list[RelationLock]) -> list[RelationLock]:
        """The planner leaves out the partitions a query's constant conditions exclude, and
        PostgreSQL never locks them: its own plan (EXPLAIN, which runs nothing) says which leaf
        partitions remain. A plan that prunes when it runs ("Subplans Removed") keeps them all."""
        partitions = {r.relation: kind for r in locks if r.why in _PRUNABLE
                      and (kind := _relkind_name(self.conn, r.relation)) in ("r", "p")}
        if not partitions or (effect.columns and self._moves_rows(effect)):
            return locks
        try:
            with self.conn.transaction():  # a savepoint: a statement the catalog cannot plan yet ends nothing
                plan = self.conn.execute(b"EXPLAIN (VERBOSE, FORMAT JSON) " + effect.sql.encode()).fetchone()[0]
        except psycopg.Error:
            return locks
        scanned: set[str] = set()
        runtime = [False]

        def walk(node):
            if isinstance(node, dict):
                runtime[0] |= bool(node.get("Subplans Removed"))
                if "Relation Name" in node and "Schema" in node:
                    scanned.add(f"{quote_ident(node['Schema'])}.{quote_ident(node['Relation Name'])}")
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(plan if not isinstance(plan, str) else json.loads(plan))
        if runtime[0]:
            return locks
        return self._keep(locks, partitions, scanned)

    def _keep(self, locks: list[RelationLock], partitions: dict[str, str], reached: set[str]) -> list[RelationLock]:
        """The locks without the partitions nothing reaches: a leaf not in `reached`, a partitioned
        partition none of whose leaves is."""
        kept = set(reached)
        for leaf in reached:
            kept.update(row[0] for row in self.conn.execute(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_partition_ancestors(to_regclass(%s)) "
                "AS a JOIN pg_class AS c ON c.oid = a.relid JOIN pg_namespace AS n ON n.oid = c.relnamespace", (leaf,)))
        return [r for r in locks if r.relation not in partitions or r.relation in kept]

    def _moves_rows(self, effect: Effect) -> bool:
        """Whether an UPDATE sets a partition key of its table (at any level): rows may move anywhere."""
        oid = self.oid(effect.table) if effect.table else None
        return oid is None or self.conn.execute("""
            SELECT EXISTS (SELECT 1 FROM pg_partition_tree(%s) AS t JOIN pg_partitioned_table AS pt ON pt.partrelid = t.relid,
                                  unnest(pt.partattrs::int2[]) AS k(attnum)
                             JOIN pg_attribute AS a ON a.attnum = k.attnum
                            WHERE a.attrelid = pt.partrelid AND a.attname = ANY (%s))""",
                                                (oid, list(effect.columns))).fetchone()[0]

    def _routed(self, table: str, columns: tuple, rows: tuple, locks: list[RelationLock]) -> list[RelationLock]:
        """An INSERT locks only the partitions its rows go to: each leaf partition's constraint
        (pg_get_partition_constraintdef) is evaluated by PostgreSQL on the rows' partition keys,
        when those are constants (a value left out, None, is not)."""
        partitions = {r.relation: kind for r in locks if r.why in _PRUNABLE
                      and (kind := _relkind_name(self.conn, r.relation)) in ("r", "p")}
        oid = self.oid(table)
        if not partitions or oid is None:
            return locks
        if _relkind(self.conn, oid) == "v":  # through an updatable view: its one table behind it, by column name
            behind = [self.oid(name) for name, _, _ in _view_tables(self.conn, oid, Expand("", table, Lock.ACCESS_SHARE))
                      if _relkind(self.conn, self.oid(name)) == "p" and _relkind_name(self.conn, name) is None]
            if len(behind) != 1 or columns is None:
                return locks
            oid = behind[0]
        ordered = self.conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s "
                                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,)).fetchall()
        types = dict(ordered)
        columns = columns or tuple(name for name, _ in ordered[:len(rows[0])])
        keys = [row[0] for row in self.conn.execute("""
            SELECT DISTINCT a.attname FROM pg_partition_tree(%s) AS t JOIN pg_partitioned_table AS pt ON pt.partrelid = t.relid,
                   unnest(pt.partattrs::int2[]) AS k(attnum) JOIN pg_attribute AS a ON a.attnum = k.attnum
             WHERE a.attrelid = pt.partrelid""", (oid,))]
        given = [dict(zip(columns, row)) for row in rows]
        if not keys or any(len(row) != len(columns) for row in rows) or any(
                k not in types or row.get(k) is None for k in keys for row in given):
            return locks
        values = " UNION ALL ".join(
            "SELECT " + ", ".join(f"CAST({row[k]} AS {types[k]}) AS {quote_ident(k)}" for k in keys) for row in given)
        reached = set()
        try:
            with self.conn.transaction():  # a savepoint: a value that does not fit ends nothing
                for leaf in (name for name, kind in partitions.items() if kind == "r"):
                    check = self.conn.execute("SELECT pg_get_partition_constraintdef(to_regclass(%s))",
                                              (leaf,)).fetchone()[0]
                    if not check or self.conn.execute(
                            f"SELECT coalesce(bool_or({check}), false) FROM ({values}) AS v").fetchone()[0]:
                        reached.add(leaf)
        except psycopg.Error:
            return locks
        return self._keep(locks, partitions, reached)

    def _evaluable(self, functions: tuple[str, ...]) -> bool:
        """Whether values that call these functions can be computed in a preview: only PostgreSQL's
        own immutable functions (nothing of the user's runs, nothing reads or writes)."""
        if not functions:
            return True
        return self.conn.execute("""
            SELECT bool_and(EXISTS (SELECT 1 FROM pg_proc WHERE proname = f
                                      AND pronamespace = 'pg_catalog'::regnamespace AND provolatile = 'i')
                            AND NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname = f
                                              AND pronamespace <> 'pg_catalog'::regnamespace))
              FROM unnest(%s::text[]) AS f""", (list(functions),)).fetchone()[0]

    def _conflicts(self, effect: Effect) -> bool:
        """Whether every constant row of an INSERT ... ON CONFLICT meets a row that is there now,
        asked of the table (a NULL never conflicts)."""
        oid = self.oid(effect.table)
        if oid is None:
            return False
        try:
            with self.conn.transaction():  # a savepoint: a value that does not fit ends nothing
                return self._all_conflict(oid, effect)
        except psycopg.Error:
            return False

    def _all_conflict(self, oid: int, effect: Effect) -> bool:
        kind, names = effect.on_conflict
        if kind == "constraint":  # a unique key's columns by =, an exclusion constraint's by its operators
            arbiters = self.conn.execute("""
                SELECT array_agg(a.attname::text ORDER BY k.n),
                       array_agg(coalesce(c.conexclop[k.n]::regoperator::text, '=') ORDER BY k.n)
                  FROM pg_constraint AS c CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
                  JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                 WHERE c.conrelid = %s AND c.conname = %s AND c.contype IN ('p', 'u', 'x') GROUP BY c.oid""",
                                         (oid, names[0])).fetchall()
        elif kind == "any":  # every unique index on plain columns (one with expressions or a predicate: give up)
            if self.conn.execute("SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = %s AND indisunique AND "
                                 "(indexprs IS NOT NULL OR indpred IS NOT NULL))", (oid,)).fetchone()[0]:
                return False
            arbiters = self.conn.execute("""
                SELECT array_agg(a.attname::text), array_agg('='::text) FROM pg_index AS x
                  JOIN pg_attribute AS a ON a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey)
                 WHERE x.indrelid = %s AND x.indisunique GROUP BY x.indexrelid""", (oid,)).fetchall()
        else:
            arbiters = [(list(names), ["="] * len(names))]
        columns, rows, _ = effect.inserted
        ordered = [r[0] for r in self.conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                                                   "AND NOT attisdropped ORDER BY attnum", (oid,))]
        columns = columns or tuple(ordered[:len(rows[0])])
        if not arbiters or any(len(row) != len(columns) for row in rows):
            return False
        for row in rows:
            values = dict(zip(columns, row))
            found = False
            for keys, operators in arbiters:
                if any(values.get(k) is None or values[k].upper() == "NULL" for k in keys):
                    continue
                test = sql.SQL(" AND ").join(
                    sql.SQL("{} OPERATOR({}) {}").format(sql.Identifier(k), sql.SQL(_operator(op)), sql.SQL(values[k]))
                    for k, op in zip(keys, operators))
                if self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(
                        sql.SQL(self.canonical(effect.table)), test)).fetchone()[0]:
                    found = True
                    break
            if not found:
                return False
        return True

    def _through_views(self, subject, question) -> list:
        """A write through an automatically updatable view is a write to the table behind it:
        the table's keys, defaults and partitions answer for it."""
        if question.what not in _THROUGH_VIEWS or _relkind(self.conn, subject) != "v" or _instead(
                self.conn, subject, ("INSERT", "UPDATE", "DELETE")):
            return [subject]
        return [subject] + [self.oid(name) for name, _, _ in _view_tables(self.conn, subject, question)
                            if _relkind(self.conn, self.oid(name)) in ("r", "p")]

    def _cascades(self, oid, question) -> list[RelationLock]:
        """The triggers that fire on the tables a foreign key's ON DELETE / ON UPDATE action changes
        (a key set to NULL or its default, or cascaded, is an UPDATE of the key's columns)."""
        event = "DELETE" if question.what == "foreign_keys_in_delete" else "UPDATE"
        found = []
        for table, acts, _, columns in _reached(self.conn, oid, question.columns, event):
            if acts:
                updates = acts != "c" or event == "UPDATE"
                found += self._bodies(Expand("triggers", table, Lock.ROW_EXCLUSIVE, ("UPDATE",) if updates else (event,),
                                             set_columns=columns if updates else None))
        return found

    def _bodies(self, question) -> list[RelationLock]:
        """The locks of the statements in the bodies the statement runs: the triggers it fires,
        the functions and procedures it calls (SQL and PL/pgSQL bodies, parsed by PostgreSQL's
        parsers; dynamic SQL is not seen)."""
        if self.depth >= 3:
            return []
        inner = Catalog(self.conn, self.depth + 1)
        inner._relations = self._relations
        found = []
        for source, language, why in _BODY_QUERIES[question.what](self, question):
            if language in ("rule", "sql standard"):  # a rule's actions; a BEGIN ATOMIC or RETURN body
                try:
                    node = parse_sql(source)[0].stmt
                    actions = node.actions if language == "rule" else _flatten(node.sql_body)
                except Exception:  # noqa: BLE001 - what PostgreSQL printed is readable; be safe anyway
                    actions = ()
                for action in actions or ():
                    found += [RelationLock(r.relation, r.lock, why)
                              for r in inner.resolve(analyze_node(action, "")).locks]
                continue
            if language == "plpgsql":
                statements = plpgsql_statements(source, "trigger" if question.what == "triggers" else "void") or []
            else:
                try:
                    statements = [source[r.stmt_location or 0:][:r.stmt_len or None] for r in parse_sql(source)]
                except Exception:  # noqa: BLE001 - a body PostgreSQL would refuse: nothing runs
                    statements = []
            for text in statements:
                for effect in analyze_text(text):
                    found += [RelationLock(r.relation, r.lock, why) for r in inner.resolve(effect).locks]
        return found


def _operator(regoperator: str) -> str:
    """`schema.op` (what OPERATOR() takes) from a regoperator's text, `op(left,right)`."""
    name = regoperator.split("(")[0]
    return name if "." in name else f"pg_catalog.{name}"


def _conflicted(expand: tuple[Expand, ...]) -> tuple[Expand, ...]:
    """An INSERT's questions when none of its rows is inserted: no key to check, only BEFORE INSERT
    triggers fire (ON CONFLICT DO UPDATE's own UPDATE questions stay)."""
    kept = []
    for e in expand:
        if e.what == "foreign_keys_out_inserted":
            continue
        if e.what == "triggers" and "INSERT" in (e.columns or ()):
            kept.append(Expand(e.what, e.relation, e.lock, ("INSERT",), before_only=True))
            rest = tuple(x for x in e.columns if x != "INSERT")
            if rest:
                kept.append(Expand(e.what, e.relation, e.lock, rest, set_columns=e.set_columns))
            continue
        kept.append(e)
    return tuple(kept)


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


def _view_tables(conn, oid, q, kinds=("v",)):
    """The relations a view (or, with kinds m, a materialized view being refreshed) reads: through
    views on views, not through a materialized view (it holds its own rows), and every
    partition of a partitioned table it reads."""
    return _names(conn, """
        WITH RECURSIVE used(oid) AS (
            SELECT d.refobjid FROM pg_rewrite AS r
              JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
             WHERE r.ev_class = %(oid)s AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> %(oid)s
               AND (SELECT relkind FROM pg_class WHERE oid = %(oid)s) = ANY (%(kinds)s)
            UNION
            SELECT d.refobjid FROM used JOIN pg_class AS v ON v.oid = used.oid AND v.relkind = 'v'
              JOIN pg_rewrite AS r ON r.ev_class = used.oid
              JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
             WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> used.oid)
        SELECT oid FROM used
        UNION
        SELECT t.relid FROM used JOIN pg_class AS p ON p.oid = used.oid AND p.relkind = 'p',
               pg_partition_tree(used.oid) AS t WHERE t.relid <> used.oid""",
                  {"oid": oid, "kinds": list(kinds)}, q.lock, "behind the view")


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
    """Tables whose rows reference the statement's rows: checked (ROW SHARE), or changed by the
    key's ON DELETE / ON UPDATE action (ROW EXCLUSIVE), and through ON DELETE CASCADE the tables
    that reference those; a partitioned table with its partitions."""
    return [(name, Lock.ROW_EXCLUSIVE if action else q.lock, why)
            for name, action, why, _ in _reached(conn, oid, q.columns, _EVENT[q.what])]


_EVENT = {"foreign_keys_in_delete": "DELETE", "foreign_keys_in_update": "UPDATE"}
_CASCADING = set(_EVENT)


def _reached(conn, oid, columns, event: str) -> list[tuple[str, str, str, tuple]]:
    """(table, the action its key takes on `event`: c, n, d or '' for a check, why, the key's
    columns) for every
    table a DELETE or UPDATE of `oid`'s rows reaches through foreign keys (ON ... CASCADE goes on:
    a cascaded DELETE deletes, a cascaded UPDATE updates the key's own columns)."""
    action = "confdeltype" if event == "DELETE" else "confupdtype"
    found, seen, todo = [], {oid}, [(oid, columns)]
    while todo:
        current, cols = todo.pop()
        rows = conn.execute(f"""
            SELECT fk.conrelid, quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                   string_agg(DISTINCT CASE WHEN fk.act IN ('c', 'n', 'd') THEN fk.act::text END, ''),
                   array_agg(DISTINCT a.attname::text) FILTER (WHERE fk.act IN ('c', 'n', 'd'))
              FROM (SELECT conrelid, confrelid AS rel, confkey AS keys, conkey, {action} AS act FROM pg_constraint
                     WHERE contype = 'f' AND confrelid = %(oid)s AND conparentid = 0) AS fk
              JOIN pg_class AS c ON c.oid = fk.conrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
              LEFT JOIN pg_attribute AS a ON a.attrelid = fk.conrelid AND a.attnum = ANY (fk.conkey)
             WHERE {_keys_touch(cols)} GROUP BY 1, 2""",
                            {"oid": current, "cols": list(cols) if cols is not None else None}).fetchall()
        for table, name, acts, cascaded in rows:
            why = "references it" if current == oid else "reached through a foreign key's action"
            keys = tuple(cascaded or ())
            found.append((name, acts or "", why, keys))
            found += [(part, acts or "", why, keys) for part, _, _ in _partition_tree(conn, table, Lock.ACCESS_SHARE)]
            if "c" in (acts or "") and table not in seen:
                seen.add(table)
                todo.append((table, None if event == "DELETE" else keys))
    return found


def _trigger_clones(conn, oid, q):
    """The partitions holding a copy of the named trigger (a row trigger of a partitioned table)."""
    return _names(conn, """
        WITH RECURSIVE clones(oid, tgrelid) AS (
            SELECT oid, tgrelid FROM pg_trigger WHERE tgrelid = %s AND tgname = %s
            UNION SELECT t.oid, t.tgrelid FROM pg_trigger AS t JOIN clones ON t.tgparentid = clones.oid)
        SELECT tgrelid FROM clones WHERE tgrelid <> %s""", (oid, (q.columns or ("",))[0], oid), q.lock,
                  "a partition's copy of the trigger")


def _leaves(conn, oid, q):
    """The partitions and children that hold rows (what ANALYZE samples)."""
    return [(name, lock, why) for name, lock, why in _children(conn, oid, q)
            if _relkind_name(conn, name) in (None, "r", "m", "f")]


def _ancestors(conn, oid, q):
    """A partition's parents up to the root: a row written to a partition directly is checked
    against the partition constraint they define."""
    return _names(conn, "SELECT relid FROM pg_partition_ancestors(%s) WHERE relid <> %s", (oid, oid), q.lock,
                  "an ancestor of the partition")


def _foreign_keys_out_any(conn, oid, q):
    """The tables its foreign keys reference, its own and those it has from its parents."""
    return _names(conn, "SELECT confrelid FROM pg_constraint WHERE contype = 'f' AND conrelid = %s AND confrelid <> %s",
                  (oid, oid), q.lock, "its foreign key's trigger changes")


def _clustered_tables(conn, name, q):
    """What CLUSTER with no table reclusters: every table of the user's with a clustered index."""
    return _names(conn, """
        SELECT i.indrelid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid
         WHERE i.indisclustered AND pg_has_role(c.relowner, 'USAGE')""", (), q.lock, "has a clustered index")


def _cascade_objects(conn, objects: list[tuple[str, int]], q):
    """What DROP ... CASCADE of these objects ((catalog, oid): relations, types, functions) takes
    with it: the relations themselves, what depends on them, and the tables their keys reference."""
    found = []
    for catalog, oid in objects:
        if catalog == "pg_class":
            found += _names(conn, "SELECT %s::oid", (oid,), q.lock, "dropped (CASCADE)")
            found += _dependents(conn, oid, q) + _foreign_keys_out_all(conn, oid, q)
        elif catalog == "pg_type":
            found += _type_users(conn, conn.execute("SELECT format_type(%s, NULL)", (oid,)).fetchone()[0], q)
        elif catalog == "pg_proc":
            found += _function_dependents(conn, conn.execute("SELECT proname FROM pg_proc WHERE oid = %s",
                                                             (oid,)).fetchone()[0], q)
        elif catalog == "pg_namespace":
            found += _schema_cascade(conn, conn.execute("SELECT nspname FROM pg_namespace WHERE oid = %s",
                                                        (oid,)).fetchone()[0], q)
    return found


def _owned_by_role_cascade(conn, name, q):
    """DROP OWNED BY ... CASCADE: the role's schemas, relations, types and functions, and what depends
    on them."""
    return _cascade_objects(conn, conn.execute("""
        SELECT d.classid::regclass::text, d.objid FROM pg_shdepend AS d
         WHERE d.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s) AND d.deptype = 'o'
           AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND d.classid IN ('pg_class'::regclass, 'pg_type'::regclass, 'pg_proc'::regclass,
                             'pg_namespace'::regclass)""", (name,)).fetchall(), q)


def _schema_cascade(conn, name, q):
    """DROP SCHEMA ... CASCADE: the schema's relations, types and functions, and what depends on them
    elsewhere."""
    return _cascade_objects(conn, conn.execute("""
        SELECT 'pg_class', c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = %(name)s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        UNION ALL
        SELECT 'pg_type', t.oid FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
         WHERE n.nspname = %(name)s AND t.typtype IN ('e', 'd', 'c', 'r') AND t.typelem = 0
           AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
        UNION ALL
        SELECT 'pg_proc', p.oid FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname = %(name)s""", {"name": name}).fetchall(), q)


def _partition_tree(conn, oid, lock: Lock):
    return _names(conn, "SELECT relid FROM pg_partition_tree(%s) WHERE relid <> %s", (oid, oid), lock,
                  "a partition of it")


def _foreign_keys_out_moving(conn, oid, q):
    """An UPDATE of a partition key moves rows to another partition: every key is checked."""
    if q.columns is not None and conn.execute("""
            SELECT EXISTS (SELECT 1 FROM pg_partition_tree(%s) AS t JOIN pg_partitioned_table AS pt ON pt.partrelid = t.relid,
                                  unnest(pt.partattrs::int2[]) AS k(attnum)
                             JOIN pg_attribute AS a ON a.attnum = k.attnum
                            WHERE a.attrelid = pt.partrelid AND a.attname = ANY (%s))""",
                                              (oid, list(q.columns))).fetchone()[0]:
        q = Expand(q.what, q.relation, q.lock)
    return _foreign_keys_out(conn, oid, q)


def _foreign_keys_out_all(conn, oid, q):
    """The tables its own foreign keys reference (a partition's copies of its parent's keys keep
    their triggers on the parent's key)."""
    return _names(conn, "SELECT confrelid FROM pg_constraint WHERE contype = 'f' AND conrelid = %s AND confrelid <> %s "
                        "AND conparentid = 0", (oid, oid), q.lock, "its foreign key's trigger changes")


def _foreign_keys_in_all(conn, oid, q):
    return _names(conn, """
        WITH RECURSIVE refs(oid) AS (SELECT conrelid FROM pg_constraint WHERE contype = 'f' AND confrelid = %s
                                     UNION SELECT c.conrelid FROM pg_constraint AS c JOIN refs ON c.confrelid = refs.oid
                                      WHERE c.contype = 'f')
        SELECT oid FROM refs WHERE oid <> %s""", (oid, oid), q.lock, "references it")


def _column_sequences(conn, oid, q):
    """The sequences the defaults of the columns an INSERT leaves out call (q.columns: those it
    gives; None: it gives none by name)."""
    return _default_sequences(conn, oid, q, "(%(cols)s::text[] IS NULL OR NOT a.attname = ANY (%(cols)s::text[]))")


def _attrdef_sequences(conn, oid, q):
    """The sequences its columns' defaults call (what a table made LIKE it, or from it, copies;
    an identity gets a sequence of its own)."""
    return _names(conn, """
        SELECT d.refobjid FROM pg_attrdef AS ad JOIN pg_depend AS d ON d.classid = 'pg_attrdef'::regclass
           AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
         WHERE ad.adrelid = %(oid)s AND d.refobjid <> %(oid)s
           AND (SELECT relkind FROM pg_class WHERE oid = d.refobjid) = 'S'""", {"oid": oid}, q.lock,
                  "column default's sequence")


def _foreign_keys_out_inserted(conn, oid, q):
    """The keys an INSERT checks: on the columns it gives (q.columns; None: all) or that have a
    default; a column left NULL is not checked."""
    if q.columns is not None:
        defaulted = [row[0] for row in conn.execute(
            "SELECT a.attname FROM pg_attribute AS a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "AND (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '')", (oid,)).fetchall()]
        q = Expand(q.what, q.relation, q.lock, tuple(dict.fromkeys((*q.columns, *defaulted))))
    return _foreign_keys_out(conn, oid, q)


def _column_default_sequences(conn, oid, q):
    """The sequences of the named columns' defaults and identities."""
    return _default_sequences(conn, oid, q, "a.attname = ANY (%(cols)s::text[])")


def _default_sequences(conn, oid, q, which: str):
    return _names(conn, f"""
        SELECT d.refobjid FROM pg_attrdef AS ad
          JOIN pg_attribute AS a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
          JOIN pg_depend AS d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
         WHERE ad.adrelid = %(oid)s AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> %(oid)s AND {which}
           AND (SELECT relkind FROM pg_class WHERE oid = d.refobjid) = 'S'
        UNION
        SELECT d.objid FROM pg_depend AS d
          JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %(oid)s
           AND d.deptype = 'i' AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S' AND {which}""",
                  {"oid": oid, "cols": list(q.columns) if q.columns is not None else None}, q.lock,
                  "column default's sequence")


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
    """The table's indexes that hold data (a partitioned index is rebuilt through its partitions)."""
    return _names(conn, "SELECT x.indexrelid FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid "
                        "WHERE x.indrelid = %s AND c.relkind = 'i'", (oid,), q.lock, "its index")


def _foreign_keys_in_direct(conn, oid, q):
    return _names(conn, "SELECT conrelid FROM pg_constraint WHERE contype = 'f' AND confrelid = %s AND conrelid <> %s",
                  (oid, oid), q.lock, "its foreign key to the table goes")


def _dependents(conn, oid, q):
    """Relations CASCADE reaches: views and rules over it (and over those), tables whose
    foreign keys point to it and tables whose defaults use it (their keys and defaults go, the
    tables stay); a partition's share of its parent's foreign key takes the whole key with it."""
    return _names(conn, """
        WITH RECURSIVE views(oid) AS (
            SELECT %(oid)s::oid
            UNION
            SELECT d.objid FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %(oid)s
               AND d.deptype IN ('a', 'i') AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S'
            UNION
            SELECT r.ev_class FROM views
              JOIN pg_depend AS d ON d.refobjid = views.oid AND d.refclassid = 'pg_class'::regclass
                                  AND d.classid = 'pg_rewrite'::regclass
              JOIN pg_rewrite AS r ON r.oid = d.objid WHERE r.ev_class <> views.oid)
        SELECT oid FROM views WHERE oid <> %(oid)s
        UNION
        SELECT t.relid FROM pg_partition_tree(%(oid)s) AS t WHERE t.relid <> %(oid)s
        UNION
        SELECT fk.conrelid FROM views JOIN pg_constraint AS fk ON fk.contype = 'f' AND fk.confrelid = views.oid
         WHERE fk.conrelid <> %(oid)s
        UNION
        SELECT t.relid FROM views JOIN pg_constraint AS fk ON fk.contype = 'f' AND fk.confrelid = views.oid
          JOIN pg_constraint AS root ON root.oid = fk.conparentid, pg_partition_tree(root.confrelid) AS t
         WHERE t.relid <> %(oid)s
        UNION
        SELECT ad.adrelid FROM views JOIN pg_depend AS d ON d.refobjid = views.oid
           AND d.refclassid = 'pg_class'::regclass AND d.classid = 'pg_attrdef'::regclass
          JOIN pg_attrdef AS ad ON ad.oid = d.objid WHERE ad.adrelid <> %(oid)s""",
                  {"oid": oid}, q.lock, "reached by CASCADE")


# Views over given columns, and the views over those: what dropping the columns CASCADE drops.
_VIEWS_OVER_COLUMNS = """
    views(oid) AS (
        SELECT r.ev_class FROM cols
          JOIN pg_depend AS d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = cols.relid
                              AND d.refobjsubid = cols.attnum AND d.classid = 'pg_rewrite'::regclass
          JOIN pg_rewrite AS r ON r.oid = d.objid WHERE r.ev_class <> cols.relid
        UNION
        SELECT r.ev_class FROM views
          JOIN pg_depend AS d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = views.oid
                              AND d.classid = 'pg_rewrite'::regclass
          JOIN pg_rewrite AS r ON r.oid = d.objid WHERE r.ev_class <> views.oid)"""


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


_OF_TYPE = """(a.atttypid = to_regtype(%(name)s)
                OR a.atttypid IN (SELECT typarray FROM pg_type WHERE oid = to_regtype(%(name)s))
                OR a.atttypid IN (SELECT oid FROM pg_type WHERE typbasetype = to_regtype(%(name)s)))"""


def _type_users(conn, name, q):
    """What DROP TYPE ... CASCADE changes: the relations with a column of the type (the column
    goes), the views over those columns, typed tables and the composite type's own relation."""
    return _names(conn, f"""
        WITH RECURSIVE cols(relid, attnum) AS (
            SELECT a.attrelid, a.attnum FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm', 'f', 'v') AND {_OF_TYPE}),
        {_VIEWS_OVER_COLUMNS}
        SELECT relid FROM cols UNION SELECT oid FROM views
        UNION
        SELECT c.oid FROM pg_class AS c WHERE c.reloftype = to_regtype(%(name)s)
        UNION
        SELECT t.typrelid FROM pg_type AS t WHERE t.oid = to_regtype(%(name)s) AND t.typrelid <> 0""",
                  {"name": name}, q.lock, "has a column of the type")


def _type_data_users(conn, name, q):
    """The relations whose stored rows hold the type: a domain's new constraint is checked
    against them (a partitioned table holds no rows of its own)."""
    return _names(conn, f"""
        SELECT a.attrelid FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'm') AND {_OF_TYPE}""",
                  {"name": name}, q.lock, "has a column of the type")


def _publication_tables(conn, name, q):
    """The tables a publication holds now: ALTER PUBLICATION ... SET TABLE drops those it leaves out."""
    return _names(conn, "SELECT pr.prrelid FROM pg_publication_rel AS pr JOIN pg_publication AS p "
                        "ON p.oid = pr.prpubid WHERE p.pubname = %s", (name,), q.lock, "in the publication")


def _sibling_index(kinds: tuple[str, ...]):
    """An index a table's statement names without a schema: PostgreSQL looks for it in the
    table's schema (USING INDEX, CLUSTER ON, REPLICA IDENTITY USING INDEX)."""
    def question(conn, oid, q):
        return _names(conn, """
            SELECT i.oid FROM pg_class AS i JOIN pg_class AS t ON t.relnamespace = i.relnamespace
             WHERE t.oid = %s AND i.relname = %s AND i.relkind = ANY (%s)""",
                      (oid, (q.columns or ("",))[0], list(kinds)), q.lock, "the index it names")
    return question


def _schema_relations(conn, name, q):
    return _names(conn, """
        SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')""", (name,), q.lock, "in the schema")


def _statistics_table(conn, name, q):
    return _names(conn, "SELECT stxrelid FROM pg_statistic_ext WHERE stxname = %s",
                  (name.split(".")[-1].strip('"'),), q.lock, "the statistics' table")


def _constraint_other_table(conn, oid, q):
    """A foreign key's referenced table, with its partitions (each holds the key's triggers)."""
    return _names(conn, """
        SELECT c.confrelid FROM pg_constraint AS c
         WHERE c.contype = 'f' AND c.conrelid = %(oid)s AND c.conname = ANY (%(names)s) AND c.confrelid <> %(oid)s
        UNION
        SELECT t.relid FROM pg_constraint AS c, pg_partition_tree(c.confrelid) AS t
         WHERE c.contype = 'f' AND c.conrelid = %(oid)s AND c.conname = ANY (%(names)s) AND t.relid <> %(oid)s""",
                  {"oid": oid, "names": list(q.columns or ())}, q.lock, "the foreign key's referenced table")


def _partitions(conn, oid, q):
    """INSERT into a partitioned table locks the partitions its rows go to: any of them."""
    if _relkind(conn, oid) != "p":
        return []
    return _children(conn, oid, q)


def _parents(conn, oid, q):
    """A partition's parent (an inheritance child's parent is left alone)."""
    return _names(conn, "SELECT i.inhparent FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
                        "WHERE i.inhrelid = %s AND c.relispartition", (oid,), q.lock, "its parent")


def _identity_sequence(conn, oid, q):
    return _names(conn, """
        SELECT d.objid FROM pg_depend AS d JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %s AND d.deptype = 'i'
           AND a.attname = ANY (%s)""", (oid, list(q.columns or ())), q.lock, "the column's identity sequence")


def _column_foreign_keys(conn, oid, q):
    """Foreign keys on either side of the columns: a type change rebuilds and re-checks them."""
    return _names(conn, """
        SELECT CASE WHEN c.conrelid = %(oid)s THEN c.confrelid ELSE c.conrelid END FROM pg_constraint AS c
         WHERE c.contype = 'f' AND (
               (c.conrelid = %(oid)s AND EXISTS (SELECT 1 FROM pg_attribute AS a WHERE a.attrelid = %(oid)s
                   AND a.attnum = ANY (c.conkey) AND a.attname = ANY (%(cols)s)))
            OR (c.confrelid = %(oid)s AND EXISTS (SELECT 1 FROM pg_attribute AS a WHERE a.attrelid = %(oid)s
                   AND a.attnum = ANY (c.confkey) AND a.attname = ANY (%(cols)s))))""",
                  {"oid": oid, "cols": list(q.columns or ())}, q.lock, "a foreign key on the column")


def _column_foreign_keys_out(conn, oid, q):
    return _names(conn, """
        SELECT c.confrelid FROM pg_constraint AS c WHERE c.contype = 'f' AND c.conrelid = %(oid)s
           AND c.confrelid <> %(oid)s AND EXISTS (SELECT 1 FROM pg_attribute AS a WHERE a.attrelid = %(oid)s
               AND a.attnum = ANY (c.conkey) AND a.attname = ANY (%(cols)s))""",
                  {"oid": oid, "cols": list(q.columns or ())}, q.lock, "its foreign key goes with the column")


def _column_dependents(conn, oid, q):
    """What DROP COLUMN ... CASCADE takes with it: views on the column and the views on those,
    other tables' keys that point to it."""
    return _names(conn, f"""
        WITH RECURSIVE cols(relid, attnum) AS (
            SELECT attrelid, attnum FROM pg_attribute WHERE attrelid = %(oid)s AND attname = ANY (%(cols)s)),
        {_VIEWS_OVER_COLUMNS}
        SELECT oid FROM views
        UNION
        SELECT c.conrelid FROM pg_constraint AS c WHERE c.contype = 'f' AND c.confrelid = %(oid)s
           AND c.conrelid <> %(oid)s AND EXISTS (SELECT 1 FROM pg_attribute AS a WHERE a.attrelid = %(oid)s
               AND a.attnum = ANY (c.confkey) AND a.attname = ANY (%(cols)s))""",
                  {"oid": oid, "cols": list(q.columns or ())}, q.lock, "dropped with the column (CASCADE)")


def _constraint_index(conn, oid, q):
    return _names(conn, "SELECT conindid FROM pg_constraint WHERE conrelid = %s AND conname = ANY (%s) "
                        "AND conindid <> 0 AND contype IN ('p', 'u', 'x')", (oid, list(q.columns or ())), q.lock,
                  "the constraint's index")


def _constraint_referencing(conn, oid, q):
    return _names(conn, """
        SELECT fk.conrelid FROM pg_constraint AS c JOIN pg_constraint AS fk ON fk.contype = 'f'
           AND fk.conindid = c.conindid AND fk.confrelid = c.conrelid
         WHERE c.conrelid = %s AND c.conname = ANY (%s)""", (oid, list(q.columns or ())), q.lock,
                  "its foreign key goes with the constraint (CASCADE)")


def _typed_tables(conn, oid, q):
    return _names(conn, "SELECT c.oid FROM pg_class AS c JOIN pg_type AS t ON t.oid = c.reloftype "
                        "WHERE t.typrelid = %s", (oid,), q.lock, "a table OF the type")


def _type_relation(conn, name, q):
    return _names(conn, "SELECT typrelid FROM pg_type WHERE oid = to_regtype(%s) AND typrelid <> 0", (name,),
                  q.lock, "the composite type's relation")


def _schema_tables(conn, name, q):
    return _names(conn, """
        SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = %s AND c.relkind IN ('r', 'm', 't')""", (name,), q.lock, "in the schema")


def _all_tables(conn, name, q):
    return _names(conn, """
        SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
           AND has_table_privilege(c.oid, 'SELECT')""", (), q.lock, "every table")


def _owned_by_role(conn, name, q):
    return _names(conn, """
        SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')""", (name,), q.lock, "owned by the role")


def _serial_sequence(conn, oid, q):
    row = conn.execute("SELECT pg_get_serial_sequence(%s::regclass::text, %s)", (oid, (q.columns or ("",))[0])).fetchone()
    return [(_relation_name(conn, row[0]), q.lock, "pg_get_serial_sequence()")] if row and row[0] else []


def _relation_name(conn, name: str) -> str:
    return conn.execute(_RELATION + " WHERE c.oid = to_regclass(%s)", (name,)).fetchone()[1]


def _matview_tables(conn, oid, q):
    return _view_tables(conn, oid, q, kinds=("m",))


def _index_partitions(conn, oid, q, kinds=("i", "I")):
    """A partitioned index's partitions (`kinds` i: only those that hold data), and their tables."""
    return _names(conn, """
        WITH RECURSIVE tree(oid) AS (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s
                                     UNION SELECT i.inhrelid FROM pg_inherits AS i JOIN tree ON i.inhparent = tree.oid),
        kept AS (SELECT tree.oid FROM tree JOIN pg_class AS c ON c.oid = tree.oid WHERE c.relkind = ANY (%s))
        SELECT oid FROM kept UNION SELECT x.indrelid FROM kept JOIN pg_index AS x ON x.indexrelid = kept.oid""",
                  (oid, list(kinds)), q.lock, "a partition of the index")


def _index_leaves(conn, oid, q):
    """What REINDEX of a partitioned index rebuilds: the partitions that hold data (the levels
    between are left alone)."""
    return _index_partitions(conn, oid, q, kinds=("i",))


_PRUNABLE = {"partition or child", "behind the view"}


def _relkind_name(conn, name: str) -> str | None:
    """The relkind of a partition (None for a relation that is not one)."""
    row = conn.execute("SELECT c.relkind FROM pg_class AS c WHERE c.oid = to_regclass(%s) AND c.relispartition",
                       (name,)).fetchone()
    return row[0] if row else None


def _instead(conn, oid: int, events) -> bool:
    """Whether a view does writes of these events itself: an INSTEAD OF trigger or a DO INSTEAD rule."""
    return conn.execute("""
        SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %(oid)s AND (tgtype & 64) <> 0
                          AND (tgtype & %(bits)s) <> 0 AND tgenabled <> 'D')
            OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = %(oid)s AND is_instead AND rulename <> '_RETURN'
                          AND ev_type = ANY (%(types)s))""",
                        {"oid": oid, "bits": sum(_EVENT_BITS[e] for e in events),
                         "types": [_RULE_EVENTS[e] for e in events if e in _RULE_EVENTS]}).fetchone()[0]


def _relkind(conn, oid: int) -> str | None:
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s", (oid,)).fetchone()
    return row[0] if row else None


def _exists(conn, table: int | None, kind: str, name: str) -> bool:
    if table is None:
        return False
    if kind == "plain_index":
        return _relkind(conn, table) == "i"
    catalog, column = {"trigger": ("pg_trigger", "tgrelid"), "policy": ("pg_policy", "polrelid"),
                       "rule": ("pg_rewrite", "ev_class")}.get(kind, (None, None))
    if catalog is None:
        return True
    field = {"pg_trigger": "tgname", "pg_policy": "polname", "pg_rewrite": "rulename"}[catalog]
    return conn.execute(f"SELECT EXISTS (SELECT 1 FROM {catalog} WHERE {column} = %s AND {field} = %s)",
                        (table, name)).fetchone()[0]


def _already(conn, oid: int, what: str, value: str | None) -> bool:
    """Whether the table already has the access method, tablespace or persistence asked for."""
    row = conn.execute("""
        SELECT am.amname, coalesce(ts.spcname, 'pg_default'), c.relpersistence FROM pg_class AS c
          LEFT JOIN pg_am AS am ON am.oid = c.relam LEFT JOIN pg_tablespace AS ts ON ts.oid = c.reltablespace
         WHERE c.oid = %s""", (oid,)).fetchone()
    current = {"access_method": row[0], "tablespace": row[1], "persistence": row[2]}[what]
    if what == "access_method" and value is None:
        value = conn.execute("SELECT current_setting('default_table_access_method')").fetchone()[0]
    return current == value


def _constrained_domain(conn, types: tuple[str, ...]) -> bool:
    for name in types:
        try:
            with conn.transaction():
                found = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contypid = to_regtype(%s))",
                                     (name,)).fetchone()[0]
        except psycopg.Error:
            found = False
        if found:
            return True
    return False


_EVENT_BITS = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}


def _trigger_bodies(catalog: Catalog, q) -> list[tuple[str, str, str]]:
    oid = catalog.oid(q.relation)
    if oid is None:
        return []
    events = q.columns or ()
    others = sum(_EVENT_BITS[e] for e in events if e != "UPDATE")
    # a write through a view fires the view's INSTEAD OF triggers, or those of the table behind it
    targets = [oid] + ([] if _instead(catalog.conn, oid, events) else
                       [catalog.oid(name) for name, _, _ in _view_tables(catalog.conn, oid, q)])
    # an UPDATE OF trigger fires only when the UPDATE sets one of its columns
    rows = catalog.conn.execute("""
        SELECT p.prosrc, l.lanname, t.tgname FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid
          JOIN pg_language AS l ON l.oid = p.prolang
         WHERE t.tgrelid = ANY (%(targets)s) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
           AND (NOT %(before)s OR (t.tgtype & 2) <> 0)
           AND ((t.tgtype & %(others)s) <> 0
                OR (%(update)s AND (t.tgtype & 16) <> 0
                    AND (%(set)s::text[] IS NULL OR cardinality(t.tgattr) = 0 OR EXISTS (
                         SELECT 1 FROM pg_attribute AS a WHERE a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr)
                            AND a.attname = ANY (%(set)s::text[])))))""",
                                {"targets": targets, "others": others, "update": "UPDATE" in events,
                                 "before": q.before_only,
                                 "set": list(q.set_columns) if q.set_columns is not None else None}).fetchall()
    return [(src, language, f"trigger {name}") for src, language, name in rows]


def _function_bodies(catalog: Catalog, q) -> list[tuple[str, str, str]]:
    parts = q.relation.split(".")
    rows = catalog.conn.execute("""
        SELECT CASE WHEN p.prosqlbody IS NULL THEN p.prosrc ELSE pg_get_functiondef(p.oid) END,
               CASE WHEN p.prosqlbody IS NULL THEN l.lanname ELSE 'sql standard' END, p.proname
          FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
          JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE p.proname = %s AND l.lanname IN ('sql', 'plpgsql')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND (%s::text IS NULL OR n.nspname = %s)""",
                                (parts[-1].strip('"'), parts[0].strip('"') if len(parts) > 1 else None,
                                 parts[0].strip('"') if len(parts) > 1 else None)).fetchall()
    return [(src, language, f"function {name}()") for src, language, name in rows]


_RULE_EVENTS = {"UPDATE": "2", "INSERT": "3", "DELETE": "4"}


def _rule_bodies(catalog: Catalog, q) -> list[tuple[str, str, str]]:
    """The rules a write to the table fires (their actions run with it)."""
    oid = catalog.oid(q.relation)
    if oid is None:
        return []
    rows = catalog.conn.execute("""
        SELECT pg_get_ruledef(oid), rulename FROM pg_rewrite
         WHERE ev_class = %s AND ev_type = ANY (%s) AND rulename <> '_RETURN' AND ev_enabled <> 'D'""",
                                (oid, [_RULE_EVENTS[e] for e in q.columns or ()])).fetchall()
    return [(definition, "rule", f"rule {name}") for definition, name in rows]


_BODY_QUERIES = {"triggers": _trigger_bodies, "calls": _function_bodies, "rules": _rule_bodies}
_BODIES = set(_BODY_QUERIES)
# Questions about a table written to that, asked of a view, are answered by the tables behind it.
_THROUGH_VIEWS = {"foreign_keys_out", "foreign_keys_out_moving", "foreign_keys_out_inserted", "foreign_keys_in_delete", "foreign_keys_in_update",
                  "column_sequences", "partitions"}


QUESTIONS: dict[str, Callable] = {
    "children": _children, "view_tables": _view_tables, "foreign_keys_out": _foreign_keys_out,
    "foreign_keys_in_delete": _foreign_keys_in, "foreign_keys_in_update": _foreign_keys_in,
    "foreign_keys_out_moving": _foreign_keys_out_moving, "foreign_keys_out_all": _foreign_keys_out_all,
    "column_default_sequences": _column_default_sequences, "attrdef_sequences": _attrdef_sequences,
    "foreign_keys_out_inserted": _foreign_keys_out_inserted, "type_data_users": _type_data_users,
    "publication_tables": _publication_tables, "trigger_clones": _trigger_clones, "ancestors": _ancestors, "leaves": _leaves,
    "foreign_keys_out_any": _foreign_keys_out_any, "clustered_tables": _clustered_tables,
    "owned_by_role_cascade": _owned_by_role_cascade, "schema_cascade": _schema_cascade, "sibling_index": _sibling_index(("i", "I")),
    "sibling_plain_index": _sibling_index(("i",)), "partition_tree": lambda conn, oid, q: _partition_tree(conn, oid, q.lock),
    "foreign_keys_in_all": _foreign_keys_in_all, "column_sequences": _column_sequences,
    "owned_sequences": _owned_sequences, "default_partition": _default_partition, "index_table": _index_table,
    "indexes": _indexes, "dependents": _dependents, "function_dependents": _function_dependents,
    "type_users": _type_users, "schema_relations": _schema_relations, "statistics_table": _statistics_table,
    "constraint_other_table": _constraint_other_table, "partitions": _partitions, "parents": _parents,
    "identity_sequence": _identity_sequence, "column_foreign_keys": _column_foreign_keys,
    "column_foreign_keys_out": _column_foreign_keys_out, "column_dependents": _column_dependents,
    "constraint_index": _constraint_index, "constraint_referencing": _constraint_referencing,
    "typed_tables": _typed_tables, "type_relation": _type_relation, "schema_tables": _schema_tables,
    "all_tables": _all_tables, "owned_by_role": _owned_by_role, "serial_sequence": _serial_sequence,
    "matview_tables": _matview_tables, "index_partitions": _index_partitions, "index_leaves": _index_leaves,
    "foreign_keys_in_direct": _foreign_keys_in_direct,
}
# Questions about objects that are not relations: they get the name, not an oid.
_BY_NAME = {"function_dependents", "type_users", "type_data_users", "publication_tables", "clustered_tables",
            "owned_by_role_cascade", "schema_cascade", "schema_relations", "statistics_table", "type_relation",
            "schema_tables", "all_tables", "owned_by_role"}


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
            SELECT CASE WHEN old.typtype = 'd' AND old.typbasetype = t.oid THEN t.oid ELSE a.atttypid END,
                   a.atttypmod, t.oid, t.typname, old.typname,
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
