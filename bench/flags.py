"""Flag evaluation from the client's cached snapshot, against a trivial indexed SELECT.

Same server, same run: the median cost of FlagClient.is_enabled (a percentage flag, varied
subjects), the median round trip of `SELECT ... FROM rollout.flags WHERE env = ... AND
name = ...` (the query an application would make per call without a snapshot), and
bucketing accuracy: the share of 100,000 subjects in at 10% and at 50%, and how many of the
10% stay in at 50%. The last line holds the headline figures.

    python bench/flags.py [--subjects 100000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from orchestrator import api, embedded
from orchestrator.client import FlagClient
from orchestrator.flags import evaluate as on
from orchestrator.plan_loader import load_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
flags:
  bench_flag:
    description: a flag at 50% for the benchmark
    default: 50
steps:
  - id: noop
    title: nothing
    priority: low
    migrate: steps/noop
"""


def per_call_us(fn, calls: int, rounds: int) -> float:
    """Median over rounds of the mean cost of one call, in microseconds."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        fn(calls)
        samples.append((time.perf_counter_ns() - started) / calls / 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    count = parser.parse_args().subjects
    subjects = [str(900_000_000_000_000_000 + i * 7919) for i in range(count)]
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        home = Path(tmp)
        (home / "rollout.yaml").write_text(PLAN)
        (home / "steps/noop").mkdir(parents=True)
        (home / "steps/noop/noop_01.sql").write_text("SELECT 1;\n")
        (home / "steps/noop/noop_01.rollback.sql").write_text("SELECT 1;\n")
        server = embedded.start(str(home))
        try:
            url = server.url("local")
            plan = load_plan(str(home / "rollout.yaml"))
            api.apply(plan, "local", dsn=None, actor="bench")
            with FlagClient(url, background=False) as client, psycopg.connect(url, autocommit=True) as conn:
                def evaluate(n: int) -> None:
                    check = client.is_enabled
                    for i in range(n):
                        check("bench_flag", subjects[i % count])

                def select(n: int) -> None:
                    for _ in range(n):
                        conn.execute("SELECT enabled, percent FROM rollout.flags WHERE env = %s AND name = %s",
                                     ("local", "bench_flag"), prepare=True).fetchone()

                eval_us = per_call_us(evaluate, 20_000, 15)
                select_us = per_call_us(select, 1_000, 15)
        finally:
            embedded.stop(str(home))

    at_10 = {s for s in subjects if on("bench_flag", True, 10, s)}
    at_50 = {s for s in subjects if on("bench_flag", True, 50, s)}
    share_10, share_50 = 100 * len(at_10) / count, 100 * len(at_50) / count
    sticky = len(at_10 & at_50) / len(at_10)
    print(f"is_enabled from the snapshot  {eval_us:8.2f} us (median of 15 rounds of 20,000 calls)")
    print(f"indexed SELECT round trip     {select_us:8.2f} us (median of 15 rounds of 1,000 queries)")
    print(f"is_enabled / SELECT           {eval_us / select_us:8.4f}")
    print(f"in at 10% / at 50%            {share_10:.2f}% / {share_50:.2f}% of {count:,} subjects; "
          f"{sticky:.4f} of the 10% still in at 50%")
    print(f"eval_us_median={eval_us:.2f} eval_vs_select={eval_us / select_us:.4f} share_10={share_10:.1f} "
          f"share_50={share_50:.1f} sticky={sticky:.1f}")


if __name__ == "__main__":
    main()
