"""Relation names as SQL writes them, read from pglast nodes, quoted the way PostgreSQL's
quote_ident does (so the catalog pass and the measured truth spell them alike)."""

from __future__ import annotations

import re

from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")
_NEEDS_QUOTES = RESERVED_KEYWORDS | COL_NAME_KEYWORDS | TYPE_FUNC_NAME_KEYWORDS


def quote_ident(name: str) -> str:
    if _PLAIN.match(name) and name not in _NEEDS_QUOTES:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified(*parts: str | None) -> str:
    return ".".join(quote_ident(p) for p in parts if p)


def relation(range_var) -> str:
    """A RangeVar's name: schema.relation when the statement qualifies it, else the relation."""
    return qualified(range_var.schemaname, range_var.relname)


def from_list(names) -> str:
    """A name given as a list of String nodes (DROP, COMMENT ON): `schema.object`."""
    return qualified(*(getattr(part, "sval", None) for part in names))
