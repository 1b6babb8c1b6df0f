"""Loading many rows at once the way PostgreSQL's manual advises ("Populating a Database"):
inside the loading transaction, foreign keys and the secondary indexes of the user's tables are
set aside (dropped), and rebuilt once the rows are in. A foreign key is then checked by one
join, not by a trigger per row, and an index is built by one sort, not grown row by row.

Set aside: validated foreign keys between ordinary tables, and non-unique indexes that back no
constraint. Kept: every primary key, unique and exclusion constraint and unique index (an
`INSERT ... ON CONFLICT` needs them), foreign keys not validated (a rebuild could not check the
rows they let in) and anything on partitioned tables. While the keys are set aside their ON
DELETE actions do not fire: a loader that deletes rows must delete their dependents itself.
The rebuild uses the definitions PostgreSQL prints (pg_get_indexdef, pg_get_constraintdef)
under the same names, so the schema ends as it began; a row that breaks a key fails the
rebuild, naming the constraint, and the caller's transaction rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

_ORDINARY = "{alias}.relkind = 'r' AND NOT {alias}.relispartition"
_USER_SCHEMA = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'rollout') AND n.nspname NOT LIKE 'pg\\_%'"


@dataclass(frozen=True)
class SetAside:
    foreign_keys: tuple[tuple[str, str, str, str], ...]  # (schema, table, name, definition)
    indexes: tuple[tuple[str, str, str], ...]  # (schema, name, definition)


def set_aside(conn: psycopg.Connection) -> SetAside:
    """Drop the foreign keys and secondary indexes a bulk load would maintain row by row."""
    foreign_keys = conn.execute(f"""
        SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint AS k JOIN pg_class AS c ON c.oid = k.conrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_class AS r ON r.oid = k.confrelid
        WHERE k.contype = 'f' AND k.convalidated AND k.conparentid = 0
          AND {_ORDINARY.format(alias='c')} AND {_ORDINARY.format(alias='r')} AND {_USER_SCHEMA}
        ORDER BY k.oid""").fetchall()
    indexes = conn.execute(f"""
        SELECT n.nspname, x.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_class AS x ON x.oid = i.indexrelid
        WHERE NOT i.indisunique AND NOT EXISTS (SELECT FROM pg_constraint AS k WHERE k.conindid = i.indexrelid)
          AND {_ORDINARY.format(alias='c')} AND {_USER_SCHEMA}
        ORDER BY i.indexrelid""").fetchall()
    for schema, table, name, _ in foreign_keys:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(schema, table),
                                                                         sql.Identifier(name)))
    for schema, index, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, index)))
    return SetAside(tuple(map(tuple, foreign_keys)), tuple(map(tuple, indexes)))


def rebuild(conn: psycopg.Connection, aside: SetAside) -> None:
    """Build the indexes again, then add the foreign keys back, each checked by one join."""
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")  # one sort in memory per index build
    for _, _, definition in aside.indexes:
        conn.execute(sql.SQL(definition))  # noqa: S608 - PostgreSQL's own printout of the index
    for schema, table, name, definition in aside.foreign_keys:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.Identifier(schema, table), sql.Identifier(name), sql.SQL(definition)))  # noqa: S608 - pg_get_constraintdef's
