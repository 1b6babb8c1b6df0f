"""A backfill beside a standby that replays slower than the primary writes, with and without
the replication-lag throttle, side by side in one run.

A PostgreSQL 15 primary (the machine's binaries) and a real streaming standby (pg_basebackup).
The standby's replay is throttled for real: a thread pauses it for 90 ms of every 100 ms
(pg_wal_replay_pause / pg_wal_replay_resume), so it applies WAL a tenth of the time
(`--replaying 0.1`).
The same 1M-row backfill runs twice: (a) with `max_replication_lag: null` (never waits),
(b) with the limit. Lag is measured independently of
rollout's own meter (which looks only between batches): every 20 ms a thread notes the
primary's WAL position and the standby's replay position, and the lag is the age of the oldest
WAL the standby has not replayed (0 once it has replayed everything). The last line holds the figures: the limit,
the worst lag of each run, and (b)'s rows/s over (a)'s.

    python bench/backfill_health.py [--rows 1000000] [--limit 1] [--replaying 0.1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator import api  # noqa: E402
from orchestrator.plan_loader import load_plan  # noqa: E402
from tests import pg15  # noqa: E402

PLAN = """\
version: 1
environments:
  local: {{database: embedded}}
steps:
  - id: fill
    title: fill h
    priority: high
    migrate: steps/fill
    backfills:
      - name: fill_h
        table: items
        set: {{h: "md5(v::text)"}}
        where: h IS NULL
        max_replication_lag: {limit}
"""
CAUGHT_UP = "SELECT pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()"
POSITIONS = ("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
             "(SELECT pg_wal_lsn_diff(replay_lsn, '0/0')::bigint FROM pg_stat_replication LIMIT 1)")


class SlowReplay:
    """Pauses the standby's replay for `paused` of every `cycle` seconds; samples its lag from
    the primary every 20 ms."""

    def __init__(self, standby_url: str, primary_url: str, paused: float, cycle: float = 0.1):
        self.standby_url, self.primary_url, self.paused, self.cycle = standby_url, primary_url, paused, cycle
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._throttle, daemon=True),
                         threading.Thread(target=self._sample, daemon=True)]

    def __enter__(self) -> "SlowReplay":
        for thread in self._threads if self.paused > 0 else self._threads[1:]:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def _throttle(self) -> None:
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            while not self._stop.is_set():
                conn.execute("SELECT pg_wal_replay_pause()")
                time.sleep(self.paused)
                conn.execute("SELECT pg_wal_replay_resume()")
                time.sleep(self.cycle - self.paused)

    def _sample(self) -> None:
        marks: list[tuple[int, float]] = []  # (the primary's WAL position, when it was seen)
        with psycopg.connect(self.primary_url, autocommit=True) as conn:
            while not self._stop.is_set():
                current, replayed = conn.execute(POSITIONS).fetchone()
                now = time.monotonic()
                if not marks or marks[-1][0] != current:
                    marks.append((current, now))
                if replayed is not None:
                    pending = next((at for position, at in marks if position > replayed), now)
                    self.samples.append(now - pending)
                time.sleep(0.02)

    @property
    def worst(self) -> float:
        return max(self.samples, default=0.0)


def run(home: Path, primary: pg15.Cluster, standby: pg15.Standby, rows: int, limit: str,
        replaying: float) -> tuple[float, float]:
    """One backfill of `rows` rows under a slow standby: (rows/s, worst standby lag in seconds)."""
    url = primary.url("postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS rollout CASCADE")
        conn.execute("DROP TABLE IF EXISTS items, _yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock")
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, h text)")
        conn.execute("INSERT INTO items SELECT g, g FROM generate_series(1, %s) AS g", (rows,))
        conn.execute("VACUUM ANALYZE items")
        conn.execute("CHECKPOINT")
    with psycopg.connect(standby.url(), autocommit=True) as replica:  # start level: caught up
        deadline = time.monotonic() + 300
        while not replica.execute(CAUGHT_UP).fetchone()[0] or not replica.execute(
                "SELECT to_regclass('items')").fetchone()[0]:
            if time.monotonic() > deadline:
                sys.exit("the standby did not catch up with the primary within 5 minutes")
            time.sleep(0.1)
    (home / "rollout.yaml").write_text(PLAN.format(limit=limit))
    plan = load_plan(str(home / "rollout.yaml"))
    marks: dict[str, float] = {}

    def report(event) -> None:
        if event.kind in ("backfill.start", "backfill.done"):
            marks[event.kind] = time.perf_counter()

    with SlowReplay(standby.url(), url, paused=0.1 * (1 - replaying)) as replay:
        api.apply(plan, "local", dsn=url, actor="bench", report=report)
    return rows / (marks["backfill.done"] - marks["backfill.start"]), replay.worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--limit", type=float, default=1.0, help="max_replication_lag, seconds")
    parser.add_argument("--replaying", type=float, default=0.1, help="share of the time the standby replays")
    args = parser.parse_args()
    reason = pg15.unavailable()
    if reason:
        sys.exit(f"bench/backfill_health.py needs PostgreSQL 15's binaries: {reason}")
    primary = pg15.Cluster()
    standby = pg15.Standby(primary)
    try:
        with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
            home = Path(tmp)
            (home / "steps/fill").mkdir(parents=True)
            (home / "steps/fill/fill_01.sql").write_text("SELECT 1;\n")
            (home / "steps/fill/fill_01.rollback.sql").write_text("SELECT 1;\n")
            free_rate, free_lag = run(home, primary, standby, args.rows, "null", args.replaying)
            held_rate, held_lag = run(home, primary, standby, args.rows, f"{int(args.limit * 1000)}ms", args.replaying)
    finally:
        standby.close()
        primary.close()
    print(f"rows                        {args.rows:>12,}")
    print(f"(a) no throttle: rows/s     {free_rate:>12,.0f}   worst standby lag {free_lag:6.2f} s")
    print(f"(b) throttle:    rows/s     {held_rate:>12,.0f}   worst standby lag {held_lag:6.2f} s")
    print(f"lag_limit_s={args.limit:.2f} lag_max_s_throttled={held_lag:.2f} lag_max_s_unthrottled={free_lag:.2f} "
          f"throughput_ratio={held_rate / free_rate:.2f}")


if __name__ == "__main__":
    main()
