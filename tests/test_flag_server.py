"""`rollout flags serve` as applications meet it: OFREP v1 answered as the protocol says (its
statuses, errors, ETag and 304), API keys, /healthz, /metrics; and answers identical to the SQL
function's for every subject, through OpenFeature's own OFREP providers (the Python package, and
the JavaScript server SDK run by node), targeted subjects included."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

from .conftest import Rollout, write_plan

KEY = "test-key-0123456789abcdef"
JS = Path(__file__).parent / "js"
PLAN = """\
version: 1
environments:
  local: {database: embedded}
flags:
  wide: {description: the new shape, default: 30, include: [team-guild], exclude: [grumpy-guild]}
  calm: {description: fully on, default: on}
  dark: {description: fully off, default: off, include: [team-guild]}
  doubled: {description: the application reads items.doubled}
steps:
  - id: fill
    title: fill a column
    priority: high
    flag: doubled
    migrate: migrate
    backfills:
      - {name: doubled, table: items, set: {doubled: n * 2}, where: doubled IS NULL}
    rollout: {stages: [50, 100]}
"""
FILES = {"migrate/0001_doubled.sql": "ALTER TABLE items ADD COLUMN doubled bigint;\n",
         "migrate/0001_doubled.rollback.sql": "ALTER TABLE items DROP COLUMN doubled;\n"}


class Served:
    """A running `rollout flags serve`, and HTTP requests to it."""

    def __init__(self, path: Path, dsn: str, *args: str, keys: str = KEY):
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from orchestrator.cli import main; main()", "--plan", str(path), "--dsn", dsn,
             "flags", "serve", "--port", "0", "--refresh", "200ms", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "ROLLOUT_FLAGS_API_KEYS": keys})
        line = self.process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found, line + self.process.communicate(timeout=30)[0]
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: object = None, headers: dict | None = None,
                key: str | None = KEY) -> tuple[int, dict, object]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {}), **(headers or {})}
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        answer = json.loads(raw) if raw and response.getheader("content-type") == "application/json" else raw
        return response.status, {k.lower(): v for k, v in response.getheaders()}, answer

    def evaluate(self, flag: str, subject: str | None = None, **kwargs) -> tuple[int, dict, object]:
        context = {"targetingKey": subject} if subject is not None else {}
        return self.request("POST", f"/ofrep/v1/evaluate/flags/{flag}", {"context": context}, **kwargs)

    def close(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=30)


@pytest.fixture
def served(tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint); "
               "INSERT INTO items SELECT g, g FROM generate_series(1, 3000) AS g")
    path = write_plan(tmp_path, PLAN, FILES)
    assert Rollout(path, dsn)("apply").exit_code == 0
    running = Served(path, dsn)
    yield running, Rollout(path, dsn)
    running.close()


def test_ofrep_answers_as_the_protocol_says(served):
    server, rollout = served
    assert server.evaluate("wide", "team-guild")[2] == {
        "key": "wide", "value": True, "reason": "TARGETING_MATCH", "variant": "on", "metadata": {"percent": 30}}
    assert server.evaluate("wide", "grumpy-guild")[2]["value"] is False
    assert server.evaluate("calm")[2] == {"key": "calm", "value": True, "reason": "STATIC", "variant": "on",
                                          "metadata": {"percent": 100}}
    assert server.evaluate("dark", "team-guild")[2]["reason"] == "DISABLED"  # off wins over a target
    assert server.evaluate("wide", "42")[2]["reason"] == "SPLIT"
    # the protocol's errors
    status, _, answer = server.evaluate("wide")
    assert (status, answer["errorCode"]) == (400, "TARGETING_KEY_MISSING")
    status, _, answer = server.evaluate("nope", "42")
    assert (status, answer) == (404, {"key": "nope", "errorCode": "FLAG_NOT_FOUND",
                                      "errorDetails": "no flag 'nope' in this environment"})
    status, _, answer = server.request("POST", "/ofrep/v1/evaluate/flags/wide", b"{not json")
    assert (status, answer["errorCode"]) == (400, "PARSE_ERROR")
    status, _, answer = server.request("POST", "/ofrep/v1/evaluate/flags/wide", {"context": {"targetingKey": 7}})
    assert (status, answer["errorCode"]) == (400, "INVALID_CONTEXT")
    status, headers, _ = server.evaluate("wide", "42", key=None)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    nested = b'{"context": {"targetingKey": "42", "deep": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}"
    status, _, answer = server.request("POST", "/ofrep/v1/evaluate/flags/wide", nested)
    assert (status, answer["errorCode"]) == (400, "PARSE_ERROR")
    assert server.evaluate("wide", "42", key="not-the-key-at-all")[0] == 403
    assert server.evaluate("wide", "42", key=None, headers={"Authorization": f"Bearer {KEY}"})[0] == 200
    assert server.request("GET", "/ofrep/v1/evaluate/flags/wide")[0] == 405
    assert server.request("POST", "/ofrep/v1/evaluate/flags/wide", b"x" * 70_000)[0] == 413
    # bulk, with an ETag that changes with the flags (within the refresh interval) and the context
    status, headers, answer = server.request("POST", "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "42"}})
    assert status == 200 and [f["key"] for f in answer["flags"]] == ["calm", "dark", "doubled", "wide"]
    tag = headers["etag"]
    status, headers, body = server.request("POST", "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "42"}},
                                           headers={"If-None-Match": tag})
    assert (status, headers["etag"], body) == (304, tag, b"")
    assert server.request("POST", "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "42"}},
                          headers={"If-None-Match": f'"other", W/{tag}'})[0] == 304
    assert server.request("POST", "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "43"}},
                          headers={"If-None-Match": tag})[0] == 200
    assert rollout("flags", "set", "dark", "on").exit_code == 0
    deadline = time.monotonic() + 10
    while server.request("POST", "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "42"}},
                         headers={"If-None-Match": tag})[0] == 304:
        assert time.monotonic() < deadline, "the flag change did not reach the server"
        time.sleep(0.05)
    assert server.evaluate("dark", "42")[2]["value"] is True
    # health and metrics
    status, _, health = server.request("GET", "/healthz", key=None)
    assert status == 200 and health["status"] == "ok" and health["flags"] == 4 and health["database"] == "ok"
    status, headers, text = server.request("GET", "/metrics", key=None)
    metrics = text.decode()
    for line in ('rollout_flag_percent{flag="wide"} 30.0', 'rollout_flag_targets{flag="wide",target="exclude"} 1.0',
                 'rollout_step_state{state="rolling_out",step="fill"} 1.0', "rollout_database_up 1.0",
                 'rollout_backfill_rows_done{job="doubled",step="fill"} 3000.0',
                 'rollout_ofrep_evaluations_total{flag="wide",reason="TARGETING_MATCH"} 2.0'):
        assert line in metrics, line
    assert rollout("advance", "fill").exit_code == 0
    metrics = server.request("GET", "/metrics", key=None)[2].decode()
    assert 'rollout_step_stage_percent{step="fill"} 50.0' in metrics


def test_serve_refuses_what_it_cannot_serve_safely(tmp_path, dsn, db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    rollout = Rollout(write_plan(tmp_path, PLAN, FILES), dsn)
    old = os.environ.pop("ROLLOUT_FLAGS_API_KEYS", None)
    try:
        no_keys = rollout("flags", "serve", "--port", "0")
        assert no_keys.exit_code == 2 and "set ROLLOUT_FLAGS_API_KEYS" in no_keys.output, no_keys.output
        os.environ["ROLLOUT_FLAGS_API_KEYS"] = "short"
        weak = rollout("flags", "serve", "--port", "0")
        assert weak.exit_code == 2 and "shorter than 16 characters" in weak.output and "short" not in \
            weak.output.replace("shorter", ""), weak.output
        os.environ["ROLLOUT_FLAGS_API_KEYS"] = KEY
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = rollout("flags", "serve", "--port", str(taken.getsockname()[1]))
        assert busy.exit_code == 2 and "cannot listen on 127.0.0.1:" in busy.output, busy.output
        assert "Traceback" not in no_keys.output + weak.output + busy.output
    finally:
        os.environ.pop("ROLLOUT_FLAGS_API_KEYS", None)
        if old is not None:
            os.environ["ROLLOUT_FLAGS_API_KEYS"] = old


SUBJECTS = 4_000  # per flag through the Python provider (600 of them targeted on 'wide')


def _subjects(db, count: int = SUBJECTS) -> tuple[list[str], dict[str, list[tuple[bool, str]]]]:
    """Discord-like ids, the first 600 targeted (in or out) on 'wide', and what the SQL function
    answers for each, flag by flag, with the reason the rule gives."""
    subjects = [str(1_090_000_000_000_000_000 + i * 104_729) for i in range(count)]
    return subjects, {flag: [(on, "") for (on,) in db.execute(
        "SELECT rollout.is_enabled(%s, s) FROM unnest(%s::text[]) WITH ORDINALITY AS t (s, n) ORDER BY n",
        (flag, subjects)).fetchall()] for flag in ("wide", "calm", "dark")}


def _target(rollout, subjects: list[str]) -> None:
    assert rollout("flags", "target", "wide", "--include", ",".join(subjects[:600:2]),
                   "--exclude", ",".join(subjects[1:600:2])).exit_code == 0


def test_the_python_ofrep_provider_agrees_with_sql_for_every_subject(served, db):
    server, rollout = served
    subjects, _ = _subjects(db)
    _target(rollout, subjects)
    time.sleep(0.5)  # two refresh intervals: the server holds the targets
    _, expected = _subjects(db)
    providers = [f"ofrep-{i}" for i in range(4)]
    for domain in providers:  # one provider (one HTTP session) per thread, as a threaded server would hold
        openfeature.set_provider(OFREPProvider(server.url, headers_factory=lambda: {"X-API-Key": KEY}), domain)
    try:
        def ask(flag: str, part: int) -> list:
            client = openfeature.get_client(providers[part])
            return [client.get_boolean_details(flag, not sql, EvaluationContext(targeting_key=s))
                    for s, (sql, _) in zip(subjects[part::4], expected[flag][part::4])]

        for flag in ("wide", "calm", "dark"):
            with ThreadPoolExecutor(4) as pool:
                parts = list(pool.map(lambda part: ask(flag, part), range(4)))
            details = [None] * len(subjects)
            for part, answers in enumerate(parts):
                details[part::4] = answers
            assert all(d.error_code is None for d in details), next(d for d in details if d.error_code)
            assert [d.value for d in details] == [sql for sql, _ in expected[flag]], flag
            reasons = {d.reason for d in details[:600]}
            assert reasons == {"TARGETING_MATCH": {"TARGETING_MATCH"}, "calm": {"STATIC"},
                               "dark": {"DISABLED"}}.get(flag, {"TARGETING_MATCH"}), (flag, reasons)
    finally:
        openfeature.shutdown()


def _node_packages() -> str | None:
    """Why the JavaScript provider cannot run here, or None when it can (its packages installed
    into tests/js by .ci/run, or now)."""
    if shutil.which("node") is None:
        return "node is not installed: the JavaScript OFREP provider's agreement is not tested here"
    if not (JS / "node_modules" / "@openfeature" / "ofrep-provider").exists():
        if shutil.which("npm") is None:
            return "npm is not installed: cannot install the JavaScript OpenFeature packages"
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=JS, capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            return f"npm could not install the JavaScript OpenFeature packages: {done.stderr.strip()[:300]}"
    return None


def test_the_javascript_ofrep_provider_agrees_with_sql_for_every_subject(served, db, tmp_path):
    if (reason := _node_packages()) is not None:
        pytest.skip(reason)
    server, rollout = served
    subjects, _ = _subjects(db, 100_000)  # every one on the flag at a percentage; 4,000 on the others
    _target(rollout, subjects)
    time.sleep(0.5)
    _, expected = _subjects(db, 100_000)
    answers = {}
    for flags, asked in ((["wide"], subjects), (["calm", "dark"], subjects[:SUBJECTS])):
        requests = tmp_path / "requests.json"
        requests.write_text(json.dumps({"flags": flags, "subjects": asked}))
        done = subprocess.run(["node", str(JS / "ofrep_agreement.mjs"), server.url, KEY, str(requests)],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        answers.update(json.loads(done.stdout))
    for flag in ("wide", "calm", "dark"):
        expected[flag] = expected[flag][:len(answers[flag])]
        assert [error for _, _, error in answers[flag] if error] == [], flag
        assert [value for value, _, _ in answers[flag]] == [sql for sql, _ in expected[flag]], flag
    assert {reason for _, reason, _ in answers["wide"][:600]} == {"TARGETING_MATCH"}
    assert {reason for _, reason, _ in answers["wide"][600:]} == {"SPLIT"}
    assert {reason for _, reason, _ in answers["dark"]} == {"DISABLED"}
