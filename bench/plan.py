"""How long the dry run of the whole default plan takes on a realistic database.

Seeds the bot's database with --rows detection events (default 1,000,000) on a temporary
embedded server, then times `rollout plan` for the default plan (the preview function the
CLI calls: connect, READ ONLY transaction, analysis, squawk, catalog lookups, preconditions)
--repeat times. Prints each run and the median; the last line is `plan_seconds=<median>`.

    python bench/plan.py [--rows 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator import api, embedded
from orchestrator.plan_loader import load_plan
from orchestrator.preview import preview

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        home = Path(tmp)
        shutil.copy(REPO / "rollout.yaml", home / "rollout.yaml")
        shutil.copytree(REPO / "steps", home / "steps")
        plan = load_plan(str(home / "rollout.yaml"))
        embedded.start(str(home))
        try:
            started = time.monotonic()
            api.seed(plan, "local", args.rows, actor="bench")
            print(f"seeded {args.rows:,} detection events in {time.monotonic() - started:.1f}s")
            runs = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = preview(plan, "local")
                runs.append(time.perf_counter() - started)
                assert result.wrote_nothing
            statements = sum(len(s.statements) for s in result.steps)
            print(f"preview of {len(result.steps)} steps, {statements} statements: "
                  + ", ".join(f"{r:.3f}s" for r in runs))
        finally:
            embedded.stop(str(home))
    print(f"plan_seconds={statistics.median(runs):.2f}")


if __name__ == "__main__":
    main()
