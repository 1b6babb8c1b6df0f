"""Whether ALTER COLUMN ... TYPE rewrites the table, judged the way PostgreSQL judges it."""

from __future__ import annotations

import psycopg
from pglast import parse_sql


# Types whose length, precision or scale PostgreSQL can widen without touching stored values
# (their typmod support functions: varchar_support, numeric_support, varbit_support, ...).
_WIDENABLE = {"varchar", "numeric", "varbit", "timestamp", "timestamptz", "time", "timetz", "interval"}


def retype_rewrites(conn, oid: int, column: str, new_type: str, changes_value: bool) -> bool:
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
