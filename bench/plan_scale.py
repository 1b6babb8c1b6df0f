"""What the dry run costs per pending step, on a plan of many steps.

Writes a synthetic plan of --steps steps (default 300) over 20 tables on a temporary embedded
server: each step adds a column and a NOT VALID check in one migration, validates it in a second,
each with its rollback (four files, five statements a step, all analysed, resolved against the
catalog and linted, rollbacks included). Times the preview of the whole plan and of its first
step alone, --repeat times each, in the same run, and prints the cost per pending step as the
difference. It also times squawk both ways on the same files: once per file (how the preview
used to call it) and once for all of them (how it calls it now), and prints the ratio.

    python bench/plan_scale.py [--steps 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from orchestrator import embedded
from orchestrator.plan_loader import load_plan
from orchestrator.preview import preview
from orchestrator.rules import squawk

TABLES = 20


def write_plan(home: Path, steps: int) -> Path:
    lines = ["version: 1", "environments:", "  local: {database: embedded}", "steps:"]
    for i in range(steps):
        table, folder = f"t{i % TABLES}", home / "steps" / f"s{i}"
        folder.mkdir(parents=True)
        files = {
            f"s{i}_01.sql": f"ALTER TABLE {table} ADD COLUMN c{i} int;\n"
                            f"ALTER TABLE {table} ADD CONSTRAINT k{i} CHECK (c{i} >= 0) NOT VALID;\n",
            f"s{i}_01.rollback.sql": f"ALTER TABLE {table} DROP COLUMN c{i};\n",
            f"s{i}_02.sql": f"ALTER TABLE {table} VALIDATE CONSTRAINT k{i};\n",
            f"s{i}_02.rollback.sql": "SELECT 1;\n",
        }
        for name, text in files.items():
            (folder / name).write_text(text)
        lines += [f"  - id: s{i}", f"    title: step {i}", "    priority: low", f"    migrate: steps/s{i}",
                  "    allow:", "      - rule: ban-drop-column", "        reason: the column is new"]
    (home / "rollout.yaml").write_text("\n".join(lines) + "\n")
    return home / "rollout.yaml"


def timed(plan, target=None) -> float:
    started = time.perf_counter()
    result = preview(plan, "local", target)
    assert result.wrote_nothing
    return time.perf_counter() - started


def squawk_both_ways(plan) -> tuple[float, float]:
    files = [m.path for migrations in plan.migrations.values() for m in migrations]
    program = squawk.binary()
    started = time.perf_counter()
    for path in files:
        subprocess.run([program, "--reporter", "json", path], capture_output=True)
    each = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([program, "--reporter", "json", *files], capture_output=True)
    return each, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        home = Path(tmp)
        plan = load_plan(str(write_plan(home, args.steps)))
        info = embedded.start(str(home))
        try:
            with psycopg.connect(info.url("postgres"), autocommit=True) as conn:
                for t in range(TABLES):
                    conn.execute(f"CREATE TABLE t{t} (id int PRIMARY KEY, v int)")
                    conn.execute(f"INSERT INTO t{t} SELECT g, g FROM generate_series(1, 1000) AS g")
            whole, first = [], []
            for _ in range(args.repeat):
                squawk._reports.clear()  # each run pays for squawk, as a new process would
                whole.append(timed(plan))
                squawk._reports.clear()
                first.append(timed(plan, "s0"))
            each, once = squawk_both_ways(plan)
        finally:
            embedded.stop(str(home))
    total, one = statistics.median(whole), statistics.median(first)
    per_step = (total - one) / (args.steps - 1)
    print(f"preview of {args.steps} steps: " + ", ".join(f"{r:.3f}s" for r in whole) + f" (median {total:.3f}s)")
    print("preview of 1 step: " + ", ".join(f"{r:.3f}s" for r in first) + f" (median {one:.3f}s)")
    files = 4 * args.steps
    print(f"squawk over {files} files: once per file {each:.2f}s, once for all {once:.2f}s: {each / once:.0f}x")
    print(f"per_pending_step_ms={per_step * 1000:.2f}")


if __name__ == "__main__":
    main()
