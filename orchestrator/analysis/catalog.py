"""The second pass: what only the live database knows about a statement.

`resolve(conn, effect)` answers the static pass's questions (`Effect.expand`, answered by
questions.py) from the catalog and returns the statement's full facts: every relation it locks,
named schema.relation as quote_ident spells them, and whether it really rewrites (a type change
PostgreSQL performs without one: rewrites.py; a default whose function is not volatile). What
depends on the statement's constants is asked of PostgreSQL too: the partitions its plan keeps
(EXPLAIN), the partitions an INSERT's rows go to, whether its rows conflict. It reads the
bodies the statement runs (triggers, rules, called functions). Nothing it runs writes: it works
inside the preview's READ ONLY transaction, each question that may fail under a savepoint. A
relation that does not exist yet (made by an earlier statement of the same step) keeps the name
the statement gives it.
"""

from __future__ import annotations

import json

import psycopg
from pglast import enums, parse_sql
from psycopg import sql
from pglast.parser import ParseError

from .effect import Effect, RelationLock
from .expand import Expand
from .statements import _flatten, analyze_node, plpgsql_statements
from .lockmode import Lock
from .names import quote_ident
from .questions import (BY_NAME, CASCADING, EVENT_BITS, QUESTIONS, RELATION, RULE_EVENTS, THROUGH_VIEWS, instead,
                        reached, relkind, relkind_name, sets_partition_key, view_tables)
from .rewrites import retype_rewrites

def analyze_text(text: str) -> list[Effect]:
    """The effects of the statements of a function or trigger body (static facts)."""
    try:
        return [analyze_node(raw.stmt, text) for raw in parse_sql(text)]
    except ParseError:
        return []


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
                    row = self.conn.execute(RELATION + " WHERE c.oid = to_regclass(%s)", (name,)).fetchone()
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
            subject = question.relation if question.what in BY_NAME else self.oid(question.relation)
            if subject is None:
                continue
            if question.what == "partitioned_not_transactional":
                if relkind(conn, subject) in ("p", "I"):
                    changes["transactional"] = False
                continue
            if question.what == "view_tables" and question.columns and instead(conn, subject, question.columns):
                # the view's INSTEAD OF trigger or DO INSTEAD rule does the write: the tables behind it
                # are only read, for the rows an UPDATE or DELETE finds
                if question.columns == ("INSERT",):
                    continue
                question = Expand(question.what, question.relation, Lock.ACCESS_SHARE)
            for oid in self._through_views(subject, question):
                for name, lock, why in QUESTIONS[question.what](conn, oid, question):
                    locks.append(RelationLock(name, lock, why))
                if question.what in CASCADING:  # the rows the key's action changes fire their triggers
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
            if not any(retype_rewrites(conn, table, *retype) for retype in effect.retypes):
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
        partitions = self._partitions(locks)
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
        return oid is None or sets_partition_key(self.conn, oid, effect.columns)

    def _partitions(self, locks: list[RelationLock]) -> dict[str, str]:
        """The partitions (relation -> relkind, leaves and partitioned levels) that the statement's
        plan or its rows' routing may leave alone."""
        return {r.relation: kind for r in locks if r.why in _PRUNABLE
                and (kind := relkind_name(self.conn, r.relation)) in ("r", "p")}

    def _columns(self, oid: int) -> list[tuple[str, str]]:
        """A relation's columns in order, each with its type as SQL writes it."""
        return self.conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s "
                                 "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,)).fetchall()

    def _routed(self, table: str, columns: tuple, rows: tuple, locks: list[RelationLock]) -> list[RelationLock]:
        """An INSERT locks only the partitions its rows go to: each leaf partition's constraint
        (pg_get_partition_constraintdef) is evaluated by PostgreSQL on the rows' partition keys,
        when those are constants (a value left out, None, is not)."""
        partitions = self._partitions(locks)
        oid = self.oid(table)
        if not partitions or oid is None:
            return locks
        if relkind(self.conn, oid) == "v":  # through an updatable view: its one table behind it, by column name
            behind = [self.oid(name) for name, _, _ in view_tables(self.conn, oid, Expand("", table, Lock.ACCESS_SHARE))
                      if relkind(self.conn, self.oid(name)) == "p" and relkind_name(self.conn, name) is None]
            if len(behind) != 1 or columns is None:
                return locks
            oid = behind[0]
        ordered = self._columns(oid)
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
        columns = columns or tuple(name for name, _ in self._columns(oid)[:len(rows[0])])
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
        if question.what not in THROUGH_VIEWS or relkind(self.conn, subject) != "v" or instead(
                self.conn, subject, ("INSERT", "UPDATE", "DELETE")):
            return [subject]
        return [subject] + [self.oid(name) for name, _, _ in view_tables(self.conn, subject, question)
                            if relkind(self.conn, self.oid(name)) in ("r", "p")]

    def _cascades(self, oid, question) -> list[RelationLock]:
        """The triggers that fire on the tables a foreign key's ON DELETE / ON UPDATE action changes
        (a key set to NULL or its default, or cascaded, is an UPDATE of the key's columns)."""
        event = "DELETE" if question.what == "foreign_keys_in_delete" else "UPDATE"
        found = []
        for table, acts, _, columns in reached(self.conn, oid, question.columns, event):
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


_PRUNABLE = {"partition or child", "behind the view"}


def _exists(conn, table: int | None, kind: str, name: str) -> bool:
    if table is None:
        return False
    if kind == "plain_index":
        return relkind(conn, table) == "i"
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
                found = conn.execute(  # a domain NOT NULL is a typnotnull before PostgreSQL 17
                    "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contypid = to_regtype(%s)) "
                    "OR EXISTS (SELECT 1 FROM pg_type WHERE oid = to_regtype(%s) AND typnotnull)", (name, name)).fetchone()[0]
        except psycopg.Error:
            found = False
        if found:
            return True
    return False


def _trigger_bodies(catalog: Catalog, q) -> list[tuple[str, str, str]]:
    oid = catalog.oid(q.relation)
    if oid is None:
        return []
    events = q.columns or ()
    others = sum(EVENT_BITS[e] for e in events if e != "UPDATE")
    # a write through a view fires the view's INSTEAD OF triggers, or those of the table behind it
    targets = [oid] + ([] if instead(catalog.conn, oid, events) else
                       [catalog.oid(name) for name, _, _ in view_tables(catalog.conn, oid, q)])
    # an UPDATE OF trigger fires only when the UPDATE sets one of its columns
    rows = catalog.conn.execute("""
        SELECT p.prosrc, l.lanname, t.tgname, CASE WHEN t.tgqual IS NOT NULL THEN pg_get_triggerdef(t.oid) END
          FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid
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
    updates_only = events == ("UPDATE",) and q.set_columns is not None
    return [(src, language, f"trigger {name}") for src, language, name, definition in rows
            if not (updates_only and definition and _unchanged_only(definition, q.set_columns))]


def _unchanged_only(definition: str, set_columns: tuple[str, ...]) -> bool:
    """Whether a trigger's WHEN clause only asks whether columns changed (OLD.c IS DISTINCT FROM
    NEW.c, OLD.c <> NEW.c, or several joined by OR) that the UPDATE does not set: then it never fires."""
    try:
        when = parse_sql(definition)[0].stmt.whenClause
    except Exception:  # noqa: BLE001 - a definition PostgreSQL printed; be safe anyway
        return False

    def changed(node) -> str | None:  # the column a comparison of OLD and NEW asks about
        if type(node).__name__ != "A_Expr" or node.name[-1].sval not in ("=", "<>") or node.kind not in (
                enums.A_Expr_Kind.AEXPR_DISTINCT, enums.A_Expr_Kind.AEXPR_OP) or (
                node.kind == enums.A_Expr_Kind.AEXPR_OP and node.name[-1].sval != "<>"):
            return None
        sides = [[getattr(f, "sval", None) for f in getattr(x, "fields", ())] for x in (node.lexpr, node.rexpr)]
        if all(len(side) == 2 for side in sides) and {sides[0][0], sides[1][0]} == {"old", "new"} and \
                sides[0][1] == sides[1][1]:
            return sides[0][1]
        return None

    parts = when.args if type(when).__name__ == "BoolExpr" and when.boolop == enums.BoolExprType.OR_EXPR else (when,)
    columns = [changed(p) for p in parts]
    return all(c is not None and c not in set_columns for c in columns)


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


def _rule_bodies(catalog: Catalog, q) -> list[tuple[str, str, str]]:
    """The rules a write to the table fires (their actions run with it)."""
    oid = catalog.oid(q.relation)
    if oid is None:
        return []
    rows = catalog.conn.execute("""
        SELECT pg_get_ruledef(oid), rulename FROM pg_rewrite
         WHERE ev_class = %s AND ev_type = ANY (%s) AND rulename <> '_RETURN' AND ev_enabled <> 'D'""",
                                (oid, [RULE_EVENTS[e] for e in q.columns or ()])).fetchall()
    return [(definition, "rule", f"rule {name}") for definition, name in rows]


def _cascaded_trigger_bodies(catalog: Catalog, q) -> list[tuple[str, str, str]]:
    """The triggers TRUNCATE ... CASCADE fires on the tables it reaches."""
    oid = catalog.oid(q.relation)
    return [] if oid is None else [
        body for name, _, _ in QUESTIONS["foreign_keys_in_all"](catalog.conn, oid, q)
        for body in _trigger_bodies(catalog, Expand("triggers", name, q.lock, q.columns))]


_BODY_QUERIES = {"triggers": _trigger_bodies, "calls": _function_bodies, "rules": _rule_bodies,
                 "cascaded_triggers": _cascaded_trigger_bodies}
_BODIES = set(_BODY_QUERIES)


def _any_volatile(conn, functions: tuple[str, ...]) -> bool:
    row = conn.execute("SELECT bool_or(provolatile = 'v') FROM pg_proc WHERE proname = ANY (%s)",
                       (list(functions),)).fetchone()
    return bool(row[0])


def _proven_not_null(conn, oid: int, column: str) -> bool:
    return conn.execute("""
        SELECT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conrelid = %s AND c.contype = 'c' AND c.convalidated
                          AND pg_get_expr(c.conbin, c.conrelid) IN (%s, %s))""",
                        (oid, f"({quote_ident(column)} IS NOT NULL)", f"{quote_ident(column)} IS NOT NULL")).fetchone()[0]


