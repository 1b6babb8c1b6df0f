"""What breaks when a statement drops, renames or retypes a table or some of its columns.

The preview asks `find_dependents(conn, table, columns, action=...)` about a live database and
gets one `Dependent` per object (or, in a function body, per place) that a careful DBA would
want to hear about before running the statement. It only reads the catalog (SELECTs, safe
in the preview's READ ONLY transaction): a few catalog queries, then PostgreSQL's own
parsers (through pglast) over the function bodies the catalog cannot see into.

Two sources, because PostgreSQL knows about some uses and not others:

**What pg_depend records** (views, materialized views, rules, policies, triggers' WHEN
clauses and UPDATE OF lists, generated columns, indexes, constraints, extended statistics,
SQL-standard function bodies (BEGIN ATOMIC / RETURN, PostgreSQL 14+), function signatures
and other tables' columns of the table's row type, column defaults using a sequence the
table owns). These refer to columns by number, so:

- drop: PostgreSQL's own rule decides. An object with an automatic ('a') or internal ('i')
  dependency on what is dropped goes with it silently; an object with only a normal ('n')
  dependency makes the DROP fail unless CASCADE, which drops it too. Those are reported
  ("the DROP fails unless CASCADE, which drops this view too"), following automatic
  dependencies as far as PostgreSQL does: a sequence the dropped column owns goes with
  it, so another table's default that uses the sequence blocks the DROP too; the column
  goes from partitions and inheriting children too, so a view on a partition counts. Of what goes
  silently, the objects that belong to the dropped columns alone (a single-column index,
  NOT NULL, the column's own default and sequence, a check on that column only) are *not*
  reported: nothing is lost with them. What also covers columns that stay *is* reported
  ("dropped with the column"): a unique index on (a, b) losing a silently drops the
  uniqueness of b, a two-column check stops checking the other column. A primary key is
  always reported (the table no longer has one), and so are the partitions a DROP TABLE
  takes with it, rows and all. When the whole table is dropped, its own indexes,
  constraints, triggers, policies and rules go with it and are not reported.
- retype: ALTER COLUMN TYPE refuses to run while a view, rule, policy, trigger definition,
  generated column, SQL-standard function body, or another table's column of this row
  type uses the column (reported: "PostgreSQL refuses ..."). It rebuilds check constraints
  and foreign keys and re-checks them, which fails when the expression or the other side
  no longer fits the new type (reported: "the ALTER rebuilds it and re-checks it"). Indexes, unique and
  primary keys, statistics and defaults are rebuilt and keep working: not reported.
- rename: nothing in pg_depend breaks, since it follows the object, not its name (a
  view keeps working, its output column keeps its old name). Not reported.

**What pg_depend does not record**: the bodies of PL/pgSQL functions and of SQL functions
with a string body are text, resolved by name at run time. Candidates are the functions
outside pg_catalog, information_schema, pg_toast and `rollout`, not belonging to an
extension, whose source mentions the table's name, plus the trigger functions of the
table. Each PL/pgSQL body is parsed with pglast's PL/pgSQL parser (on
pg_get_functiondef, so parameters are known); each embedded query or expression, and
each SQL body, with PostgreSQL's SQL parser. Only real references count: ColumnRef and
RangeVar nodes, INSERT/UPDATE/MERGE target columns, ON CONFLICT columns, %TYPE and
%ROWTYPE declarations; a name inside a string literal, a comment or dynamic SQL text
(EXECUTE '...') is not a use. A function is reported when it uses the table and, if
columns are given, one of them: unqualified or through the table's name or alias in a
query that reads the table, or qualified by a record variable anywhere in a function that
uses the table (`r.role` after `SELECT * INTO r FROM users`); for a drop, also an INSERT
into the table without a column list (its values are positional). A trigger function of
the table using NEW.col or OLD.col is reported as the trigger: after the drop or rename
every write that fires it fails (`record "new" has no field "role"`). `line` is the body
line as PostgreSQL's error context counts it ("PL/pgSQL function audit() line 4 at IF"):
the statement's line plus the lines inside its query. For a retype these uses only *may*
break (PL/pgSQL converts values at run time; a cast, comparison or assignment can fail),
and the detail says so. Bodies that cannot be parsed, and bodies in other languages, are
reported as "cannot tell" when their text mentions the column (or table) as a word.

Limits: unqualified table names in bodies are taken to mean the table whatever the
search_path; a CTE named like the table counts as the table; only direct dependents are
listed (a view over a reported view goes with it on CASCADE); dynamic SQL is not
followed; SELECT * results whose shape a drop changes are not reported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import psycopg
from pglast import parse_plpgsql
from pglast.parser import ParseError, parse_sql_json, scan
from psycopg.rows import dict_row

ACTIONS = ("drop", "rename", "retype")
SKIPPED_SCHEMAS = ("information_schema", "rollout")  # and every pg_* schema: pg_catalog, pg_toast, pg_temp_N


@dataclass(frozen=True)
class Dependent:
    """One object, or one place in a function body, that the change breaks or takes along.

    kind: "view", "materialized view", "rule", "policy", "trigger", "generated column",
    "index", "primary key", "unique constraint", "exclusion constraint", "check constraint",
    "foreign key", "statistics", "column default", "column" (another table's column of the
    table's row type), "table" (an inheriting child), "partition", "function", "procedure".
    detail: for a catalog object, what it uses and what happens ("... the DROP fails unless
    CASCADE ...", "dropped with the column, so (org) is no longer unique", "PostgreSQL
    refuses ..."); for a body, 'line N: what it names', with "(may break ...)" for a
    retype, or "body could not be parsed (...): it may use ..." when it cannot tell."""
    kind: str          # "view", "materialized view", "rule", "policy", "trigger", "function", ...
    name: str          # e.g. 'view public.active_users', 'trigger audit_trg on public.users (function public.audit())'
    detail: str        # what in it uses the target and what happens to it, e.g. 'line 4: NEW.role'
    line: int | None   # line within the function body when known


@dataclass(frozen=True)
class _Target:
    """The table as the catalog knows it, and the column names asked about."""
    oid: int
    schema: str
    name: str
    identity: str              # schema-qualified and quoted as needed: public."Orders"
    columns: tuple[str, ...]   # empty: the whole table


def find_dependents(conn, table: str, columns: tuple[str, ...] = (), *, action: str) -> list[Dependent]:
    """Every object that would break (or silently go) if `table`, or its `columns`, were
    dropped, renamed or retyped (`action`), sorted by kind and name. Reads only."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if action == "retype" and not columns:
        raise ValueError("a retype names the columns whose type changes")
    target = _resolve(conn, table, tuple(columns))
    if target is None:
        return []
    found = _catalog_dependents(conn, target, action) if action != "rename" else []
    for function in _candidate_functions(conn, target):
        found += _function_dependents(function, target, action)
    return sorted(set(found), key=lambda d: (d.kind, d.name, d.line or 0, d.detail))


def _resolve(conn, table: str, columns: tuple[str, ...]) -> _Target | None:
    """The table `table` names, or None when there is none. Inside a savepoint, because
    PostgreSQL 15's to_regclass raises on bad name syntax, which would abort the caller's
    transaction."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            row = cur.execute(
                "SELECT c.oid, n.nspname, c.relname, (pg_identify_object('pg_class'::regclass, c.oid, 0)).identity"
                "  FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                " WHERE c.oid = to_regclass(%s)", (table,)).fetchone()
    except (psycopg.errors.InvalidName, psycopg.errors.SyntaxError):
        return None
    return None if row is None else _Target(row[0], row[1], row[2], row[3], columns)


# --- what pg_depend records ----------------------------------------------------------------

# The target: the table (subid 0) or its columns, with the same columns of the partitions
# and inheritance children they are dropped or retyped from too.
_TARGET_CTE = """
tables(relid) AS (
    SELECT %(rel)s::oid
    UNION
    SELECT i.inhrelid FROM pg_inherits AS i JOIN tables AS t ON i.inhparent = t.relid
), target(classid, objid, objsubid) AS (
    SELECT 'pg_class'::regclass::oid, %(rel)s::oid, 0 WHERE cardinality(%(columns)s::text[]) = 0
    UNION ALL
    SELECT 'pg_class'::regclass::oid, a.attrelid, a.attnum::int
      FROM pg_attribute AS a JOIN tables AS t ON a.attrelid = t.relid
     WHERE a.attname = ANY (%(columns)s::text[]) AND a.attnum > 0 AND NOT a.attisdropped
       AND (a.attrelid = %(rel)s OR NOT a.attislocal)
), rowtype(typid) AS (
    SELECT t.oid FROM pg_class AS c JOIN pg_type AS t ON t.oid = c.reltype WHERE c.oid = %(rel)s
    UNION ALL
    SELECT t.typarray FROM pg_class AS c JOIN pg_type AS t ON t.oid = c.reltype WHERE c.oid = %(rel)s
)"""

# drop: PostgreSQL's own walk. `gone` is what the DROP removes silently (automatic and
# internal dependencies, followed); `blocks` are normal dependents of anything gone that
# are not gone themselves (the DROP fails unless CASCADE); `goes` are the indexes,
# constraints and statistics (and, for a table, partitions) gone through a direct
# automatic dependency; `rowtype` are other tables' columns storing this table's rows.
_DROP_SQL = """
WITH RECURSIVE""" + _TARGET_CTE + """, gone(classid, objid, objsubid) AS (
    SELECT classid, objid, objsubid FROM target
    UNION
    SELECT d.classid, d.objid, d.objsubid
      FROM pg_depend AS d JOIN gone AS g
        ON d.refclassid = g.classid AND d.refobjid = g.objid AND g.objsubid IN (0, d.refobjsubid)
     WHERE d.deptype IN ('a', 'i')
), found AS (
    SELECT d.classid, d.objid, d.objsubid, 'blocks' AS effect,
           array_agg(DISTINCT pg_describe_object(d.refclassid, d.refobjid, g.objsubid)) AS uses
      FROM pg_depend AS d JOIN gone AS g
        ON d.refclassid = g.classid AND d.refobjid = g.objid AND g.objsubid IN (0, d.refobjsubid)
     WHERE d.deptype = 'n'
       AND NOT EXISTS (SELECT FROM gone AS x
                        WHERE x.classid = d.classid AND x.objid = d.objid AND x.objsubid IN (0, d.objsubid))
     GROUP BY 1, 2, 3
    UNION ALL
    SELECT d.classid, d.objid, d.objsubid, 'goes',
           array_agg(DISTINCT pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid))
      FROM pg_depend AS d JOIN target AS t
        ON d.refclassid = t.classid AND d.refobjid = t.objid AND t.objsubid IN (0, d.refobjsubid)
     WHERE d.deptype = 'a'
       AND d.classid IN ('pg_class'::regclass, 'pg_constraint'::regclass, 'pg_statistic_ext'::regclass)
     GROUP BY 1, 2, 3
    UNION ALL
    SELECT d.classid, d.objid, d.objsubid, 'rowtype', ARRAY[pg_describe_object(d.refclassid, d.refobjid, 0)]
      FROM pg_depend AS d JOIN rowtype AS r ON d.refclassid = 'pg_type'::regclass AND d.refobjid = r.typid
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid > 0 AND d.deptype = 'n'
       AND cardinality(%(columns)s::text[]) > 0
)"""

# retype: what ALTER COLUMN TYPE looks at, the direct dependents of the columns, and the
# columns of other tables storing this table's row type.
_RETYPE_SQL = """
WITH RECURSIVE""" + _TARGET_CTE + """, found AS (
    SELECT d.classid, d.objid, d.objsubid, 'retype' AS effect,
           array_agg(DISTINCT pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid)) AS uses
      FROM pg_depend AS d JOIN target AS t
        ON d.refclassid = t.classid AND d.refobjid = t.objid AND d.refobjsubid = t.objsubid
     WHERE d.deptype IN ('n', 'a')
     GROUP BY 1, 2, 3
    UNION ALL
    SELECT d.classid, d.objid, d.objsubid, 'rowtype', ARRAY[pg_describe_object(d.refclassid, d.refobjid, 0)]
      FROM pg_depend AS d JOIN rowtype AS r ON d.refclassid = 'pg_type'::regclass AND d.refobjid = r.typid
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid > 0 AND d.deptype = 'n'
)"""

# A function as a DBA writes it: public.add_user(integer, text). (pg_identify_object says
# pg_catalog.text for text.) Needs pg_proc AS p and its pg_namespace AS pn.
_FUNCTION_NAME = """quote_ident(pn.nspname) || '.' || quote_ident(p.proname) || '(' ||
       array_to_string(ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t), ', ') || ')'"""

# The facts that name each found object and say what it is; `kept` are the columns of the
# table (or its partitions) it also uses that are not in the target.
_DESCRIBE_SQL = """
SELECT f.effect, f.uses, f.classid::regclass::text AS catalog, f.objsubid,
       (pg_identify_object(f.classid, f.objid, f.objsubid)).type,
       (pg_identify_object(f.classid, f.objid, f.objsubid)).identity,
       r.rulename, rc.relkind AS rule_relkind,
       (pg_identify_object('pg_class'::regclass, r.ev_class, 0)).identity AS rule_relation,
       con.contype, att.attgenerated <> '' AS generated,
       (pg_identify_object('pg_class'::regclass, ad.adrelid, ad.adnum)).identity AS column_identity,
       cl.relkind, ix.indisunique, p.prokind, """ + _FUNCTION_NAME + """ AS function_name,
       ARRAY(SELECT DISTINCT a.attname
               FROM pg_depend AS d JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
              WHERE d.classid = f.classid AND d.objid = f.objid AND d.refclassid = 'pg_class'::regclass
                AND d.refobjid IN (SELECT relid FROM tables) AND d.refobjsubid > 0
                AND NOT EXISTS (SELECT FROM target AS t WHERE t.objid = d.refobjid AND t.objsubid IN (0, d.refobjsubid))
              ORDER BY 1) AS kept
  FROM found AS f
  LEFT JOIN pg_rewrite AS r ON f.classid = 'pg_rewrite'::regclass AND r.oid = f.objid
  LEFT JOIN pg_class AS rc ON rc.oid = r.ev_class
  LEFT JOIN pg_constraint AS con ON f.classid = 'pg_constraint'::regclass AND con.oid = f.objid
  LEFT JOIN pg_attrdef AS ad ON f.classid = 'pg_attrdef'::regclass AND ad.oid = f.objid
  LEFT JOIN pg_attribute AS att ON att.attrelid = ad.adrelid AND att.attnum = ad.adnum
  LEFT JOIN pg_class AS cl ON f.classid = 'pg_class'::regclass AND cl.oid = f.objid
  LEFT JOIN pg_index AS ix ON ix.indexrelid = cl.oid
  LEFT JOIN pg_proc AS p ON f.classid = 'pg_proc'::regclass AND p.oid = f.objid
  LEFT JOIN pg_namespace AS pn ON pn.oid = p.pronamespace
"""

_CONSTRAINT_KINDS = {"c": "check constraint", "f": "foreign key", "p": "primary key", "u": "unique constraint",
                     "x": "exclusion constraint", "n": "not null constraint", "t": "constraint trigger"}

# retype: the kinds ALTER COLUMN TYPE refuses to work around, with PostgreSQL's words.
_RETYPE_REFUSED = {"view": "a view or rule", "materialized view": "a view or rule", "rule": "a view or rule",
                   "policy": "a policy definition", "trigger": "a trigger definition",
                   "generated column": "a generated column", "function": "a function or procedure",
                   "procedure": "a function or procedure"}
_RETYPE_RECHECKED = {"check constraint": "re-checks it: the ALTER fails if its expression does not fit the new "
                                         "type or a row no longer passes",
                     "foreign key": "re-validates it: the ALTER fails if the two sides' types are no longer "
                                    "compatible"}


def _catalog_dependents(conn, target: _Target, action: str) -> list[Dependent]:
    """The objects pg_depend ties to the target that the drop or retype breaks or takes along."""
    query = (_DROP_SQL if action == "drop" else _RETYPE_SQL) + _DESCRIBE_SQL
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, {"rel": target.oid, "columns": list(target.columns)}).fetchall()
    found = []
    for row in rows:
        kind, name = _kind_and_name(row)
        detail = _drop_detail(row, kind, target) if action == "drop" else _retype_detail(row, kind)
        if detail:
            found.append(Dependent(kind, name, detail, None))
    return found


def _kind_and_name(row: dict) -> tuple[str, str]:
    """What a catalog object is, in a DBA's words, and its qualified name."""
    catalog, identity = row["catalog"], row["identity"]
    if catalog == "pg_rewrite" and row["rulename"] == "_RETURN" and row["rule_relkind"] in ("v", "m"):
        kind = "view" if row["rule_relkind"] == "v" else "materialized view"
        return kind, f"{kind} {row['rule_relation']}"
    if catalog == "pg_class" and row["objsubid"] > 0:
        kind = "column"
    elif catalog == "pg_class":
        kind = {"i": "index", "I": "index", "S": "sequence"}.get(row["relkind"],
                                                               "partition" if row["effect"] == "goes" else "table")
    elif catalog == "pg_proc":
        kind, identity = ("procedure" if row["prokind"] == "p" else "function"), row["function_name"]
    elif catalog == "pg_attrdef":
        kind, identity = ("generated column" if row["generated"] else "column default"), row["column_identity"]
    else:
        kind = {"pg_rewrite": "rule", "pg_policy": "policy", "pg_trigger": "trigger",
                "pg_statistic_ext": "statistics",
                "pg_constraint": _CONSTRAINT_KINDS.get(row["contype"], "constraint")}.get(catalog, row["type"])
    return kind, f"{kind} {identity}"


def _drop_detail(row: dict, kind: str, target: _Target) -> str | None:
    """What the drop does to the object, or None when it goes harmlessly with what is dropped."""
    uses = ", ".join(row["uses"])
    if row["effect"] == "blocks":
        return f"uses {uses}: the DROP fails unless CASCADE, which drops this {kind} too"
    if row["effect"] == "rowtype":
        return f"stores rows of {target.identity}: the dropped fields are lost from its values too"
    if not target.columns:  # the table's own objects go with it; only its partitions are news
        return "dropped with the table, rows and all" if kind == "partition" else None
    kept = ", ".join(row["kept"])
    if kind == "primary key":
        return f"uses {uses}: dropped with the column: the table no longer has a primary key"
    if not kept:  # it belonged to the dropped columns alone
        return None
    lost = {"check constraint": f"so {kept} is no longer checked",
            "foreign key": f"so {kept} is no longer checked against the referenced table",
            "unique constraint": f"so ({kept}) is no longer unique",
            "exclusion constraint": f"so {kept} is no longer constrained",
            "statistics": "so the planner loses these statistics"}.get(kind)
    if kind == "index":
        lost = f"so ({kept}) is no longer unique" if row["indisunique"] else f"so queries on {kept} lose it"
    return f"uses {uses}: dropped with the column, {lost or 'though it also uses ' + kept}"


def _retype_detail(row: dict, kind: str) -> str | None:
    """What ALTER COLUMN TYPE does about the object, or None when it rebuilds it unharmed."""
    uses = ", ".join(row["uses"])
    if row["effect"] == "rowtype":
        return (f"stores values of {uses}: PostgreSQL refuses to change a column's type while another "
                "table's column stores the table's row type")
    if kind in _RETYPE_REFUSED:
        return (f"uses {uses}: PostgreSQL refuses to change the type of a column used by "
                f"{_RETYPE_REFUSED[kind]}; drop it before the ALTER and create it again after")
    if kind in _RETYPE_RECHECKED:
        return f"uses {uses}: the ALTER rebuilds it and {_RETYPE_RECHECKED[kind]}"
    return None


# --- function bodies pg_depend does not see into -------------------------------------------

_FUNCTIONS_SQL = """
SELECT p.oid, p.prokind, l.lanname AS language, p.prosrc, """ + _FUNCTION_NAME + """ AS identity,
       CASE WHEN l.lanname = 'plpgsql' THEN pg_get_functiondef(p.oid) END AS definition,
       ARRAY(SELECT quote_ident(t.tgname) FROM pg_trigger AS t
              WHERE t.tgfoid = p.oid AND t.tgrelid = %(rel)s AND NOT t.tgisinternal ORDER BY 1) AS triggers
  FROM pg_proc AS p
  JOIN pg_namespace AS pn ON pn.oid = p.pronamespace
  JOIN pg_language AS l ON l.oid = p.prolang
 WHERE pn.nspname <> ALL (%(skipped)s::text[]) AND left(pn.nspname, 3) <> 'pg_'
   AND p.prokind IN ('f', 'p') AND l.lanname NOT IN ('c', 'internal') AND p.prosqlbody IS NULL
   AND NOT EXISTS (SELECT FROM pg_depend AS e
                    WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')
   AND (strpos(lower(p.prosrc), lower(%(name)s)) > 0
        OR EXISTS (SELECT FROM pg_trigger AS t WHERE t.tgfoid = p.oid AND t.tgrelid = %(rel)s))
 ORDER BY p.oid
"""


def _candidate_functions(conn, target: _Target) -> list[dict]:
    """User functions with text bodies that mention the table's name, and the table's
    trigger functions, with what their analysis needs, in one query."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_FUNCTIONS_SQL, {"rel": target.oid, "name": target.name,
                                            "skipped": list(SKIPPED_SCHEMAS)}).fetchall()


@dataclass(frozen=True)
class _Use:
    """One place in a body that uses the target."""
    line: int | None
    text: str
    row: bool = False        # NEW.col / OLD.col: the row of the trigger's table
    unknown: bool = False    # a piece that could not be parsed but mentions the name


class _Unparsable(Exception):
    """A body we cannot analyse; the message says why."""


def _function_dependents(function: dict, target: _Target, action: str) -> list[Dependent]:
    """The Dependents one function body gives: its triggers on the table for NEW/OLD uses,
    the function itself for the rest, or a "cannot tell" when its body cannot be read."""
    kind = "procedure" if function["prokind"] == "p" else "function"
    name = f"{kind} {function['identity']}"
    try:
        uses, mentions_table = _body_uses(function, target, action)
    except _Unparsable as reason:
        return _cannot_tell(function, target, kind, name, str(reason))
    may_break = (" (may break with the new type: values are converted at run time, where a cast, comparison "
                 "or assignment can fail)" if action == "retype" else "")
    found = []
    for use in uses:
        detail = f"line {use.line}: {use.text}" if use.line else use.text
        if use.unknown:
            detail = f"{detail}: could not be parsed, and it mentions {_words(target)}"
        if use.row:
            found += [Dependent("trigger", f"trigger {trigger} on {target.identity} (function {function['identity']})",
                                detail + may_break, use.line) for trigger in function["triggers"]]
        elif mentions_table:
            found.append(Dependent(kind, name, detail + may_break, use.line))
    return found


def _cannot_tell(function: dict, target: _Target, kind: str, name: str, reason: str) -> list[Dependent]:
    """A body that could not be analysed is reported only if its text names the table (or is
    one of the table's triggers) and one of the columns, as whole words."""
    text = function["prosrc"] or ""
    table_named = bool(function["triggers"] and target.columns) or _mentions(text, target.name)
    if not table_named or (target.columns and not any(_mentions(text, c) for c in target.columns)):
        return []
    return [Dependent(kind, name, f"body could not be parsed ({reason}): it may use {_words(target)}", None)]


def _mentions(text: str, word: str) -> bool:
    """`word` appears in `text` as a whole word, in any case (PostgreSQL's \\m...\\M)."""
    return re.search(rf"(?<![\w$]){re.escape(word)}(?![\w$])", text, re.IGNORECASE) is not None


def _words(target: _Target) -> str:
    return f"{target.identity}.{', '.join(target.columns)}" if target.columns else target.identity


def _body_uses(function: dict, target: _Target, action: str) -> tuple[list[_Use], bool]:
    """The uses in one body, and whether the body uses the table at all."""
    if function["language"] == "plpgsql":
        return _plpgsql_uses(function["definition"], target, action)
    if function["language"] == "sql":
        try:
            statements = json.loads(parse_sql_json(function["prosrc"]))["stmts"]
        except ParseError as error:
            raise _Unparsable(str(error)) from None
        source = function["prosrc"].encode()
        uses, mentions = [], False
        for statement in statements:
            found, named = _query_uses(statement, target, action)
            mentions |= named
            uses += [_Use(1 + source[:at].count(b"\n"), text, row) for at, text, row in found]
        return uses, mentions
    raise _Unparsable(f"LANGUAGE {function['language']} is not analysed")


def _plpgsql_uses(definition: str, target: _Target, action: str) -> tuple[list[_Use], bool]:
    """The uses in a PL/pgSQL body: its expressions and queries, and its %TYPE declarations."""
    try:
        tree = parse_plpgsql(definition)
    except ParseError as error:
        raise _Unparsable(str(error)) from None
    uses, mentions = _declared_types(tree, target)
    for line, query, mode in _expressions(tree):
        text, shift = _as_statement(query, mode)
        try:
            statements = json.loads(parse_sql_json(text))["stmts"]
        except ParseError:
            if any(_mentions(query, word) for word in (target.columns or (target.name,))):
                uses.append(_Use(line, _shorten(query), unknown=True))
            continue
        source = text.encode()
        for statement in statements:
            found, named = _query_uses(statement, target, action)
            mentions |= named
            uses += [_Use(line + source[shift:max(at, shift)].count(b"\n"), text, row) for at, text, row in found]
    return uses, mentions


def _shorten(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _expressions(tree, line: int | None = None):
    """(line, query, parse mode) of every PLpgSQL_expr in a PL/pgSQL parse tree; the line is
    that of the nearest enclosing statement or declaration."""
    if isinstance(tree, dict):
        line = tree.get("lineno", line)
        if "PLpgSQL_expr" in tree:
            expr = tree["PLpgSQL_expr"]
            yield line or 1, expr["query"], expr.get("parseMode", 0)
            return
        for value in tree.values():
            yield from _expressions(value, line)
    elif isinstance(tree, list):
        for value in tree:
            yield from _expressions(value, line)


# PostgreSQL's RawParseMode for PL/pgSQL: 0 a statement, 2 an expression, 3-5 an assignment.
_EXPRESSION, _ASSIGNMENTS = 2, (3, 4, 5)


def _as_statement(query: str, mode: int) -> tuple[str, int]:
    """A PL/pgSQL expression or assignment as an SQL statement the SQL parser takes, and how
    many bytes were put in front (same-length edits keep the other offsets)."""
    if mode == _EXPRESSION:
        return "SELECT " + query, 7
    if mode in _ASSIGNMENTS:  # "target := value" becomes "SELECT target , value"
        raw = query.encode()
        for token in scan(query):
            if token.name in ("COLON_EQUALS", "ASCII_61"):
                raw = raw[:token.start] + (b", " if token.name == "COLON_EQUALS" else b",") + raw[token.end + 1:]
                return "SELECT " + raw.decode(), 7
        return "SELECT " + query, 7
    return query, 0


def _declared_types(tree, target: _Target) -> tuple[list[_Use], bool]:
    """Declarations `v users.role%TYPE` and `r users%ROWTYPE`: they name the table (and a
    column) outside any query."""
    uses, mentions = [], False
    datums = tree[0]["PLpgSQL_function"].get("datums", []) if tree else []
    for datum in datums:
        for item in datum.values():
            typname = item.get("datatype", {}).get("PLpgSQL_type", {}).get("typname", "")
            match = re.fullmatch(r"(.+)%(type|rowtype)", typname, re.IGNORECASE)
            if not match:
                continue
            names = _identifiers(match.group(1))
            if match.group(2).lower() == "type" and len(names) >= 2 and _is_table(names[:-1], target):
                mentions = True
                if not target.columns or names[-1] in target.columns:
                    uses.append(_Use(item.get("lineno"), typname))
            elif match.group(2).lower() == "rowtype" and _is_table(names, target):
                mentions = True
                if not target.columns:
                    uses.append(_Use(item.get("lineno"), typname))
    return uses, mentions


def _identifiers(dotted: str) -> list[str]:
    """`public."Orders".x` as PostgreSQL reads it: ['public', 'Orders', 'x']."""
    return [part[1:-1].replace('""', '"') if part.startswith('"') else part.lower()
            for part in re.findall(r'"(?:[^"]|"")*"|[^."]+', dotted)]


def _is_table(names: list[str], target: _Target) -> bool:
    """[schema.]table names the target (an unqualified name is taken to mean it)."""
    return bool(names) and names[-1] == target.name and (len(names) == 1 or names[-2] == target.schema)


# --- one parsed SQL statement ----------------------------------------------------------------

def _nodes(tree):
    """(key, dict) for every dict in a JSON parse tree: a node type such as "ColumnRef" for
    wrapped nodes, a field name such as "relation" for the RangeVars held bare."""
    stack = [("", tree)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, dict):
            yield key, item
            stack.extend(item.items())
        elif isinstance(item, list):
            stack.extend((key, value) for value in item)


def _query_uses(statement: dict, target: _Target, action: str) -> tuple[list[tuple[int, str, bool]], bool]:
    """Where one parsed statement uses the target: (byte offset, text, is NEW/OLD), and
    whether it reads or writes the table at all."""
    nodes = list(_nodes(statement))
    relations = [node for _, node in nodes if "relname" in node]
    ours = [r for r in relations if _is_table([r.get("schemaname"), r["relname"]] if r.get("schemaname")
                                             else [r["relname"]], target)]
    if not target.columns:
        return [(r.get("location", 0), _relation_text(r), False) for r in ours], bool(ours)
    our_names = {_alias(r) for r in ours} | {target.name}
    other_names = {_alias(r) for r in relations if r not in ours} - our_names
    found = []
    for key, node in nodes:
        if key == "ColumnRef":
            found += _column_ref_use(node, target, bool(ours), other_names)
        elif key in ("InsertStmt", "UpdateStmt", "MergeStmt") and node["relation"] in ours:
            found += _target_list_uses(node, target, action)
        elif key == "IndexElem" and ours and node.get("name") in target.columns:
            found.append((ours[0].get("location", 0), node["name"], False))
    return found, bool(ours)


def _alias(relation: dict) -> str:
    return relation.get("alias", {}).get("aliasname") or relation["relname"]


def _relation_text(relation: dict) -> str:
    return ".".join(filter(None, (relation.get("schemaname"), relation["relname"])))


def _column_ref_use(node: dict, target: _Target, reads_table: bool, other_names: set[str]):
    """A column reference that names one of the columns: NEW.col / OLD.col (the trigger's
    row), unqualified or through the table in a query on it, or through a record variable."""
    names = [field["String"]["sval"] for field in node["fields"] if "String" in field]
    if not names or "A_Star" in node["fields"][-1] or names[-1] not in target.columns:
        return []
    qualifier = names[-2] if len(names) > 1 else None
    text = ".".join(names)
    if len(names) == 2 and qualifier in ("new", "old"):
        return [(node.get("location", 0), f"{qualifier.upper()}.{names[-1]}", True)]
    if (qualifier is None and reads_table) or (qualifier is not None and qualifier not in other_names):
        return [(node.get("location", 0), text, False)]
    return []


def _target_list_uses(node: dict, target: _Target, action: str):
    """Columns an INSERT, UPDATE or MERGE into the table names as targets; for a drop, an
    INSERT without a column list (its values are positional)."""
    lists = [node.get("cols", []), node.get("targetList", []),
             node.get("onConflictClause", {}).get("targetList", [])]
    for clause in node.get("mergeWhenClauses", []):
        lists.append(clause.get("MergeWhenClause", {}).get("targetList", []))
    found = [(item["ResTarget"].get("location", 0), item["ResTarget"]["name"], False)
             for items in lists for item in items
             if "ResTarget" in item and item["ResTarget"].get("name") in target.columns]
    if action == "drop" and "selectStmt" in node and not node.get("cols") and "relation" in node:
        found.append((node["relation"].get("location", 0),
                      f"INSERT INTO {_relation_text(node['relation'])} without a column list", False))
    return found
