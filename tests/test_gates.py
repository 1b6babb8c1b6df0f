"""Metric gates against real servers: an HTTP endpoint in the test process, and Debian's
Prometheus scraping a small exporter. Measurements are taken `count` times over a stage,
recorded with their values; failures past the limit stop the rollout, an endpoint that cannot
be measured is inconclusive, never passed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from .conftest import Rollout, write_plan


class App:
    """An application's health endpoint (/health, JSON) and metrics (/metrics, Prometheus text)."""

    def __init__(self):
        self.error_rate = 0.01
        self.sequence: list[float] = []  # answered first, one per request, before error_rate
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/metrics":
                    body, kind = f"app_error_ratio {app.error_rate}\n".encode(), "text/plain; version=0.0.4"
                else:
                    rate = app.sequence.pop(0) if app.sequence else app.error_rate
                    body, kind = json.dumps({"checks": {"error_rate": rate}}).encode(), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_port

    def close(self):
        self.server.shutdown()


@pytest.fixture
def app():
    running = App()
    yield running
    running.close()


def plan(gate: dict, stages=(50, 100), **rollout) -> str:
    return yaml.safe_dump({
        "version": 1, "environments": {"local": {"database": "embedded"}},
        "flags": {"wide": {"description": "the new shape"}},
        "steps": [{"id": "widen", "title": "an index behind a flag", "priority": "high", "flag": "wide",
                   "rollout": {"stages": list(stages), "gates": [gate], **rollout},
                   "operations": [{"op": "create_index", "name": "items_n", "table": "items", "columns": ["n"]}]}]},
        sort_keys=False)


def measured(db) -> list[tuple]:
    return db.execute("SELECT detail ->> 'stage', detail ->> 'verdict', detail -> 'value' FROM rollout.events "
                      "WHERE kind = 'gate.measured' ORDER BY id").fetchall()


def http_gate(app, **extra) -> dict:
    return {"name": "errors", "http": {"url": f"http://127.0.0.1:{app.port}/health", "json_path": "checks.error_rate"},
            "success": "< 0.05", "interval": "100ms", "count": 3, "failure_limit": 1, **extra}


def test_a_healthy_gate_is_measured_count_times_at_each_stage(app, tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    rollout = Rollout(write_plan(tmp_path, plan(http_gate(app))), dsn)
    assert rollout("apply").exit_code == 0
    watched = rollout("advance", "widen", "--watch", "--interval", "50ms")
    assert watched.exit_code == 0, watched.output
    assert json.loads(rollout("status", "--json").output)["steps"][0]["state"] == "done"
    rows = measured(db)
    assert [(stage, verdict) for stage, verdict, _ in rows] == [("0", "passed")] * 3 + [("1", "passed")] * 3, rows
    assert all(value == 0.01 for _, _, value in rows)


def test_failures_past_the_limit_stop_the_rollout_with_the_measured_values(app, tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    app.error_rate = 0.5
    rollout = Rollout(write_plan(tmp_path, plan(http_gate(app))), dsn)
    assert rollout("apply").exit_code == 0
    watched = rollout("advance", "widen", "--watch", "--interval", "50ms")
    assert watched.exit_code == 1, watched.output
    assert "gate errors failed at 50%: 2 failed measurements (failure_limit 1)" in watched.output
    assert measured(db) == [("0", "failed", 0.5), ("0", "failed", 0.5)]
    assert db.execute("SELECT enabled FROM rollout.flags WHERE name = 'wide'").fetchone() == (False,)


def test_an_endpoint_that_cannot_be_measured_is_inconclusive_not_passed(tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    gate = {"name": "errors", "http": {"url": f"http://127.0.0.1:{port}/health", "json_path": "checks.error_rate"},
            "success": "< 0.05"}
    rollout = Rollout(write_plan(tmp_path, plan(gate)), dsn)
    assert rollout("apply").exit_code == 0
    assert rollout("advance", "widen").exit_code == 0  # to 50%
    refused = rollout("advance", "widen")
    assert "gate errors inconclusive at 50%: 1 inconclusive measurement (inconclusive_limit 0)" in refused.output
    [(stage, verdict, value)] = measured(db)
    assert (stage, verdict, value) == ("0", "inconclusive", None)
    assert json.loads(rollout("status", "--json").output)["steps"][0]["state"] == "rolling_out"


@pytest.fixture
def prometheus(app):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (.ci/run installs Debian's prometheus)")
    home = tempfile.mkdtemp(prefix="rollout-prometheus-")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with open(os.path.join(home, "prometheus.yml"), "w") as config:
        config.write(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [
            {"job_name": "app", "static_configs": [{"targets": [f"127.0.0.1:{app.port}"]}]}]}))
    server = subprocess.Popen([binary, f"--config.file={home}/prometheus.yml", f"--storage.tsdb.path={home}/data",
                               f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # until a scrape has landed: the query returns a sample
        try:
            with urllib.request.urlopen(f"{address}/api/v1/query?query=app_error_ratio", timeout=2) as answer:
                if json.loads(answer.read())["data"]["result"]:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise AssertionError("Prometheus did not scrape the exporter within 60 s")
        time.sleep(0.2)
    yield address
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(home, ignore_errors=True)


def test_a_prometheus_gate_reads_an_instant_query(prometheus, tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    gate = {"name": "errors", "prometheus": {"address": prometheus, "query": "max(app_error_ratio)"},
            "success": "< 0.05", "interval": "100ms", "count": 2}
    rollout = Rollout(write_plan(tmp_path, plan(gate)), dsn)
    assert rollout("apply").exit_code == 0
    watched = rollout("advance", "widen", "--watch", "--interval", "50ms")
    assert watched.exit_code == 0, watched.output
    assert measured(db) == [("0", "passed", 0.01)] * 2 + [("1", "passed", 0.01)] * 2
    empty = {**gate, "name": "absent", "prometheus": {"address": prometheus, "query": "no_such_metric"}}
    db.execute("DROP SCHEMA rollout CASCADE; DROP INDEX items_n;"
               "DROP TABLE _yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock")
    rollout = Rollout(write_plan(tmp_path, plan(empty)), dsn)
    assert rollout("apply").exit_code == 0 and rollout("advance", "widen").exit_code == 0
    assert "gate absent inconclusive at 50%" in rollout("advance", "widen").output


def flag(db) -> tuple:
    return db.execute("SELECT enabled, percent FROM rollout.flags WHERE name = 'wide'").fetchone()


def halted(db) -> str | None:
    return db.execute("SELECT halted FROM rollout.steps WHERE step_id = 'widen'").fetchone()[0]


def test_watch_sends_the_flag_back_and_halts_until_an_operator_resumes(app, tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    app.sequence, app.error_rate = [0.01, 0.01], 0.5  # healthy at 25%, failing once at 50%
    rollout = Rollout(write_plan(tmp_path, plan(http_gate(app, count=2), stages=(25, 50, 100))), dsn)
    assert rollout("apply").exit_code == 0
    watched = rollout("advance", "widen", "--watch", "--interval", "50ms")
    assert watched.exit_code == 1, watched.output
    assert "flag wide went back to 25% and the rollout is halted" in watched.output
    assert flag(db) == (True, 25)
    assert "gate errors failed at 50%: 2 failed measurements (failure_limit 1)" in halted(db)
    assert measured(db) == [("0", "passed", 0.01)] * 2 + [("1", "failed", 0.5)] * 2
    reverted = db.execute("SELECT message FROM rollout.events WHERE kind = 'rollout.reverted'").fetchall()
    assert reverted == [("gate errors failed at 50%: 2 failed measurements (failure_limit 1); flag wide back to 25%",)]
    shown = json.loads(rollout("status", "--json").output)["steps"][0]
    assert shown["state"] == "rolling_out" and "gate errors failed" in shown["halted"], shown
    # cron's advance --all leaves a halted rollout alone, and so does apply
    cron = rollout("advance", "--all")
    assert cron.exit_code == 0 and "widen: halted:" in cron.output, cron.output
    assert rollout("apply").exit_code == 0 and flag(db) == (True, 25)
    # a person looked, the application is healthy again: naming the step resumes it
    app.error_rate = 0.01
    resumed = rollout("advance", "widen", "--watch", "--interval", "50ms")
    assert resumed.exit_code == 0, resumed.output
    assert halted(db) is None and flag(db) == (True, 100)
    assert json.loads(rollout("status", "--json").output)["steps"][0]["state"] == "done"
    assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'rollout.resumed'").fetchone() == (1,)


def test_on_failure_off_turns_the_flag_off(app, tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    app.sequence, app.error_rate = [0.01], 0.5
    rollout = Rollout(write_plan(tmp_path, plan(http_gate(app, count=1, failure_limit=0), on_failure="off")), dsn)
    assert rollout("apply").exit_code == 0
    watched = rollout("advance", "widen", "--watch", "--interval", "50ms")
    assert watched.exit_code == 1, watched.output
    assert flag(db) == (False, 0) and "gate errors failed at 100%" in halted(db)
    assert json.loads(rollout("status", "--json").output)["steps"][0]["state"] == "rolling_out"


def test_an_unmeasurable_gate_halts_the_watch_where_it_is(tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    gate = {"name": "errors", "http": {"url": "http://127.0.0.1:9/health"}, "success": "< 0.05"}
    rollout = Rollout(write_plan(tmp_path, plan(gate)), dsn)
    assert rollout("apply").exit_code == 0
    watched = rollout("advance", "widen", "--watch", "--interval", "50ms")
    assert watched.exit_code == 4, watched.output  # stopped for a person, nothing reverted
    assert flag(db) == (True, 50) and "gate errors inconclusive at 50%" in halted(db)


def test_a_watch_killed_mid_hold_resumes_its_tally(app, tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    path = write_plan(tmp_path, plan(http_gate(app, count=5, interval="300ms"), stages=(100,)))
    assert Rollout(path, dsn)("apply").exit_code == 0
    watch = subprocess.Popen([sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path),
                              "--dsn", dsn, "advance", "widen", "--watch", "--interval", "50ms"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(measured(db)) < 2:
        assert time.monotonic() < deadline and watch.poll() is None, "the watch did not measure"
        time.sleep(0.05)
    os.kill(watch.pid, signal.SIGKILL)
    watch.wait()
    resumed = Rollout(path, dsn)("advance", "widen", "--watch", "--interval", "50ms")
    assert resumed.exit_code == 0, resumed.output
    rows = measured(db)
    assert rows == [("0", "passed", 0.01)] * 5, rows  # the two taken before the kill count: five in all


def test_advance_all_watch_rolls_out_every_step_and_halts_only_the_failing_one(app, tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint); CREATE TABLE other (id bigint PRIMARY KEY)")
    document = yaml.safe_load(plan(http_gate(app, count=1, failure_limit=0)))
    document["flags"]["calm"] = {"description": "another change"}
    document["steps"].append({"id": "calm", "title": "another index", "priority": "low", "flag": "calm",
                              "rollout": {"stages": [50, 100]},
                              "operations": [{"op": "create_index", "name": "other_id", "table": "other",
                                              "columns": ["id"]}]})
    app.sequence, app.error_rate = [0.01], 0.5  # widen: fine at 50%, failing at 100%
    rollout = Rollout(write_plan(tmp_path, yaml.safe_dump(document, sort_keys=False)), dsn)
    assert rollout("apply").exit_code == 0
    watched = rollout("advance", "--all", "--watch", "--interval", "50ms")
    assert watched.exit_code == 1, watched.output
    states = {s["id"]: (s["state"], s["halted"]) for s in json.loads(rollout("status", "--json").output)["steps"]}
    assert states["calm"] == ("done", None)
    assert states["widen"][0] == "rolling_out" and "gate errors failed at 100%" in states["widen"][1]
    assert flag(db) == (True, 50)


# None of it needs the environment lock: a stage move, a measurement, a revert and a halt are
# single-row transactions under the step's row lock, like the kill switch; only the contract at
# 100% takes the environment, for as long as it runs.

def advance_cli(path, dsn, *args) -> list[str]:
    return [sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path), "--dsn", dsn,
            "advance", *args]


def test_a_watch_reverts_and_a_rollout_advances_while_another_operator_holds_the_environment(app, tmp_path, dsn, db):
    import psycopg

    from orchestrator.locks import acquire_env_lock

    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    app.sequence, app.error_rate = [0.01], 0.5  # healthy at 25%, failing at 50%
    rollout = Rollout(write_plan(tmp_path, plan(http_gate(app, count=1, failure_limit=0), stages=(25, 50, 100))), dsn)
    assert rollout("apply").exit_code == 0
    with psycopg.connect(dsn, autocommit=True) as other, acquire_env_lock(other, "local"):
        assert rollout("apply").exit_code == 3  # the environment is held...
        watched = rollout("advance", "widen", "--watch", "--interval", "50ms")
        assert watched.exit_code == 1, watched.output  # ...and the gate still sent the flag back
        assert "flag wide went back to 25% and the rollout is halted" in watched.output
        assert flag(db) == (True, 25) and halted(db)
        app.error_rate = 0.01
        for percent in (50, 100):  # an operator resumes, stage by stage
            moved = rollout("advance", "widen")
            assert moved.exit_code == 0 and flag(db) == (True, percent), moved.output
        contract = rollout("advance", "widen")  # the contract changes the schema: it needs the environment
        assert contract.exit_code == 3 and "is locked by" in contract.output, contract.output
        cron = rollout("advance", "--all")  # cron's run holds that step and goes on with the others
        assert cron.exit_code == 0 and "its contract waits for the environment" in cron.output, cron.output
        assert json.loads(rollout("status", "--json").output)["steps"][0]["state"] == "rolling_out"
    finished = rollout("advance", "widen")
    assert finished.exit_code == 0, finished.output
    assert json.loads(rollout("status", "--json").output)["steps"][0]["state"] == "done"


def test_a_watch_at_100_percent_waits_for_the_environment_then_finalizes(app, tmp_path, dsn, db):
    import psycopg

    from orchestrator.locks import acquire_env_lock

    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    path = write_plan(tmp_path, plan(http_gate(app, count=1), stages=(50, 100)))
    assert Rollout(path, dsn)("apply").exit_code == 0
    with psycopg.connect(dsn, autocommit=True) as other, acquire_env_lock(other, "local"):
        watch = subprocess.Popen(advance_cli(path, dsn, "widen", "--watch", "--interval", "100ms"),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while len(measured(db)) < 2:  # measured at 100%: only the contract is left
            assert time.monotonic() < deadline and watch.poll() is None, watch.communicate()[0]
            time.sleep(0.05)
        time.sleep(1.0)
        assert watch.poll() is None, watch.communicate()[0]  # waiting, not failed
        assert json.loads(Rollout(path, dsn)("status", "--json").output)["steps"][0]["state"] == "rolling_out"
    output, _ = watch.communicate(timeout=60)
    assert watch.returncode == 0, output
    assert "its contract waits for the environment" in output and "is locked by" in output, output
    assert json.loads(Rollout(path, dsn)("status", "--json").output)["steps"][0]["state"] == "done"


def test_advances_racing_each_other_move_each_stage_once(tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    document = yaml.safe_load(plan({}, stages=(10, 20, 40, 60, 80, 100)))
    # each racer spends half a second judging the stage (a check) between reading it and moving it
    del document["steps"][0]["rollout"]["gates"]
    document["steps"][0]["rollout"]["checks"] = [{"name": "slow", "sql": "SELECT 1 WHERE pg_sleep(0.5) IS NULL"}]
    path = write_plan(tmp_path, yaml.safe_dump(document, sort_keys=False))
    assert Rollout(path, dsn)("apply").exit_code == 0
    for _ in range(12):
        racers = [subprocess.Popen(advance_cli(path, dsn, "widen"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True) for _ in range(3)]
        for racer in racers:
            output, _ = racer.communicate(timeout=60)
            # a loser either saw the move (holding), found the contract's lock taken (3), or the step done
            assert racer.returncode in (0, 3) and "Traceback" not in output, output
        if db.execute("SELECT state FROM rollout.steps WHERE step_id = 'widen'").fetchone() == ("done",):
            break
    assert db.execute("SELECT state FROM rollout.steps WHERE step_id = 'widen'").fetchone() == ("done",)
    stages = db.execute("SELECT (detail ->> 'stage')::int FROM rollout.events WHERE kind = 'rollout.stage' "
                        "ORDER BY id").fetchall()
    assert stages == [(n,) for n in range(6)], stages  # each stage once, in order
    history = db.execute("SELECT new_percent FROM rollout.flag_history WHERE name = 'wide' AND new_enabled ORDER BY id").fetchall()
    assert history == [(p,) for p in (10, 20, 40, 60, 80, 100)], history
    assert db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'state' AND to_state = 'done'").fetchone() == (1,)
