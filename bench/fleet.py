"""The bot's plan across a fleet, parallel 1 against parallel 4, and the status of 1,000 targets.

One embedded server. A database is seeded once with the bot's data (`--rows`), and copied
(CREATE DATABASE ... TEMPLATE) into fleets of `--targets` databases. Each fleet is rolled to
the end as an operator (or cron) would: `apply`, then `advance` every rollout a stage, again
and again, until every step of every target is done; one fleet a target at a time, the next
four at a time, alternating `--repeat` times in this run (this machine is noisy: the speedup is
the median time one at a time over the median four at a time). Then every target of both fleets is compared:
the schema, object by object, and every row (tests/equivalence.py; the columns a plan fills
with gen_random_uuid() or the clock are left out of the rows).

Last, a database with the whole plan done (and no rows) is copied 1,000 times, and the fleet
status is read from all of them (orchestrator.fleet.status: what `rollout status` shows).

The last line: targets=, speedup= (parallel 4 over parallel 1), status_seconds_1000=,
identical=1 when every target ends with the same schema and data.

    python bench/fleet.py [--targets 50] [--rows 200] [--repeat 3] [--status-targets 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import yaml
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator import api, embedded, fleet, state  # noqa: E402
from orchestrator.plan_loader import load_plan  # noqa: E402
from tests import equivalence  # noqa: E402


def _admin(server):
    return psycopg.connect(server.url("postgres"), autocommit=True)


def _copies(server, template: str, names: list[str]) -> None:
    with _admin(server) as admin:
        for name in names:  # FILE_COPY: no WAL for the copy, about twice as fast here
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)))


def _write_plan(home: Path, server, fleets: dict[str, tuple[list[str], int]]) -> Path:
    """The repository's plan with a fleet environment for each {env: (databases, parallel)}."""
    shutil.copytree(REPO / "steps", home / "steps")
    plan = yaml.safe_load((REPO / "rollout.yaml").read_text())
    for env, (databases, parallel) in fleets.items():
        (home / f"{env}.txt").write_text("".join(f"{name} {server.url(name)}\n" for name in databases))
        plan["environments"][env] = {"targets_file": f"{env}.txt", "waves": [{"name": "all", "parallel": parallel}]}
    path = home / "rollout.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def _to_the_end(plan, env: str) -> float:
    """apply, advance, apply ... until every target is done; the seconds it took."""
    targets = fleet.chosen(plan, env)
    started = time.perf_counter()
    for _ in range(20):
        run = fleet.apply(plan, env, targets, actor="bench", backup=False)
        assert not run.failed and not run.stopped, (run.failed[:1], run.stopped)
        if all(t.done for t in fleet.status(plan, env, targets).targets):
            return time.perf_counter() - started
        run = fleet.advance(plan, env, targets, actor="bench")
        assert not run.failed, run.failed[:1]
    raise AssertionError(f"{env} did not finish")


def _fingerprint(url: str, seeded: set[str]) -> tuple:
    with psycopg.connect(url) as conn:
        tables = equivalence.user_tables(conn)
        rows = {}
        for table in tables:
            masked = set() if table in seeded else equivalence.volatile_default_columns(conn, table)
            found = equivalence.rows(conn, table, masked)
            rows[table] = json.dumps(sorted(found.rows.items()), sort_keys=True, default=str)
        return json.dumps(equivalence.schema(conn), sort_keys=True, default=str), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--status-targets", type=int, default=1000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="rollout-fleet-"))
    try:
        server = embedded.start(str(home))
        fleets = {f"{mode}{k}": ([f"{mode}{k}_{n:03d}" for n in range(args.targets)], workers)
                  for k in range(args.repeat) for mode, workers in (("serial", 1), ("parallel", 4))}
        plan = load_plan(str(_write_plan(home, server, {**fleets, "status": (
            [f"s_{n:04d}" for n in range(args.status_targets)], 8)})))
        with _admin(server) as admin:
            admin.execute("CREATE DATABASE seeded")
        api.seed(plan, "local", args.rows, dsn=server.url("seeded"), actor="bench")
        with psycopg.connect(server.url("seeded")) as conn:
            seeded = set(equivalence.user_tables(conn))
        every = [name for names, _ in fleets.values() for name in names]
        _copies(server, "seeded", every)
        print(f"{len(fleets)} fleets of {args.targets} targets, each seeded with --rows {args.rows}", flush=True)

        seconds: dict[str, list[float]] = {"serial": [], "parallel": []}
        for env in fleets:  # serial0, parallel0, serial1, ...: side by side
            mode = env.rstrip("0123456789")
            seconds[mode].append(_to_the_end(plan, env))
            print(f"{env} (parallel {fleets[env][1]}): the bot plan to the end on {args.targets} targets in "
                  f"{seconds[mode][-1]:.1f}s", flush=True)
        speedup = statistics.median(seconds["serial"]) / statistics.median(seconds["parallel"])

        prints = {name: _fingerprint(server.url(name), seeded) for name in every}
        identical = int(len(set(map(repr, prints.values()))) == 1)
        print(f"fingerprints: {len(set(map(repr, prints.values())))} distinct among {len(prints)} targets", flush=True)

        # 1,000 targets: copies of a database where the plan is done (the baseline and one seeded row)
        with _admin(server) as admin:
            admin.execute("CREATE DATABASE finished")
        api.seed(plan, "local", 1, dsn=server.url("finished"), actor="bench")
        done = ["finished"]
        for _ in range(20):
            api.apply(plan, "status", dsn=server.url("finished"), actor="bench", backup=False)
            steps = api.status(plan, "status", dsn=server.url("finished"))
            if all(s.state == state.DONE for s in steps):
                break
            api.advance(plan, "status", dsn=server.url("finished"), actor="bench")
        many = [f"s_{n:04d}" for n in range(args.status_targets)]
        started = time.perf_counter()
        _copies(server, done[0], many)
        print(f"{args.status_targets} copies made in {time.perf_counter() - started:.0f}s", flush=True)
        targets = fleet.chosen(plan, "status")
        started = time.perf_counter()
        seen = fleet.status(plan, "status", targets)
        status_seconds = time.perf_counter() - started
        assert len(seen.targets) == args.status_targets and all(t.done for t in seen.targets)
        print(f"status of {args.status_targets} targets: {status_seconds:.2f}s "
              f"({fleet.KILL_PARALLEL} connections at most)", flush=True)
        print(f"targets={args.targets} speedup={speedup:.2f} status_seconds_{args.status_targets}={status_seconds:.2f} "
              f"identical={identical}")
        return 0 if identical else 1
    finally:
        embedded.stop(str(home))
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
