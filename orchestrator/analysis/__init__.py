"""What a statement does to the database: the locks it takes on each relation, whether it scans
or rewrites a table, whether it may run in a transaction, what it loses or breaks.

Two passes. `analyze` is pure: the statement is parsed by PostgreSQL's own parser (libpg_query,
through pglast) and read against rollout's table of statements (statements.py, alter_table.py).
`catalog.resolve` then asks the live database what only it knows: the partitions, views,
foreign keys and dependents the statement reaches, whether a type change or a default really
rewrites, and the schema of every relation. The preview prints the result; apply uses the same
facts to lift statement_timeout, to refuse a file whose directive contradicts its statements and
to back up tables before statements that lose data. tests/analysis holds the truth measured on
PostgreSQL 15 and 18 that keeps both passes honest.
"""

from __future__ import annotations

from functools import lru_cache

from pglast import parse_sql
from pglast.parser import ParseError

from .effect import Effect, RelationLock
from .expand import Expand
from .lockmode import Lock
from .statements import analyze_node

__all__ = ["Effect", "Expand", "Lock", "RelationLock", "analyze"]


@lru_cache(maxsize=4096)
def analyze(sql_text: str) -> tuple[Effect, ...]:
    """The effects of each statement in `sql_text` (a migration file's text or one statement),
    each with the line it starts on. Cached on the text: a plan's files are analysed once."""
    try:
        parsed = parse_sql(sql_text)
    except ParseError as exc:
        return (Effect(sql_text.strip(), "unparsed", assumed=True,
                       notes=(f"PostgreSQL cannot parse it: {exc}",)),)
    effects = []
    for raw in parsed:
        start = raw.stmt_location or 0
        text = sql_text[start:start + raw.stmt_len] if raw.stmt_len else sql_text[start:]
        leading = len(text) - len(text.lstrip())
        line = 1 + sql_text[:start + leading].count("\n")
        effects.append(analyze_node(raw.stmt, text.strip()).with_(line=line))
    return tuple(effects)
