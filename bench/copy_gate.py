"""copy_rows' stage gate: the rows written since the flag moved, looked up in the target's
unique index, against an EXCEPT that hashes the whole target, side by side on the embedded
server.

A source table of N rows, all copied into the target, and the last `--recent` of them written a
moment ago (one of which has lost its copy): both queries must find that one row. The gate runs
at every stage check (`advance --watch` asks every interval), so its cost is paid again and
again on a production table. Prints the median milliseconds of each form and their ratio; the
last line holds the headline figures.

    python bench/copy_gate.py [--rows 1000000] [--recent 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import psycopg
from psycopg import sql
from pydantic import TypeAdapter

from orchestrator import embedded
from orchestrator.operations import Operation

COPY = {"op": "copy_rows", "from": "events", "into": "bodies", "columns": {"guild": "guild", "event_id": "id"},
        "unique": ["guild", "event_id"], "dual_write": {"flag": "f", "subject": "guild", "since": "at"}}
# the gate's own condition asks rollout's flag state; the bench asks the same of the clock
RECENT = sql.SQL("at > now() - interval '1 hour'")


def make_tables(url: str, rows: int, recent: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS events, bodies")
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, guild text, at timestamptz NOT NULL)")
        conn.execute("INSERT INTO events SELECT g, 'g' || (g %% 50), CASE WHEN g > %s THEN now() "
                     "ELSE now() - interval '1 day' END FROM generate_series(1, %s) AS g", (rows - recent, rows))
        conn.execute("CREATE INDEX events_at ON events (at)")
        conn.execute("CREATE TABLE bodies (guild text, event_id bigint, UNIQUE (guild, event_id))")
        conn.execute("INSERT INTO bodies SELECT guild, id FROM events WHERE id <> %s", (rows,))
        conn.execute("VACUUM ANALYZE events, bodies")


def timed(url: str, query: sql.Composable, repeat: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(query).fetchall()
        assert len(found) == 1, found  # the one row without its copy, and nothing else
        runs = []
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(query).fetchall()
            runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--recent", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each form; the median is reported")
    args = parser.parse_args()
    operation = TypeAdapter(Operation).validate_python(COPY)
    forms = {"except": operation._uncopied(RECENT), "lookup": operation._without_copy(RECENT)}
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as home:
        server = embedded.start(home)
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = server.url("bench")
        try:
            make_tables(url, args.rows, args.recent)
            results = {name: timed(url, query, args.repeat) for name, query in forms.items()}
        finally:
            embedded.stop(home)
    for name, ms in results.items():
        print(f"{name:<8} {ms:10.2f} ms")
    print(f"rows={args.rows} recent={args.recent} except_ms={results['except']:.2f} "
          f"lookup_ms={results['lookup']:.2f} speedup={results['except'] / results['lookup']:.1f}")


if __name__ == "__main__":
    main()
