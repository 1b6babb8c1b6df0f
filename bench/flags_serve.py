"""`rollout flags serve` under load, beside the SQL function's round trip, in one run.

One embedded server, ten flags (one at 30% with 1,000 subjects targeted in or out), the flag
server in a process of its own, and this process as the load: keep-alive HTTP/1.1 connections
on loopback, all on the same two cores.

- single evaluations at a fixed offered load (open loop: each request is due at its time, and
  its latency counts from then, so a server that falls behind is not flattered): p50 / p99;
- single evaluations at saturation (closed loop, 32 connections): evaluations per second;
- bulk evaluation of all ten flags: p50 / p99 at a fixed load, and requests per second;
- `SELECT rollout.is_enabled(...)`, one round trip a decision: p50 / p99, per second;
- agreement: 100,000 subjects through each of OpenFeature's OFREP providers, the Python
  package and the JavaScript server SDK under node (where node is installed), against the SQL
  function, subject by subject.

The last line holds the headline figures: ofrep_p99_ms (at --rate), ofrep_evals_per_s,
ofrep_agreement (the lower of the providers' shares).

    python bench/flags_serve.py [--rate 1000] [--seconds 10] [--subjects 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from orchestrator import api, embedded
from orchestrator.plan_loader import load_plan

KEY = "bench-key-0123456789abcdef"
JS = Path(__file__).resolve().parent.parent / "tests" / "js"
FLAGS = ["bench_wide", "bench_on", "bench_off"] + [f"bench_{n}" for n in range(7)]


def plan(targets: list[str]) -> str:
    include, exclude = json.dumps(targets[::2]), json.dumps(targets[1::2])
    rest = "".join(f"  bench_{n}: {{description: another flag, default: {n * 15}}}\n" for n in range(7))
    return (f"version: 1\nenvironments:\n  local: {{database: embedded}}\nflags:\n"
            f"  bench_wide: {{description: at 30%, default: 30, include: {include}, exclude: {exclude}}}\n"
            f"  bench_on: {{description: fully on, default: on}}\n  bench_off: {{description: fully off, default: off}}\n"
            f"{rest}steps: []\n")


def request(path: str, subject: str) -> bytes:
    body = json.dumps({"context": {"targetingKey": subject}}).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    await reader.readexactly(length)
    return int(head[9:12])


async def open_loop(port: int, path: str, subjects: list[str], rate: float, seconds: float,
                    connections: int = 32) -> list[float]:
    """Latencies (ms) of requests due every 1/rate seconds, each counted from when it was due."""
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (item := await queue.get()) is not None:
            due, raw = item
            status = await _exchange(reader, writer, raw)
            assert status == 200, status
            latencies.append((time.perf_counter() - due) * 1000)
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    total = int(rate * seconds)
    started = time.perf_counter() + 0.2
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, request(path, subjects[i % len(subjects)])))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies


async def closed_loop(port: int, path: str, subjects: list[str], seconds: float, connections: int = 32) -> float:
    """Requests per second with `connections` each sending its next request as the last returns."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while time.perf_counter() < deadline:
            status = await _exchange(reader, writer, request(path, subjects[i % len(subjects)]))
            assert status == 200, status
            done += 1
            i += connections
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(connections)))
    return done / (time.perf_counter() - started)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def agreement(url: str, dsn: str, subjects: list[str], work: Path) -> dict[str, float]:
    """For each OFREP provider that can run here, the share of subjects for which it and the
    SQL function agree on bench_wide."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        sql = [on for (on,) in conn.execute(
            "SELECT rollout.is_enabled('bench_wide', s) FROM unnest(%s::text[]) WITH ORDINALITY AS t (s, n) "
            "ORDER BY n", (subjects,))]
    served = {}
    if shutil.which("node") and (JS / "node_modules" / "@openfeature" / "ofrep-provider").exists():
        requests = work / "requests.json"
        requests.write_text(json.dumps({"flags": ["bench_wide"], "subjects": subjects}))
        done = subprocess.run(["node", str(JS / "ofrep_agreement.mjs"), url, KEY, str(requests)],
                              capture_output=True, text=True, check=True)
        served["JavaScript"] = [None if error else value  # an error counts as a disagreement
                                for value, _, error in json.loads(done.stdout)["bench_wide"]]
    from openfeature import api as openfeature
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext

    openfeature.set_provider(OFREPProvider(url, headers_factory=lambda: {"X-API-Key": KEY}))
    client = openfeature.get_client()
    served["Python"] = [client.get_boolean_value("bench_wide", not on, EvaluationContext(targeting_key=s))
                        for s, on in zip(subjects, sql)]  # the default is the wrong answer: an error shows
    openfeature.shutdown()
    return {provider: sum(a == b for a, b in zip(values, sql)) / len(subjects) for provider, values in served.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="offered load for the fixed-load runs (req/s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load run")
    parser.add_argument("--subjects", type=int, default=100_000, help="subjects for the agreement")
    args = parser.parse_args()
    subjects = [str(1_090_000_000_000_000_000 + i * 104_729) for i in range(args.subjects)]
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        home = Path(tmp)
        (home / "rollout.yaml").write_text(plan(subjects[:1000]))
        server = embedded.start(str(home))
        flags_server = None
        try:
            dsn = server.url("local")
            api.flags_list(load_plan(str(home / "rollout.yaml")), "local")
            flags_server = subprocess.Popen(
                [sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(home / "rollout.yaml"),
                 "flags", "serve", "--port", "0", "--refresh", "1s"], stdout=subprocess.PIPE, text=True,
                env={**os.environ, "ROLLOUT_FLAGS_API_KEYS": KEY})
            port = int(re.search(r":(\d+):", flags_server.stdout.readline()).group(1))
            url = f"http://127.0.0.1:{port}"
            single, bulk = "/ofrep/v1/evaluate/flags/bench_wide", "/ofrep/v1/evaluate/flags"
            asyncio.run(closed_loop(port, single, subjects, 1.0))  # warm up
            fixed = asyncio.run(open_loop(port, single, subjects, args.rate, args.seconds))
            saturated = asyncio.run(closed_loop(port, single, subjects, args.seconds))
            bulk_rate = args.rate / 5
            bulk_fixed = asyncio.run(open_loop(port, bulk, subjects, bulk_rate, args.seconds))
            bulk_saturated = asyncio.run(closed_loop(port, bulk, subjects, args.seconds))
            with psycopg.connect(dsn, autocommit=True) as conn:
                trips = []
                for subject in subjects[:20_000]:
                    started = time.perf_counter()
                    conn.execute("SELECT rollout.is_enabled('bench_wide', %s)", (subject,), prepare=True).fetchone()
                    trips.append((time.perf_counter() - started) * 1000)
            agree = agreement(url, dsn, subjects, home)
        finally:
            if flags_server is not None:
                flags_server.terminate()
                flags_server.wait(timeout=30)
            embedded.stop(str(home))

    p50, p99 = percentile(fixed, 50), percentile(fixed, 99)
    print(f"OFREP single, {args.rate:,.0f} req/s offered for {args.seconds:g}s  p50 {p50:.2f} ms  p99 {p99:.2f} ms "
          f"({len(fixed):,} requests)")
    print(f"OFREP single, saturated (32 connections)     {saturated:,.0f} evaluations/s")
    print(f"OFREP bulk of {len(FLAGS)} flags, {bulk_rate:,.0f} req/s offered     p50 {percentile(bulk_fixed, 50):.2f} ms  "
          f"p99 {percentile(bulk_fixed, 99):.2f} ms")
    print(f"OFREP bulk, saturated                        {bulk_saturated:,.0f} requests/s "
          f"({bulk_saturated * len(FLAGS):,.0f} flag evaluations/s)")
    print(f"SQL rollout.is_enabled round trip            p50 {percentile(trips, 50):.3f} ms  "
          f"p99 {percentile(trips, 99):.3f} ms  ({1000 / statistics.mean(trips):,.0f}/s on one connection)")
    for provider, share in agree.items():
        print(f"agreement over {len(subjects):,} subjects, {provider} OFREP provider vs SQL: {share:.6f}")
    print(f"ofrep_p99_ms={p99:.2f} ofrep_evals_per_s={saturated:.0f} ofrep_agreement={min(agree.values()):.6f}")


if __name__ == "__main__":
    main()
