"""Named SQL checks: a query that returns the rows breaking a rule passes when it returns none."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .locks import set_local_timeouts
from .plan import Check, Timeouts

SAMPLE_ROWS = 5


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    found: int
    columns: tuple[str, ...] = ()
    sample: tuple[tuple, ...] = ()
    error: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        if self.error:
            return f"{self.name}: the check itself failed: {self.error}"
        if self.ok:
            return f"{self.name}: ok"
        rows = "; ".join(", ".join(f"{c}={_shown(v)}" for c, v in zip(self.columns, row)) for row in self.sample)
        more = f" (first {len(self.sample)}: {rows})" if rows else ""
        return f"{self.name}: found {self.found} row{'s' if self.found != 1 else ''}{more}"

    def as_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "found": self.found, "columns": list(self.columns),
                "sample": [list(map(str, row)) for row in self.sample], "error": self.error,
                "seconds": round(self.seconds, 3)}


def _shown(value: object) -> str:
    """Strings quoted (so '' and 'Message' stand out), everything else as PostgreSQL prints it."""
    if value is None:
        return "NULL"
    return repr(value) if isinstance(value, str) else str(value)


def run_check(conn: psycopg.Connection, check: Check, timeouts: Timeouts) -> CheckResult:
    """Run in a READ ONLY transaction: a check can look, never change."""
    body = (check.sql or "").strip().rstrip(";")
    # the body on lines of its own: a -- comment on its last line must not swallow the parenthesis
    query = sql.SQL("SELECT *, count(*) OVER () AS rollout_found FROM (\n{}\n) AS check_rows LIMIT {}").format(
        sql.SQL(body), sql.Literal(SAMPLE_ROWS))
    started = time.monotonic()
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            set_local_timeouts(conn, timeouts.lock, timeouts.statement)
            with conn.cursor() as cur:
                rows = cur.execute(query).fetchall()
                columns = tuple(d.name for d in cur.description[:-1])
    except psycopg.DatabaseError as exc:
        diag = exc.diag.message_primary or str(exc)
        return CheckResult(check.name, ok=False, found=0, error=diag, seconds=time.monotonic() - started)
    found = rows[0][-1] if rows else 0
    sample = tuple(tuple(row[:-1]) for row in rows)
    return CheckResult(check.name, ok=found == 0, found=found, columns=columns, sample=sample,
                       seconds=time.monotonic() - started)
