"""Fleets: one plan across many databases, wave by wave (docs/fleets.md).

Twenty databases on the test server and one on PostgreSQL 15, listed in a targets file: a
canary, then half the fleet four at a time, then the rest. Each target keeps its own state,
lock and events, which the tests read back from the targets themselves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from rich.console import Console

from orchestrator import fleet, fleet_view
from orchestrator.plan_loader import load_plan

from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
  production:
    targets_file: fleet.txt
    waves:
      - {name: canary, targets: [t00]}
      - {name: half, percent: 50, parallel: 4}
      - {name: rest, parallel: 4, on_error: ON_ERROR}
flags:
  notes_write: {description: the application writes notes}
steps:
  - id: notes
    title: notes
    priority: high
    flag: notes_write
    rollout: {stages: [50, 100]}
    preconditions:
      - {name: no_blocker, sql: "SELECT tablename FROM pg_tables WHERE tablename = 'blocker'"}
    migrate: steps/notes
"""


def files(sleep: float = 0.0) -> dict[str, str]:
    """The step's migration, slowed down by `sleep` seconds (to be caught in the middle)."""
    return {"steps/notes/notes_01.sql": f"SELECT pg_sleep({sleep});\nCREATE TABLE notes (id int PRIMARY KEY, body text);\n",
            "steps/notes/notes_01.rollback.sql": "DROP TABLE notes;\n"}


class Fleet:
    """Databases made for one test, a plan naming them, and a way to run rollout on it."""

    def __init__(self, tmp_path: Path, servers: list, on_error: str = "stop", sleep: float = 0.0):
        self.databases: list[tuple[object, str]] = []
        lines = []
        for number, server in enumerate(servers):
            name = f"fleet_{uuid.uuid4().hex[:10]}_{number}"
            with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            self.databases.append((server, name))
            labels = "tier=canary" if number == 0 else f"region={'eu' if number % 2 else 'us'}"
            lines.append(f"t{number:02d} {server.url(name)} {labels}")
        self.names = [f"t{n:02d}" for n in range(len(servers))]
        self.plan = write_plan(tmp_path, PLAN.replace("ON_ERROR", on_error),
                               {**files(sleep), "fleet.txt": "# name dsn labels\n" + "\n".join(lines) + "\n"})
        self.run = Rollout(self.plan, None)

    def __call__(self, *args: str):
        return self.run(*args, env="production")

    def url(self, target: str) -> str:
        server, name = self.databases[self.names.index(target)]
        return server.url(name)

    def query(self, target: str, text: str, params=()):
        with psycopg.connect(self.url(target), autocommit=True) as conn:
            cursor = conn.execute(text, params)
            return cursor.fetchall() if cursor.description else []

    def state(self, target: str) -> str | None:
        rows = self.query(target, "SELECT state FROM rollout.steps WHERE step_id = 'notes'") if self.query(
            target, "SELECT to_regclass('rollout.steps')")[0][0] else []
        return rows[0][0] if rows else None

    def spawn(self, *args: str) -> subprocess.Popen:
        """rollout in a process of its own, its output unbuffered (read line by line)."""
        return subprocess.Popen([sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan",
                                 str(self.plan), "--env", "production", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def drop(self) -> None:
        for server, name in self.databases:
            with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def make_fleet(tmp_path, server):
    made = []

    def make(count: int = 20, *, extra: list | None = None, **options) -> Fleet:
        made.append(Fleet(tmp_path / f"plan{len(made)}", [server] * count + (extra or []), **options))
        return made[-1]

    yield make
    for f in made:
        f.drop()


def _runs(f: Fleet, target: str) -> tuple:
    return f.query(target, "SELECT min(started_at), max(finished_at) FROM rollout.runs WHERE command = 'apply'")[0]


def test_a_canary_then_waves_across_two_postgresql_versions(make_fleet, server_15):
    f = make_fleet(20, extra=[server_15])
    applied = f("apply")
    assert applied.exit_code == 0, applied.output
    assert all(f.state(t) == "rolling_out" for t in f.names), {t: f.state(t) for t in f.names}
    assert f.query("t20", "SHOW server_version_num")[0][0].startswith("15")
    # the waves in order: each started only once the one before had finished
    # half: the first 11 of 21 by name, the canary included
    waves = {"canary": ["t00"], "half": [f"t{n:02d}" for n in range(1, 11)],
             "rest": [f"t{n:02d}" for n in range(11, 21)]}
    assert "wave half: 10 targets, 4 at a time" in applied.output and "wave rest: 10 targets" in applied.output
    times = {wave: [_runs(f, t) for t in targets] for wave, targets in waves.items()}
    assert max(end for _, end in times["canary"]) <= min(start for start, _ in times["half"])
    assert max(end for _, end in times["half"]) <= min(start for start, _ in times["rest"])

    # advance: a stage reached target by target; the kill switch on every target at once
    for _ in range(3):
        moved = f("advance", "notes")
        assert moved.exit_code == 0, moved.output
    assert all(f.state(t) == "done" for t in f.names)
    off = f("flags", "set", "notes_write", "off", "--reason", "drill")
    assert off.exit_code == 0 and off.output.count("-> off") == 21, off.output
    assert {f.query(t, "SELECT enabled FROM rollout.flags")[0][0] for t in f.names} == {False}

    shown = f("status", "--json")
    assert shown.exit_code == 0, shown.output
    fleet_json = json.loads(shown.stdout)
    assert [w["done"] for w in fleet_json["waves"]] == [1, 10, 10]
    assert {t["name"]: t["wave"] for t in fleet_json["targets"]}["t20"] == "rest"
    merged = f("events", "--limit", "30")
    assert merged.exit_code == 0 and "t20" in merged.output and "drill" in merged.output


def test_a_failing_target_stops_its_wave_or_is_reported_and_passed(make_fleet):
    stopping = make_fleet(20)
    stopping.query("t05", "CREATE TABLE blocker ()")
    applied = stopping("apply")
    assert applied.exit_code == 1, applied.output
    assert "✗ t05 (half)" in applied.output and "no_blocker" in applied.output
    assert "wave half stopped at 1 failed target (on_error: stop)" in applied.output
    # the wave after it was not touched: not even rollout's schema is there
    assert all(stopping.state(f"t{n}") is None for n in range(10, 20))
    assert stopping.state("t05") in (None, "pending")

    going_on = make_fleet(20, on_error="continue")
    going_on.query("t15", "CREATE TABLE blocker ()")
    applied = going_on("apply")
    assert applied.exit_code == 1, applied.output
    assert "✗ t15 (rest)" in applied.output and "19 done, 1 failed" in applied.output
    assert [t for t in going_on.names if going_on.state(t) != "rolling_out"] == ["t15"]


def test_a_fleet_run_killed_mid_wave_continues_where_each_target_stopped(make_fleet):
    f = make_fleet(12, sleep=0.4)
    proc = f.spawn("apply")
    seen = ""
    while seen.count("✓ t") < 4:  # the canary and a few of the next wave
        line = proc.stdout.readline()
        assert line, seen
        seen += line
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = [t for t in f.names if f.state(t) == "rolling_out"]
    assert 4 <= len(finished) < 12, finished
    resumed = f("apply")
    assert resumed.exit_code == 0, resumed.output
    for target in f.names:
        assert f.state(target) == "rolling_out"
        # never twice: yoyo's log and rollout's events record one apply of the migration
        assert f.query(target, "SELECT count(*) FROM _yoyo_log WHERE operation = 'apply'") == [(1,)]
        assert f.query(target, "SELECT count(*) FROM rollout.events WHERE kind = 'migration.apply'") == [(1,)]


def test_two_processes_share_a_fleet_and_do_each_target_once(make_fleet):
    f = make_fleet(12, sleep=1.0)
    procs = [f.spawn("--actor", actor, "apply") for actor in ("first", "second")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    appliers = {}
    for target in f.names:
        assert f.state(target) == "rolling_out"
        assert f.query(target, "SELECT count(*) FROM _yoyo_log WHERE operation = 'apply'") == [(1,)]
        [(appliers[target],)] = f.query(target, "SELECT r.actor FROM rollout.events AS e JOIN rollout.runs AS r "
                                                "ON r.id = e.run_id WHERE e.kind = 'migration.apply'")
    # each skipped what the other held and took what was left: both did part of the fleet
    assert set(appliers.values()) == {"first", "second"}, appliers


def test_an_unreachable_target_is_retried_reported_and_keeps_its_secret(make_fleet, tmp_path):
    f = make_fleet(4, on_error="continue")
    secret = f"pw-{uuid.uuid4().hex}"
    listing = f.plan.parent / "fleet.txt"
    listing.write_text(listing.read_text() + f"t99 postgresql://rollout:{secret}@127.0.0.1:1/nowhere region=eu\n")
    applied = f("apply")
    assert applied.exit_code == 2, applied.output  # the failures' own code: an unreachable database's
    assert "unreachable, trying again" in applied.output and "✗ t99 (rest): unreachable after 3 attempts" in applied.output
    assert all(f.state(t) == "rolling_out" for t in f.names)
    shown = f("status")
    assert "t99: unreachable" in shown.output
    for output in (applied.output, shown.output, f("status", "--json").output):
        assert secret not in output


def test_target_and_label_narrow_any_command(make_fleet):
    f = make_fleet(6)
    narrowed = f("--label", "region=eu", "apply", "notes")
    assert narrowed.exit_code == 0, narrowed.output
    assert [t for t in f.names if f.state(t)] == ["t01", "t03", "t05"]
    one = f("flags", "list", "--target", "t03")  # before or after the command, as every global option
    assert one.exit_code == 0 and "notes_write" in one.output
    many = f("flags", "list")
    assert many.exit_code == 2 and "fleet of 6 targets" in many.output and "--target NAME" in many.output
    unknown = f("--target", "t77", "status")
    assert unknown.exit_code == 2 and "no target 't77'" in unknown.output


@pytest.mark.parametrize("listing, message", [
    ("t00 ${FLEET_UNSET_VARIABLE}/x\n", "fleet.txt:1: $FLEET_UNSET_VARIABLE is not set"),
    ("# a comment\n\nt00\n", "fleet.txt:3: target 't00' needs a DSN after its name"),
    ("t00 postgresql:///a\nt00 postgresql:///b\n", "lists the target 't00' twice"),
    ("bad/name postgresql:///a\n", "fleet.txt:1: the line does not start with a target name"),
    ("t00 postgresql:///a region\n", "fleet.txt:1: after the DSN, a label is key=value"),
    # a key=value DSN would put its password among the labels: a DSN is a URI, and nothing is echoed
    ("t00 host=db password=hunter2-secret\n", "fleet.txt:1: target 't00' needs a DSN after its name"),
    ("postgresql://u:hunter2-secret@db/x t00\n", "fleet.txt:1: the line does not start with a target name"),
])
def test_a_bad_targets_file_is_named_with_its_line(tmp_path, listing, message):
    plan = write_plan(tmp_path, PLAN.replace("ON_ERROR", "stop"), {**files(), "fleet.txt": listing})
    result = Rollout(plan, None)("status", env="production")
    assert result.exit_code == 2 and message in result.output, result.output
    assert "hunter2" not in result.output


def test_targets_from_a_catalog_query_and_from_the_plan(tmp_path, server, dsn, db, monkeypatch):
    first, second = (f"fleet_{uuid.uuid4().hex[:10]}" for _ in range(2))
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        for name in (first, second):
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        db.execute("CREATE TABLE tenants (slug text, url text, region text)")
        # the password from this machine's environment, never from the catalog (trust ignores it here)
        db.execute("INSERT INTO tenants VALUES ('acme', %s, 'eu'), ('globex', %s, 'us')",
                   (server.url(first).replace("://postgres@", "://postgres:${TENANT_PASSWORD}@"), server.url(second)))
        monkeypatch.setenv("CATALOG_URL", dsn)
        monkeypatch.setenv("TENANT_PASSWORD", "not-checked-by-trust")
        query = ("targets_query: {dsn_env: CATALOG_URL, sql: \"SELECT slug AS name, url AS dsn, "
                 "jsonb_build_object('region', region) AS labels FROM tenants ORDER BY slug\"}")
        plan = write_plan(tmp_path, PLAN.replace("targets_file: fleet.txt", query).replace("[t00]", "[acme]")
                          .replace("ON_ERROR", "stop"), files())
        applied = Rollout(plan, None)("apply", env="production")
        assert applied.exit_code == 0, applied.output
        assert "✓ acme" in applied.output and "✓ globex" in applied.output
        eu = Rollout(plan, None)("--label", "region=eu", "status", "--json", env="production")
        assert [t["name"] for t in json.loads(eu.stdout)["targets"]] == ["acme"]
        # a catalog row may not send this machine's variables anywhere but into a password
        db.execute("UPDATE tenants SET url = replace(url, '?host=', '?host=${HOME}') WHERE slug = 'globex'")
        leaking = Rollout(plan, None)("status", env="production")
        assert leaking.exit_code == 2 and "only as its password" in leaking.output, leaking.output
        db.execute("UPDATE tenants SET slug = 'bad name' WHERE slug = 'globex'")
        broken = Rollout(plan, None)("status", env="production")
        assert broken.exit_code == 2 and "returned the name 'bad name'" in broken.output

        listed = PLAN.replace("targets_file: fleet.txt", "targets: [{name: acme, dsn_env: TENANT_URL, labels: "
                              "{tier: canary}}]").replace("[t00]", "[acme]").replace("ON_ERROR", "stop")
        plan = write_plan(tmp_path / "listed", listed, files())
        monkeypatch.setenv("TENANT_URL", server.url(first))
        assert Rollout(plan, None)("status", env="production").exit_code == 0
        monkeypatch.delenv("TENANT_URL")
        unset = Rollout(plan, None)("status", env="production")
        assert unset.exit_code == 2 and "target 'acme': $TENANT_URL is not set" in unset.output
    finally:
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            for name in (first, second):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_status_of_a_large_fleet_fits_80_columns(make_fleet):
    f = make_fleet(12)
    f.query("t04", "CREATE TABLE blocker ()")
    f("apply")
    plan = load_plan(str(f.plan))
    seen = fleet.status(plan, "production", fleet.chosen(plan, "production"))
    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    for part in fleet_view.render(seen, 80):
        console.print(part)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    # grouped: the targets in the same states share a line; the wave after the failure is untouched
    groups = {line.split()[0]: (int(line.split()[1]), line.split(None, 2)[2].split(", "))
              for line in lines if line[:3] in ("  ~", "  ·")}
    assert {state: count == len(names) for state, (count, names) in groups.items()} == {"~": True, "·": True}, text
    assert {"t00", "t01", "t02", "t03"} <= set(groups["~"][1]), text  # t05 ran, or not, as t04 failed
    assert {"t04", "t06", "t07", "t08", "t09", "t10", "t11"} <= set(groups["·"][1]), text
    assert "waves (done/targets): canary 0/1  half 0/5  rest 0/6" in lines, text
    # what apply has left (the targets after the failure), at the pace of the targets applied so far
    assert lines[0].startswith("fleet production: 12 targets, 0 done, apply ETA "), text
    assert seen.eta_seconds() > 0
    assert any(line.startswith("  t04: apply failed:") for line in lines) and "no_blocker" in text, text


def test_waves_must_place_every_target(tmp_path):
    plan = write_plan(tmp_path, PLAN.replace("      - {name: rest, parallel: 4, on_error: ON_ERROR}\n", ""),
                      {**files(), "fleet.txt": "".join(f"t{n:02d} postgresql:///x{n}\n" for n in range(4))})
    result = Rollout(plan, None)("status", env="production")
    assert result.exit_code == 2 and "the targets t02, t03 are in no wave" in result.output, result.output


def test_a_wave_starts_only_once_the_gates_after_the_one_before_pass(make_fleet):
    from .test_gates import App

    app = App()
    try:
        f = make_fleet(6)
        gate = (f"gates: [{{name: errors, http: {{url: 'http://127.0.0.1:{app.port}/health', json_path: "
                "checks.error_rate}, success: '< 0.05', interval: 100ms, count: 2}]")
        f.plan.write_text(f.plan.read_text().replace("{name: canary, targets: [t00]}",
                                                     f"{{name: canary, targets: [t00], {gate}}}"))
        app.error_rate = 0.5
        held = f("apply")
        assert held.exit_code == 1, held.output
        assert "stopped: wave canary: gate errors failed: 1 failed measurement" in held.output
        assert f.state("t00") == "rolling_out" and all(f.state(t) is None for t in f.names[1:])
        app.error_rate = 0.01
        passed = f("apply")
        assert passed.exit_code == 0, passed.output
        assert passed.output.count("gate errors: passed") == 2
        assert all(f.state(t) == "rolling_out" for t in f.names)
    finally:
        app.close()


def test_failure_limit_stops_a_continuing_wave_past_its_failures(make_fleet):
    f = make_fleet(8)
    f.plan.write_text(f.plan.read_text().replace("{name: rest, parallel: 4, on_error: stop}",
                                                 "{name: rest, parallel: 1, on_error: continue, failure_limit: 1}"))
    for target in ("t05", "t06", "t07"):
        f.query(target, "CREATE TABLE blocker ()")
    applied = f("apply")
    assert applied.exit_code == 1, applied.output
    assert "wave rest stopped at 2 failed targets (failure_limit 1)" in applied.output
    assert "✗ t05 (rest)" in applied.output and "✗ t06 (rest)" in applied.output
    assert f.state("t04") == "rolling_out" and f.state("t07") is None


def test_abort_reaches_every_target_at_once_and_connections_stay_bounded(make_fleet, server):
    f = make_fleet(12, sleep=0.2)
    f.plan.write_text(f.plan.read_text().replace("{name: half, percent: 50, parallel: 4}",
                                                 "{name: half, percent: 50, parallel: 2}").replace(
        "{name: rest, parallel: 4, on_error: stop}", "{name: rest, parallel: 2, on_error: stop}"))
    seen, done = [], threading.Event()

    def sample():
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            while not done.is_set():
                seen.append(admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'fleet\\_%' "
                                          "AND application_name LIKE 'rollout%'").fetchone()[0])
                time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        applied = f("apply")
    finally:
        done.set()
        sampler.join()
    assert applied.exit_code == 0, applied.output
    # two targets at a time, each with the few connections one `apply` holds: never one per target
    assert 0 < max(seen) <= 6, max(seen)
    assert f("advance", "notes").exit_code == 0
    aborted = f("abort", "notes", "--reason", "drill")
    assert aborted.exit_code == 0 and aborted.output.count("notes aborted, its flag off") == 12, aborted.output
    assert {f.state(t) for t in f.names} == {"aborted"}
    assert {f.query(t, "SELECT enabled FROM rollout.flags")[0][0] for t in f.names} == {False}


def test_advance_reports_an_unreachable_target_and_leaves_a_halt_to_a_person(make_fleet):
    f = make_fleet(4)
    assert f("apply").exit_code == 0
    f.query("t02", "UPDATE rollout.steps SET halted = 'a gate failed' WHERE step_id = 'notes'")
    every = f("advance", "--all")
    assert every.exit_code == 0, every.output  # a halt waits for a person: no failure
    assert "notes is halted (a gate failed); `rollout advance notes` resumes it" in every.output
    assert "stopped: wave rest waits: t02" in every.output
    assert f.query("t02", "SELECT stage FROM rollout.steps") == [(None,)]
    named = f("advance", "notes")  # the operator names the step: the halt is lifted
    assert named.exit_code == 0, named.output
    assert {f.query(t, "SELECT stage FROM rollout.steps")[0][0] for t in f.names} == {0}
    listing = f.plan.parent / "fleet.txt"
    listing.write_text(listing.read_text() + "t99 postgresql://rollout@127.0.0.1:1/nowhere\n")
    unreachable = f("advance", "notes")
    assert unreachable.exit_code == 2, unreachable.output
    assert "✗ t99 (rest): unreachable after 3 attempts" in unreachable.output


def test_two_advances_at_once_move_each_target_one_stage(make_fleet):
    f = make_fleet(8)
    assert f("apply").exit_code == 0
    procs = [f.spawn("advance", "notes") for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    # each run moves a target at most one stage from the stage it judged: runs that overlapped judged
    # the same one and moved each target once between them (the other found it moved and left it); on
    # a busy machine the second may start only after the first ended, judge the next stage, and move again
    judged = {re.search(r"the fleet is at (.+?) at the lowest", o).group(1) for o in outputs}
    assert judged <= {"the start", "stage 1"}, outputs
    moves = len(judged)
    assert {f.query(t, "SELECT stage FROM rollout.steps")[0][0] for t in f.names} == {moves - 1}, outputs
    assert {f.query(t, "SELECT percent FROM rollout.flags")[0][0] for t in f.names} == {[50, 100][moves - 1]}


def test_interrupting_a_fleet_run_leaves_what_committed_and_nothing_half_done(make_fleet):
    f = make_fleet(6, sleep=30)
    proc = f.spawn("apply")
    seen = ""
    while "wave canary" not in seen:
        line = proc.stdout.readline()
        assert line, seen
        seen += line
    time.sleep(1)  # the canary's migration is under way
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=20)[0]  # not the 30 s the migration in flight would take
    assert proc.returncode == 130, output
    assert "interrupted" in output
    # the migration in flight was rolled back with its connection; the next run does it once
    assert f.query("t00", "SELECT to_regclass('notes')") == [(None,)]
    assert f.query("t00", "SELECT count(*) FROM _yoyo_log WHERE operation = 'apply'") in ([], [(0,)])


def test_the_kill_switch_checks_its_arguments_once_before_any_target(make_fleet):
    f = make_fleet(4)
    assert f("apply").exit_code == 0
    wrong = f("flags", "set", "notes_write", "bogus")
    assert wrong.exit_code == 2 and wrong.output.count("error:") == 1, wrong.output
    unknown = f("abort", "no_such_step")
    assert unknown.exit_code == 2 and unknown.output.count("error:") == 1, unknown.output
    assert {f.query(t, "SELECT count(*) FROM rollout.flag_history")[0][0] for t in f.names} == {1}


def test_a_wave_with_an_empty_selector_is_refused(tmp_path):
    plan = write_plan(tmp_path, PLAN.replace("targets: [t00]", "targets: []").replace("ON_ERROR", "stop"),
                      {**files(), "fleet.txt": "t00 postgresql:///x\n"})
    result = Rollout(plan, None)("check")
    assert result.exit_code == 2 and "wave 'canary' has an empty targets" in result.output, result.output
