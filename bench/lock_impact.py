"""What applying the high-priority changes does to the application's writes: rollout against
the seed document's SQL run as written through plain yoyo.

One seeded database (--rows detection events, default 1,000,000) is copied for each
variant. While each variant runs, a writer inserts and updates detection_events at a steady
rate (one insert and one update every 5 ms), and 1 s in, a reader holds ACCESS SHARE on
detection_events for 5 s (a long report query). Printed for each: the writer's maximum and
p99 latency, how many writes took over 100 ms, and the total time.

(a) rollout apply of the default plan: lock_timeout 200 ms with retries, constraints NOT
    VALID then VALIDATE, indexes CONCURRENTLY;
(b) yoyo apply of the seed's SQL as written (plus the one-statement remediation a naive
    team would run so that the constraints can be added at all).

    python bench/lock_impact.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from orchestrator import api, embedded
from orchestrator.plan_loader import load_plan

REPO = Path(__file__).resolve().parent.parent

NAIVE = {
    "0001_remediate.sql": """
UPDATE detection_events SET confidence = least(greatest(confidence, 0), 1)
WHERE NOT (confidence >= 0 AND confidence <= 1);
UPDATE server_members SET reputation_score = least(greatest(reputation_score, -1), 1)
WHERE NOT (reputation_score >= -1 AND reputation_score <= 1);
""",
    # The seed document's SQL, as written.
    "0002_seed_sql.sql": """
ALTER TABLE detection_events
  ADD CONSTRAINT chk_confidence_range
  CHECK (confidence >= 0.0 AND confidence <= 1.0);
ALTER TABLE server_members
  ADD CONSTRAINT chk_reputation_range
  CHECK (reputation_score >= -1.0 AND reputation_score <= 1.0);
CREATE INDEX idx_verification_events_user_server_status
  ON verification_events(user_id, server_id, status);
CREATE INDEX idx_detection_events_user_server_type
  ON detection_events(user_id, server_id, detection_type);
""",
}


class Writer:
    """The application: inserts and updates detection_events; records each statement's latency."""

    def __init__(self, url: str):
        self.url, self.latencies = url, []
        self._stop = threading.Event()
        with psycopg.connect(url) as conn:
            self.ids = [r[0] for r in conn.execute("SELECT id FROM detection_events TABLESAMPLE SYSTEM (1) LIMIT 5000")]
            self.pairs = conn.execute("SELECT server_id, user_id FROM server_members LIMIT 500").fetchall()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _timed(self, conn, query, params) -> None:
        started = time.perf_counter()
        conn.execute(query, params)
        self.latencies.append(time.perf_counter() - started)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                server, user = random.choice(self.pairs)
                self._timed(conn, "INSERT INTO detection_events (server_id, user_id, detection_type, confidence) "
                            "VALUES (%s, %s, 'suspicious_content', 0.5)", (server, user))
                self._timed(conn, "UPDATE detection_events SET admin_action = 'Verified' WHERE id = %s",
                            (random.choice(self.ids),))
                time.sleep(0.005)

    def __enter__(self) -> "Writer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> tuple[float, float, int]:
        ordered = sorted(self.latencies)
        p99 = ordered[int(len(ordered) * 0.99) - 1]
        return 1000 * ordered[-1], 1000 * p99, sum(1 for x in ordered if x > 0.1)


def long_reader(url: str, after: float, hold: float) -> threading.Thread:
    def run() -> None:
        time.sleep(after)
        with psycopg.connect(url) as conn:
            conn.execute("SELECT count(*) FROM (SELECT 1 FROM detection_events LIMIT 10) AS t")
            time.sleep(hold)
            conn.rollback()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def measure(url: str, apply) -> tuple[float, float, int, float]:
    with Writer(url) as writer:
        time.sleep(0.5)
        reader = long_reader(url, after=0.5, hold=5.0)
        time.sleep(0.7)  # the reader holds its lock when the changes start
        started = time.perf_counter()
        apply()
        total = time.perf_counter() - started
        reader.join()
    return (*writer.figures(), total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        home = Path(tmp)
        shutil.copy(REPO / "rollout.yaml", home / "rollout.yaml")
        shutil.copytree(REPO / "steps", home / "steps")
        naive = home / "naive"
        naive.mkdir()
        for name, text in NAIVE.items():
            (naive / name).write_text(text)
        plan = load_plan(str(home / "rollout.yaml"))
        server = embedded.start(str(home))
        try:
            api.seed(plan, "local", rows, actor="bench")
            with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
                admin.execute("CHECKPOINT")
                for name in ("rollout_run", "naive_run"):
                    admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE local").format(sql.Identifier(name)))
            a = measure(server.url("rollout_run"),
                        lambda: api.apply(plan, "local", dsn=server.url("rollout_run"), actor="bench", backup=False))
            yoyo_url = server.url("naive_run").replace("postgresql://", "postgresql+psycopg://")
            b = measure(server.url("naive_run"), lambda: subprocess.run(
                [sys.executable, "-m", "yoyo", "apply", "--batch", "--database", yoyo_url, str(naive)],
                check=True, capture_output=True))
        finally:
            embedded.stop(str(home))

    print(f"{rows:,} detection events; writer: one insert and one update every 5 ms; a reader holds "
          "ACCESS SHARE for 5 s")
    print(f"{'':28}{'max ms':>10}{'p99 ms':>10}{'> 100 ms':>10}{'total s':>10}")
    for label, (worst, p99, slow, total) in (("(a) rollout apply", a), ("(b) seed SQL via yoyo", b)):
        print(f"{label:28}{worst:>10.0f}{p99:>10.1f}{slow:>10}{total:>10.1f}")
    print(f"max_ms_rollout={a[0]:.0f} max_ms_naive={b[0]:.0f} slow_writes_rollout={a[2]} slow_writes_naive={b[2]} "
          f"stall_ratio={b[0] / a[0]:.1f}")


if __name__ == "__main__":
    main()
