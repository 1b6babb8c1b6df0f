"""Where `rollout db seed` spends its time on the default plan, and what the rest of the schema costs.

On a temporary embedded server, each variant gets a fresh database with the bootstrap schema
and runs the seed file statement by statement in one transaction, as `rollout db seed` does:
  as planned         the bootstrap schema as it is;
  no FK checks       session_replication_role = replica (foreign keys are not checked);
  no event indexes   without detection_events' four secondary indexes.
Prints each variant's seconds per table and its total as a ratio of the first; the last line
is `seed_seconds=<as planned>`.

    python bench/seed.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import pglast
import psycopg

from orchestrator import embedded

REPO = Path(__file__).resolve().parent.parent
SCHEMA = (REPO / "steps" / "baseline" / "schema.sql").read_text()
SEED = (REPO / "steps" / "baseline" / "seed.sql").read_text()

VARIANTS = {
    "as planned": (SCHEMA, ""),
    "no FK checks": (SCHEMA, "SET LOCAL session_replication_role = replica"),
    "no event indexes": (re.sub(r"CREATE INDEX idx_detection_events_\w+ ON detection_events\(\w+\);", "", SCHEMA), ""),
}


def seconds_by_table(server: embedded.ServerInfo, rows: int, schema: str, setup: str) -> Counter:
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS bench_seed")
        admin.execute("CREATE DATABASE bench_seed")
    spent: Counter = Counter()
    with psycopg.connect(server.url("bench_seed")) as conn:
        conn.execute(schema)
        conn.commit()
        if setup:
            conn.execute(setup)
        conn.execute("SELECT set_config('rollout.seed_rows', %s, true)", (str(rows),))
        for piece in pglast.split(SEED, with_parser=True, only_slices=True):
            node = pglast.parse_sql(SEED[piece])[0].stmt
            relation = getattr(node, "relation", None)
            started = time.perf_counter()
            conn.execute(SEED[piece])
            spent[relation.relname if relation is not None else "(temp tables, analyze)"] += \
                time.perf_counter() - started
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as home:
        server = embedded.start(home)
        try:
            results = {name: seconds_by_table(server, args.rows, *variant) for name, variant in VARIANTS.items()}
        finally:
            embedded.stop(home)
    baseline = sum(results["as planned"].values())
    for name, spent in results.items():
        total = sum(spent.values())
        tables = ", ".join(f"{table} {s:.1f}s" for table, s in spent.most_common())
        print(f"{name:<17} {total:6.1f}s  ({total / baseline:.2f}x)  {tables}")
    print(f"seed_seconds={baseline:.1f}")


if __name__ == "__main__":
    main()
