"""Backfill engine against one UPDATE statement, side by side on the embedded server.

Same table shape, same change, same run: (a) one UPDATE over the whole table, (b) rollout's
batched, checkpointed backfill. Prints rows/s of each, (b) at N and at N/10 rows (does the
cost per row stay flat?), and the longest a concurrent writer updating random rows of the
same table was blocked while each ran (the writer runs during every variant, so each meets
the same competition). The last line holds the headline figures.

    python bench/backfill.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psycopg

from orchestrator import api, embedded
from orchestrator.plan_loader import load_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
steps:
  - id: fill
    title: fill h
    priority: high
    migrate: steps/fill
    backfills:
      - name: fill_h
        table: items
        set: {h: "md5(v::text)"}
        where: h IS NULL
"""


def make_table(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, h text)")
        conn.execute("INSERT INTO items SELECT g, g FROM generate_series(1, %s) AS g", (rows,))
        conn.execute("VACUUM ANALYZE items")


class Writer:
    """Updates random rows of the table in a loop; records how long each statement took."""

    def __init__(self, url: str, rows: int):
        self.url, self.rows, self.latencies = url, rows, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Writer":
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                started = time.perf_counter()
                conn.execute("UPDATE items SET v = v WHERE id = %s", (random.randint(1, self.rows),))
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.002)

    @property
    def max_ms(self) -> float:
        return 1000 * max(self.latencies)


def single_update(url: str, rows: int) -> tuple[float, float]:
    make_table(url, rows)
    with psycopg.connect(url, autocommit=True) as conn:
        with Writer(url, rows) as writer:
            started = time.perf_counter()
            conn.execute("UPDATE items SET h = md5(v::text) WHERE h IS NULL")
            seconds = time.perf_counter() - started
    return rows / seconds, writer.max_ms


def engine(home: Path, url: str, rows: int) -> tuple[float, float]:
    make_table(url, rows)
    plan = load_plan(str(home / "rollout.yaml"))
    marks: dict[str, float] = {}

    def report(event) -> None:
        if event.kind in ("backfill.start", "backfill.done"):
            marks[event.kind] = time.perf_counter()

    with Writer(url, rows) as writer:
        api.apply(plan, "local", dsn=url, actor="bench", report=report)
    with psycopg.connect(url, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM items WHERE h IS NULL OR h <> md5(v::text)").fetchone()[0]
        assert left == 0, f"the backfill left {left} rows unconverted"
        conn.execute("DROP SCHEMA rollout CASCADE")
        conn.execute("DROP TABLE IF EXISTS _yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock")
    return rows / (marks["backfill.done"] - marks["backfill.start"]), writer.max_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant; the median is reported")
    args = parser.parse_args()
    rows, repeat = args.rows, args.repeat
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        home = Path(tmp)
        (home / "rollout.yaml").write_text(PLAN)
        (home / "steps/fill").mkdir(parents=True)
        (home / "steps/fill/fill_01.sql").write_text("SELECT 1;\n")
        (home / "steps/fill/fill_01.rollback.sql").write_text("SELECT 1;\n")
        server = embedded.start(str(home))
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = server.url("bench")
        try:
            single, engine_big, engine_small = [], [], []
            for _ in range(repeat):  # interleaved, so drift on a noisy machine hits both alike
                single.append(single_update(url, rows))
                engine_big.append(engine(home, url, rows))
                engine_small.append(engine(home, url, max(rows // 10, 1000)))
        finally:
            embedded.stop(str(home))

    rate = lambda runs: statistics.median(r[0] for r in runs)  # noqa: E731
    block = lambda runs: max(r[1] for r in runs)  # noqa: E731
    print(textwrap.dedent(f"""\
        rows                                   {rows:>12,}
        (a) one UPDATE           rows/s        {rate(single):>12,.0f}   writer blocked up to {block(single):,.0f} ms
        (b) rollout backfill     rows/s        {rate(engine_big):>12,.0f}   writer blocked up to {block(engine_big):,.0f} ms
        (b) at {max(rows // 10, 1000):,} rows   rows/s        {rate(engine_small):>12,.0f}
        (b) / (a)                              {rate(engine_big) / rate(single):>12.2f}
        (b) at {rows:,} / at {max(rows // 10, 1000):,}         {rate(engine_big) / rate(engine_small):>12.2f}"""))
    print(f"backfill_ratio={rate(engine_big) / rate(single):.2f} scale_ratio={rate(engine_big) / rate(engine_small):.2f} "
          f"max_block_ms_engine={block(engine_big):.0f} max_block_ms_single={block(single):.0f}")


if __name__ == "__main__":
    main()
