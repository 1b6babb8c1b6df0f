"""What the catalog says a statement reaches beyond the relations it names: each question
(`Expand.what`) is a function of the connection, the subject (a relation's oid, or a name for
the questions in BY_NAME) and the Expand, returning (relation, lock, why) for each relation
PostgreSQL also locks: partitions, views' tables, foreign keys' other side, CASCADE's reach,
sequences, indexes. Only SELECTs on the catalog: they run in the preview's READ ONLY transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from .expand import Expand
from .lockmode import Lock


RELATION = """
    SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind
      FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
"""


def _names(conn, query: str, params, lock: Lock, why: str) -> list[tuple[str, Lock, str]]:
    rows = conn.execute(f"{RELATION} WHERE c.oid IN ({query})", params).fetchall()
    return [(row[1], lock, why) for row in rows]


def _children(conn, oid, q):
    return _names(conn, """
        WITH RECURSIVE tree(oid) AS (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s
                                     UNION SELECT i.inhrelid FROM pg_inherits AS i JOIN tree ON i.inhparent = tree.oid)
        SELECT oid FROM tree""", (oid,), q.lock, "partition or child")


def view_tables(conn, oid, q, kinds=("v",)):
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
            for name, action, why, _ in reached(conn, oid, q.columns, _EVENT[q.what])]


_EVENT = {"foreign_keys_in_delete": "DELETE", "foreign_keys_in_update": "UPDATE"}


CASCADING = set(_EVENT)


def reached(conn, oid, columns, event: str) -> list[tuple[str, str, str, tuple]]:
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
    return _names(conn, """
        WITH RECURSIVE tree(oid) AS (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s
                                     UNION SELECT i.inhrelid FROM pg_inherits AS i JOIN tree ON i.inhparent = tree.oid)
        SELECT tree.oid FROM tree JOIN pg_class AS c ON c.oid = tree.oid WHERE c.relkind IN ('r', 'm', 'f')""",
                  (oid,), q.lock, "partition or child")


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
    on them (the policies naming the role are `role_policies`)."""
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


def _inheritors(conn, oid, q):
    """Inheritance children (not partitions), at every level."""
    return _names(conn, """
        WITH RECURSIVE tree(oid) AS (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s
                                     UNION SELECT i.inhrelid FROM pg_inherits AS i JOIN tree ON i.inhparent = tree.oid)
        SELECT tree.oid FROM tree JOIN pg_class AS c ON c.oid = tree.oid WHERE NOT c.relispartition""",
                  (oid,), q.lock, "an inheritance child")


def _sibling_default(conn, oid, q):
    """The default partition beside a partition (its bounds change when a partition goes)."""
    return _names(conn, """
        SELECT pt.partdefid FROM pg_inherits AS i JOIN pg_partitioned_table AS pt ON pt.partrelid = i.inhparent
         WHERE i.inhrelid = %s AND pt.partdefid NOT IN (0, %s)""", (oid, oid), q.lock, "the default partition beside it")


def _cascaded_sequences(conn, oid, q):
    """TRUNCATE ... CASCADE RESTART IDENTITY: the sequences of every table it empties."""
    return [found for name, _, _ in _foreign_keys_in_all(conn, oid, q)
            for found in _owned_sequences(conn, conn.execute("SELECT to_regclass(%s)::oid", (name,)).fetchone()[0], q)]


def _partition_tree(conn, oid, lock: Lock):
    return _names(conn, "SELECT relid FROM pg_partition_tree(%s) WHERE relid <> %s", (oid, oid), lock,
                  "a partition of it")


def sets_partition_key(conn, oid, columns) -> bool:
    """Whether an UPDATE of these columns sets a partition key of the table, at any level: its rows
    may move to any partition."""
    return conn.execute("""
        SELECT EXISTS (SELECT 1 FROM pg_partition_tree(%s) AS t JOIN pg_partitioned_table AS pt ON pt.partrelid = t.relid,
                              unnest(pt.partattrs::int2[]) AS k(attnum)
                         JOIN pg_attribute AS a ON a.attnum = k.attnum
                        WHERE a.attrelid = pt.partrelid AND a.attname = ANY (%s))""", (oid, list(columns))).fetchone()[0]


def _foreign_keys_out_moving(conn, oid, q):
    """An UPDATE of a partition key moves rows to another partition: every key is checked."""
    if q.columns is not None and sets_partition_key(conn, oid, q.columns):
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
    """Tables whose triggers, defaults, rules, indexes, constraints or policies use the function."""
    return _names(conn, """
        WITH uses AS (SELECT d.classid, d.objid FROM pg_depend AS d WHERE d.refclassid = 'pg_proc'::regclass
                         AND d.refobjid IN (SELECT oid FROM pg_proc WHERE proname = %(name)s))
        SELECT x.indrelid FROM uses JOIN pg_index AS x ON uses.classid = 'pg_class'::regclass AND x.indexrelid = uses.objid
        UNION
        SELECT c.conrelid FROM uses JOIN pg_constraint AS c ON uses.classid = 'pg_constraint'::regclass
           AND c.oid = uses.objid WHERE c.conrelid <> 0
        UNION
        SELECT p.polrelid FROM uses JOIN pg_policy AS p ON uses.classid = 'pg_policy'::regclass AND p.oid = uses.objid
        UNION
        SELECT ad.adrelid FROM uses JOIN pg_attrdef AS ad ON uses.classid = 'pg_attrdef'::regclass AND ad.oid = uses.objid
        UNION
        SELECT r.ev_class FROM uses JOIN pg_rewrite AS r ON uses.classid = 'pg_rewrite'::regclass AND r.oid = uses.objid
        UNION
        SELECT t.tgrelid FROM pg_trigger AS t WHERE t.tgfoid IN (SELECT oid FROM pg_proc WHERE proname = %(name)s)""",
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
    if relkind(conn, oid) != "p":
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


def _role_policies(conn, name, q):
    """Tables whose policies name the role: DROP OWNED takes it out of them (and drops a policy it
    was the only role of)."""
    return _names(conn, """
        SELECT p.polrelid FROM pg_shdepend AS d JOIN pg_policy AS p ON p.oid = d.objid
         WHERE d.classid = 'pg_policy'::regclass AND d.deptype = 'r'
           AND d.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)""", (name,), q.lock, "a policy names the role")


def _owned_by_role(conn, name, q):
    return _names(conn, """
        SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')""", (name,), q.lock, "owned by the role")


def _serial_sequence(conn, oid, q):
    row = conn.execute("SELECT pg_get_serial_sequence(%s::regclass::text, %s)", (oid, (q.columns or ("",))[0])).fetchone()
    return [(_relation_name(conn, row[0]), q.lock, "pg_get_serial_sequence()")] if row and row[0] else []


def _relation_name(conn, name: str) -> str:
    return conn.execute(RELATION + " WHERE c.oid = to_regclass(%s)", (name,)).fetchone()[1]


def _matview_tables(conn, oid, q):
    return view_tables(conn, oid, q, kinds=("m",))


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


def relkind_name(conn, name: str) -> str | None:
    """The relkind of a partition (None for a relation that is not one)."""
    row = conn.execute("SELECT c.relkind FROM pg_class AS c WHERE c.oid = to_regclass(%s) AND c.relispartition",
                       (name,)).fetchone()
    return row[0] if row else None


def instead(conn, oid: int, events) -> bool:
    """Whether a view does writes of these events itself: an INSTEAD OF trigger or a DO INSTEAD rule."""
    return conn.execute("""
        SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %(oid)s AND (tgtype & 64) <> 0
                          AND (tgtype & %(bits)s) <> 0 AND tgenabled <> 'D')
            OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = %(oid)s AND is_instead AND rulename <> '_RETURN'
                          AND ev_type = ANY (%(types)s))""",
                        {"oid": oid, "bits": sum(EVENT_BITS[e] for e in events),
                         "types": [RULE_EVENTS[e] for e in events if e in RULE_EVENTS]}).fetchone()[0]


def relkind(conn, oid: int) -> str | None:
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s", (oid,)).fetchone()
    return row[0] if row else None


EVENT_BITS = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}


RULE_EVENTS = {"UPDATE": "2", "INSERT": "3", "DELETE": "4"}


# Questions about a table written to that, asked of a view, are answered by the tables behind it.
THROUGH_VIEWS = {"foreign_keys_out", "foreign_keys_out_moving", "foreign_keys_out_inserted", "foreign_keys_in_delete", "foreign_keys_in_update",
                  "column_sequences", "partitions"}


QUESTIONS: dict[str, Callable] = {
    "children": _children, "view_tables": view_tables, "foreign_keys_out": _foreign_keys_out,
    "foreign_keys_in_delete": _foreign_keys_in, "foreign_keys_in_update": _foreign_keys_in,
    "foreign_keys_out_moving": _foreign_keys_out_moving, "foreign_keys_out_all": _foreign_keys_out_all,
    "column_default_sequences": _column_default_sequences, "attrdef_sequences": _attrdef_sequences,
    "foreign_keys_out_inserted": _foreign_keys_out_inserted, "type_data_users": _type_data_users,
    "publication_tables": _publication_tables, "sibling_default": _sibling_default, "role_policies": _role_policies,
    "inheritors": _inheritors,
    "cascaded_sequences": _cascaded_sequences, "trigger_clones": _trigger_clones, "ancestors": _ancestors, "leaves": _leaves,
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
BY_NAME = {"role_policies", "function_dependents", "type_users", "type_data_users", "publication_tables", "clustered_tables",
            "owned_by_role_cascade", "schema_cascade", "schema_relations", "statistics_table", "type_relation",
            "schema_tables", "all_tables", "owned_by_role"}
