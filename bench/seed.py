"""Where `rollout db seed` spends its time on the default plan, against loading into the live schema.

On a temporary embedded server, each variant gets a fresh database with the bootstrap schema
and runs the seed file statement by statement in one transaction, as `rollout db seed` does:
  db seed        as the command does it: foreign keys and secondary indexes dropped in the
                 transaction and rebuilt after the rows (orchestrator/bulk_load.py);
  live schema    the rows go into the schema as it is: a foreign-key check per row and every
                 index grown row by row (the key from a detection to its case, which the seed
                 writes before the case, is made DEFERRABLE and checked, row by row, at commit).
Prints each variant's seconds per table and its total as a ratio of the first; the last line
is `seed_seconds=<db seed>`.

    python bench/seed.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import pglast
import psycopg

from orchestrator import bulk_load, embedded

REPO = Path(__file__).resolve().parent.parent
SCHEMA = (REPO / "steps" / "baseline" / "schema.sql").read_text()
SEED = (REPO / "steps" / "baseline" / "seed.sql").read_text()

VARIANTS = {"db seed": True, "live schema": False}


def seconds_by_table(server: embedded.ServerInfo, rows: int, rebuilt_after: bool) -> Counter:
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS bench_seed")
        admin.execute("CREATE DATABASE bench_seed")
    spent: Counter = Counter()
    with psycopg.connect(server.url("bench_seed")) as conn:
        conn.execute(SCHEMA)
        if not rebuilt_after:
            conn.execute("ALTER TABLE detection_events ALTER CONSTRAINT fk_detection_events_verification "
                         "DEFERRABLE INITIALLY DEFERRED")
        conn.commit()
        conn.execute("SELECT set_config('rollout.seed_rows', %s, true)", (str(rows),))
        aside = bulk_load.set_aside(conn) if rebuilt_after else None
        for piece in pglast.split(SEED, with_parser=True, only_slices=True):
            node = pglast.parse_sql(SEED[piece])[0].stmt
            relation = getattr(node, "relation", None)
            started = time.perf_counter()
            conn.execute(SEED[piece])
            spent[relation.relname if relation is not None else "(setup, analyze)"] += time.perf_counter() - started
        if aside is not None:
            started = time.perf_counter()
            bulk_load.rebuild(conn, aside)
            spent["(indexes and foreign keys rebuilt)"] += time.perf_counter() - started
        started = time.perf_counter()
        conn.commit()
        spent["(commit)"] += time.perf_counter() - started
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as home:
        server = embedded.start(home)
        try:
            results = {name: seconds_by_table(server, args.rows, rebuilt) for name, rebuilt in VARIANTS.items()}
        finally:
            embedded.stop(home)
    baseline = sum(results["db seed"].values())
    for name, spent in results.items():
        total = sum(spent.values())
        tables = ", ".join(f"{table} {s:.1f}s" for table, s in spent.most_common())
        print(f"{name:<17} {total:6.1f}s  ({total / baseline:.2f}x)  {tables}")
    print(f"seed_seconds={baseline:.1f}")


if __name__ == "__main__":
    main()
