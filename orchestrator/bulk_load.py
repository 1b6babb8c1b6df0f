"""Loading many rows at once the way PostgreSQL's manual advises ("Populating a Database"):
inside the loading transaction, foreign keys and the secondary indexes of the user's tables are
dropped, and rebuilt once the rows are in. A foreign key is then checked by one join, not by a
trigger per row, and an index is built by one sort, not grown row by row.

Kept: every primary key, unique and exclusion constraint and every unique index (an
`INSERT ... ON CONFLICT` needs them), and anything on partitioned tables. The rebuild uses the
definitions PostgreSQL prints (pg_get_indexdef, pg_get_constraintdef) under the same names, so
the schema ends as it began; a row that breaks a foreign key fails the rebuild, naming the
constraint, and the whole load rolls back.
"""

from __future__ import annotations

from contextlib import contextmanager

import psycopg
from psycopg import sql

_USER_TABLES = """
    c.relkind = 'r' AND NOT c.relispartition
    AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'rollout') AND n.nspname NOT LIKE 'pg\\_%'
"""


@contextmanager
def rebuilt_after(conn: psycopg.Connection):
    """Within the caller's transaction: drop foreign keys and secondary indexes, yield, rebuild them."""
    foreign_keys = conn.execute(f"""
        SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint AS k JOIN pg_class AS c ON c.oid = k.conrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE k.contype = 'f' AND {_USER_TABLES} ORDER BY k.oid""").fetchall()
    indexes = conn.execute(f"""
        SELECT n.nspname, x.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_class AS x ON x.oid = i.indexrelid
        WHERE NOT i.indisunique AND NOT EXISTS (SELECT FROM pg_constraint AS k WHERE k.conindid = i.indexrelid)
          AND {_USER_TABLES} ORDER BY i.indexrelid""").fetchall()
    for schema, table, name, _ in foreign_keys:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(schema, table),
                                                                         sql.Identifier(name)))
    for schema, index, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, index)))
    yield len(foreign_keys), len(indexes)
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")  # one sort in memory per index build
    for _, _, definition in indexes:
        conn.execute(sql.SQL(definition))  # noqa: S608 - PostgreSQL's own printout of the index
    for schema, table, name, definition in foreign_keys:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.Identifier(schema, table), sql.Identifier(name), sql.SQL(definition)))  # noqa: S608 - pg_get_constraintdef's
