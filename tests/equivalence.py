"""What a database ends up as, taken apart so that two can be compared and their differences
read: the user schema object by object, every row of every user table, and the outcome of an
application workload. Used by test_plan_equivalence.py; see its docstring for what is left out
of the comparison and why.

A snapshot is a dict from a readable key (`column public.servers.created_by`) to a plain value
(a dict of the object's facts, a row as JSON). `differences` compares two and says, for the
first N keys that differ, what each side holds.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

# Schemas that are not the application's: PostgreSQL's own, and rollout's state (step ids,
# migration ids, events with their times, flags), which differ between any two plans.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "rollout")
# yoyo's bookkeeping (migration ids are file names, which differ between plans; times).
YOYO_TABLES = ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock")
# Rollback bookkeeping: objects that exist only so that a rollback after the contract can put
# back every original value. Nothing in the application's schema uses them once the plan is
# done. The hand-written plan names them remediation_* (tables of originals) and *_of (the
# enum steps' mapping functions, used only by the trigger a swap's rollback recreates);
# rollout names what it generates _rollout_* (orchestrator/operations/names.py).
BOOKKEEPING_PREFIXES = ("_rollout_", "remediation_")
BOOKKEEPING_FUNCTIONS = ("detection_type_of", "verification_status_of", "admin_action_type_of")

_USER_NAMESPACE = """
    n.nspname NOT IN ('pg_catalog', 'information_schema', 'rollout') AND n.nspname !~ '^pg_'
"""


def is_bookkeeping(name: str) -> bool:
    """Whether an object's own name marks it as rollback bookkeeping (a schema, a table with
    everything on it, a function or a type; never a column, index, constraint or trigger on an
    application table: those the application meets)."""
    bare = name.split(".")[-1].split("(")[0]
    return bare.startswith(BOOKKEEPING_PREFIXES) or bare in BOOKKEEPING_FUNCTIONS


# ---------------------------------------------------------------------------------------------
# The schema


def _rows(conn: psycopg.Connection, query: str, params=None) -> list[tuple]:
    return conn.execute(query.replace("{user}", _USER_NAMESPACE), params).fetchall()


def _squash(text: str | None) -> str | None:
    """A function body with runs of whitespace made one space: the body is the text its plan
    wrote, and the same body moved from a .sql file into rollout.yaml may be indented anew."""
    return None if text is None else re.sub(r"\s+", " ", text).strip()


def schema(conn: psycopg.Connection) -> dict[str, dict]:
    """Every object of the user schema, keyed `kind name`, with the facts that define it.
    Each object carries `owner`: the table, function or type whose name decides whether it is
    bookkeeping."""
    objects: dict[str, dict] = {}

    def put(kind: str, name: str, owner: str, /, **facts) -> None:
        objects[f"{kind} {name}"] = {"owner": owner, **facts}

    for (name,) in _rows(conn, "SELECT n.nspname FROM pg_namespace AS n WHERE {user}"):
        put("schema", name, name)
    for name, version in _rows(conn, "SELECT extname, extversion FROM pg_extension"):
        put("extension", name, name, version=version)

    member_of_extension = "EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.objid = {oid} AND d.deptype = 'e')"
    relations = _rows(conn, f"""
        SELECT c.oid, n.nspname || '.' || c.relname, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity,
               c.relpersistence::text, c.reloptions, c.relacl::text, obj_description(c.oid, 'pg_class'),
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE {{user}} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
          AND c.relname <> ALL (%s) AND NOT {member_of_extension.format(oid='c.oid')}
        """, (list(YOYO_TABLES),))
    # relkind c: a standalone composite type (CREATE TYPE ... AS (...)); its columns are listed like a table's
    kinds = {"r": "table", "p": "table", "v": "view", "m": "view", "S": "sequence", "f": "table", "c": "type"}
    tables = {}
    for oid, name, relkind, rls, force_rls, persistence, options, acl, comment, view in relations:
        facts = {"relkind": relkind, "row_level_security": rls, "forced_row_level_security": force_rls,
                 "persistence": persistence, "options": options, "privileges": acl, "comment": comment}
        if view is not None:
            facts["definition"] = view
        put(kinds[relkind], name, name, **facts)
        tables[oid] = name

    for name, type_, start, increment, minimum, maximum, cache, cycle in _rows(conn, """
        SELECT n.nspname || '.' || c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
               s.seqmin, s.seqmax, s.seqcache, s.seqcycle
        FROM pg_sequence AS s JOIN pg_class AS c ON c.oid = s.seqrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE {user}
        """):
        if f"sequence {name}" in objects:
            objects[f"sequence {name}"].update(type=type_, start=start, increment=increment, min=minimum,
                                               max=maximum, cache=cache, cycle=cycle)

    for relid, name, rank, type_, notnull, default, identity, generated, collation, comment in _rows(conn, """
        SELECT a.attrelid, a.attname,
               row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
               format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
               a.attidentity::text, a.attgenerated::text,
               CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
               col_description(a.attrelid, a.attnum)
        FROM pg_attribute AS a
        JOIN pg_type AS t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum
        """):
        if relid in tables:
            table = tables[relid]
            # position among the columns that exist (a dropped column leaves a gap in attnum,
            # which is history, not shape); order matters: SELECT *, INSERT without a column list
            put("column", f"{table}.{name}", table, position=rank, type=type_, not_null=notnull,
                default=default, identity=identity, generated=generated, collation=collation, comment=comment)

    for relid, name, contype, definition, validated, column in _rows(conn, """
        SELECT c.conrelid, c.conname, c.contype::text, pg_get_constraintdef(c.oid), c.convalidated,
               (SELECT a.attname FROM pg_attribute AS a WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1])
        FROM pg_constraint AS c WHERE c.conrelid <> 0
        """):
        if relid not in tables:
            continue
        table = tables[relid]
        if contype == "n":
            # PostgreSQL 18 records NOT NULL as a constraint, named by PostgreSQL after the column
            # as it was named when SET NOT NULL ran (a column renamed later keeps the old name in
            # it); no plan chooses that name. Compared by column, not by name.
            put("not-null", f"{table}.{column}", table, definition=definition, validated=validated)
        else:
            put("constraint", f"{table}.{name}", table, type=contype, definition=definition, validated=validated)

    for relid, name, definition, valid, ready in _rows(conn, """
        SELECT x.indrelid, c.relname, pg_get_indexdef(x.indexrelid), x.indisvalid, x.indisready
        FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid
        """):
        if relid in tables:
            put("index", f"{tables[relid]}.{name}", tables[relid], definition=definition, valid=valid, ready=ready)

    for relid, name, definition, enabled in _rows(conn, """
        SELECT t.tgrelid, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text
        FROM pg_trigger AS t WHERE NOT t.tgisinternal
        """):
        if relid in tables:
            put("trigger", f"{tables[relid]}.{name}", tables[relid], definition=definition, enabled=enabled)

    for relid, name, command, permissive, roles, using, check in _rows(conn, """
        SELECT p.polrelid, p.polname, p.polcmd::text, p.polpermissive,
               ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END FROM unnest(p.polroles) AS r),
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
        FROM pg_policy AS p
        """):
        if relid in tables:
            put("policy", f"{tables[relid]}.{name}", tables[relid], command=command, permissive=permissive,
                roles=roles, using=using, with_check=check)

    for relid, name, definition in _rows(conn, """
        SELECT r.ev_class, r.rulename, pg_get_ruledef(r.oid) FROM pg_rewrite AS r WHERE r.rulename <> '_RETURN'
        """):
        if relid in tables:
            put("rule", f"{tables[relid]}.{name}", tables[relid], definition=definition)

    for name, kind, labels, base, checks, comment in _rows(conn, f"""
        SELECT n.nspname || '.' || t.typname, t.typtype::text,
               ARRAY(SELECT e.enumlabel FROM pg_enum AS e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
               CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
               ARRAY(SELECT pg_get_constraintdef(c.oid) FROM pg_constraint AS c WHERE c.contypid = t.oid ORDER BY 1),
               obj_description(t.oid, 'pg_type')
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE {{user}} AND t.typtype IN ('e', 'd', 'r', 'm') AND NOT {member_of_extension.format(oid='t.oid')}
        """):
        put("type", name, name, kind=kind, labels=labels, base=base, checks=checks, comment=comment)

    for name, kind, result, language, volatility, strict, definer, leakproof, parallel, config, body, binary, acl, \
            comment in _rows(conn, f"""
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               p.prokind::text, pg_get_function_result(p.oid), l.lanname, p.provolatile::text, p.proisstrict,
               p.prosecdef, p.proleakproof, p.proparallel::text, p.proconfig, p.prosrc,
               CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) END,
               p.proacl::text, obj_description(p.oid, 'pg_proc')
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace JOIN pg_language AS l ON l.oid = p.prolang
        WHERE {{user}} AND NOT {member_of_extension.format(oid='p.oid')}
        """):
        put("function", name, name, kind=kind, result=result, language=language, volatility=volatility,
            strict=strict, security_definer=definer, leakproof=leakproof, parallel=parallel, config=config,
            body=_squash(binary or body), privileges=acl, comment=comment)
    return objects


# ---------------------------------------------------------------------------------------------
# The rows


@dataclass
class TableRows:
    """A table's rows as JSON objects. `key` names the primary key's columns (None when the
    table has none, or when a masked column is part of it): rows are then matched as a
    multiset of whole rows. `masked` columns were left out of every row."""

    key: tuple[str, ...] | None
    masked: tuple[str, ...] = ()
    rows: dict[str, dict] | Counter = field(default_factory=dict)


def user_tables(conn: psycopg.Connection) -> list[str]:
    return [name for (name,) in _rows(conn, """
        SELECT n.nspname || '.' || c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE {user} AND c.relkind IN ('r', 'p') AND c.relname <> ALL (%s) AND NOT c.relispartition
        ORDER BY 1""", (list(YOYO_TABLES),))]


def volatile_default_columns(conn: psycopg.Connection, table: str) -> set[str]:
    """Columns whose DEFAULT calls a volatile function (gen_random_uuid(), now() is stable but
    reads the transaction's clock, so clock readers count too)."""
    found = set()
    for column, default in conn.execute("""
        SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef AS d
        JOIN pg_attribute AS a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
        WHERE d.adrelid = %s::regclass""", (table,)).fetchall():
        calls = re.findall(r"([a-z_][a-z0-9_]*)\s*\(", default.lower())
        clock = {"now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday"}
        volatile = [c for c in calls if c in clock or conn.execute(
            "SELECT bool_or(provolatile = 'v') FROM pg_proc WHERE proname = %s", (c,)).fetchone()[0]]
        if volatile or re.search(r"\bcurrent_(timestamp|time|date)\b|\blocal(time|timestamp)\b", default.lower()):
            found.add(column)
    return found


def rows(conn: psycopg.Connection, table: str, masked: set[str]) -> TableRows:
    key = tuple(c for (c,) in conn.execute("""
        SELECT a.attname FROM pg_index AS x
        JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k (attnum, n) ON true
        JOIN pg_attribute AS a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
        WHERE x.indrelid = %s::regclass AND x.indisprimary ORDER BY k.n""", (table,)).fetchall()) or None
    if key and masked & set(key):
        key = None
    schema_, name = table.split(".", 1)
    fetched = conn.execute(sql.SQL("SELECT to_jsonb(t) - %s::text[] FROM {} AS t").format(
        sql.Identifier(schema_, name)), (sorted(masked),)).fetchall()
    result = TableRows(key, tuple(sorted(masked)), {} if key else Counter())
    for (row,) in fetched:
        if key:
            result.rows[json.dumps([row[c] for c in key])] = row
        else:
            result.rows[json.dumps(row, sort_keys=True)] += 1
    return result


# ---------------------------------------------------------------------------------------------
# Comparing


@dataclass
class Report:
    """Differences found, by section, each a list of readable lines; and notes that are not
    differences (bookkeeping present on one side only)."""

    limit: int = 20
    sections: dict[str, list[str]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, line: str) -> None:
        self.totals[section] = self.totals.get(section, 0) + 1
        lines = self.sections.setdefault(section, [])
        if len(lines) < self.limit:
            lines.append(line)

    def __bool__(self) -> bool:
        return bool(self.totals)

    def text(self, left: str, right: str) -> str:
        out = [f"A = {left}", f"B = {right}"]
        for section, lines in self.sections.items():
            total = self.totals[section]
            shown = f" (first {len(lines)} of {total})" if total > len(lines) else f" ({total})"
            out.append(f"\n{section}: differences{shown}")
            out += [f"  {line}" for line in lines]
        if self.notes:
            out.append("\nnot compared (rollback bookkeeping on one side only):")
            out += [f"  {note}" for note in self.notes]
        return "\n".join(out)


def _show(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def compare_schemas(a: dict[str, dict], b: dict[str, dict], report: Report, *, exempt_bookkeeping: bool = True
                    ) -> set[str]:
    """Adds the schema's differences; returns the bookkeeping owners present on one side only,
    which are noted, not compared (nor their rows), unless `exempt_bookkeeping` is off."""
    one_sided: set[str] = set()
    for side, mine, theirs in (("A", a, b), ("B", b, a)) if exempt_bookkeeping else ():
        owners_here = {o["owner"] for o in mine.values()}
        owners_there = {o["owner"] for o in theirs.values()}
        for owner in sorted(owners_here - owners_there):
            if is_bookkeeping(owner):
                one_sided.add(owner)
                report.notes.append(f"{owner}: only in {side}")
    for key in sorted(a.keys() | b.keys()):
        left, right = a.get(key), b.get(key)
        if (left or right)["owner"] in one_sided:
            continue
        if left is None:
            report.add("schema", f"{key}: only in B: {_show(right)}")
        elif right is None:
            report.add("schema", f"{key}: only in A: {_show(left)}")
        elif left != right:
            facts = [f"{k}: A {_show(left.get(k))} / B {_show(right.get(k))}"
                     for k in sorted(left.keys() | right.keys()) if left.get(k) != right.get(k)]
            report.add("schema", f"{key}: " + "; ".join(facts))
    return one_sided


def compare_rows(table: str, a: TableRows, b: TableRows, report: Report, section: str = "rows") -> None:
    if a.key != b.key or a.masked != b.masked:
        report.add(section, f"{table}: compared differently: key A {a.key} / B {b.key}, masked A {a.masked} / "
                   f"B {b.masked}")
        return
    if a.key is None:
        for row, count in sorted((a.rows - b.rows).items()):
            report.add(section, f"{table}: only in A ({count}x): {_trim(row)}")
        for row, count in sorted((b.rows - a.rows).items()):
            report.add(section, f"{table}: only in B ({count}x): {_trim(row)}")
        return
    for key in sorted(a.rows.keys() | b.rows.keys()):
        left, right = a.rows.get(key), b.rows.get(key)
        if left is None:
            report.add(section, f"{table} {key}: only in B: {_show(right)}")
        elif right is None:
            report.add(section, f"{table} {key}: only in A: {_show(left)}")
        elif left != right:
            columns = [f"{c}: A {_show(left.get(c))} / B {_show(right.get(c))}"
                       for c in sorted(left.keys() | right.keys()) if left.get(c) != right.get(c)]
            report.add(section, f"{table} {key}: " + "; ".join(columns))


def _trim(text: str) -> str:
    return text if len(text) <= 300 else text[:297] + "..."


def compare_values(section: str, a: list, b: list, report: Report) -> None:
    """Two lists of (label, value): the workload's outcomes, a function's results."""
    for (label_a, left), (label_b, right) in zip(a, b):
        if label_a != label_b or left != right:
            report.add(section, f"{label_a}: A {_show(left)} / B {_show(right)}")
    if len(a) != len(b):
        report.add(section, f"A has {len(a)} results, B {len(b)}")
