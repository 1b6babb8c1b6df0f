"""Webhooks: a real HTTP receiver in the test process gets each notable event once it has
committed, in JSON and in Slack's format, after failing twice; a webhook that never answers
neither fails nor blocks the rollout, and its secret URL is never printed."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local:
    database: embedded
    notify:
      - {url_env: HOOK_URL}
      - {url_env: SLACK_URL, format: slack}
flags:
  wide: {description: the new shape}
steps:
  - id: widen
    title: an index behind a flag
    priority: high
    flag: wide
    rollout: {stages: [50, 100]}
    operations:
      - {op: create_index, name: items_n, table: items, columns: [n]}
"""


class Receiver:
    """Answers 500 to its first `failures` requests, then 200; keeps every body it accepted."""

    def __init__(self, failures: int):
        self.failures, self.requests, self.accepted = failures, 0, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests += 1
                if receiver.requests <= receiver.failures:
                    self.send_response(500)
                else:
                    receiver.accepted.append((self.path, body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}?token=s3cret"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    running = Receiver(failures=2)
    yield running
    running.close()


def test_webhooks_receive_each_stage_and_the_step_done(receiver, tmp_path, dsn, db, monkeypatch):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    monkeypatch.setenv("HOOK_URL", receiver.url("/json"))
    monkeypatch.setenv("SLACK_URL", receiver.url("/slack"))
    rollout = Rollout(write_plan(tmp_path, PLAN), dsn)
    for command in (("apply",), ("advance", "widen"), ("advance", "widen"), ("advance", "widen")):
        result = rollout(*command)
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.output
    as_json = [body for path, body in receiver.accepted if path.startswith("/json")]
    kinds = [(b["kind"], b.get("to_state")) for b in as_json]
    assert ("rollout.stage", None) in kinds and ("state", "done") in kinds, kinds
    stages = [b["message"] for b in as_json if b["kind"] == "rollout.stage"]
    assert stages == ["flag wide at 50% (stage 1/2)", "flag wide at 100% (stage 2/2)"], stages
    assert all(b["env"] == "local" and b["step"] == "widen" and b["source"] == "rollout" for b in as_json)
    slack = [body["text"] for path, body in receiver.accepted if path.startswith("/slack")]
    assert any("rollout · local · widen: flag wide at 50% (stage 1/2)" in text for text in slack), slack
    # the first two requests failed: every event still arrived, each exactly once per webhook
    assert receiver.requests == len(receiver.accepted) + 2
    assert len(as_json) == len(slack) == len({json.dumps(b, sort_keys=True) for b in as_json})


def test_a_dead_webhook_neither_fails_nor_blocks_the_rollout(tmp_path, dsn, db, monkeypatch):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/hooks/s3cret")  # the discard port: nothing listens
    monkeypatch.delenv("SLACK_URL", raising=False)
    rollout = Rollout(write_plan(tmp_path, PLAN), dsn)
    err = ""
    for command in (("apply",), ("advance", "widen"), ("advance", "widen"), ("advance", "widen")):
        result = rollout(*command)
        assert result.exit_code == 0, result.output
        err += result.output
    assert json.loads(rollout("status", "--json").output)["steps"][0]["state"] == "done"
    assert "webhook http://127.0.0.1: gave up on the rollout.stage event after 4 attempts" in err, err
    assert "webhook $SLACK_URL is not set" in err
    assert "s3cret" not in err


def test_a_failed_check_reaches_a_webhook_without_the_rows_it_found():
    from orchestrator.notify import payload
    from orchestrator.state import Event
    event = Event(at=None, env="production", actor="ana", kind="rollout.check_failed", ok=False, step_id="emails",
                  message="at 50%: recent: found 2 rows (first 2: email='ann@example.com'; email='bo@example.com')",
                  detail={"results": [{"name": "recent", "ok": False, "found": 2, "columns": ["email"],
                                       "sample": [["ann@example.com"], ["bo@example.com"]], "error": None}]})
    for style in ("json", "slack"):
        body = json.dumps(payload(event, style))
        assert "example.com" not in body and "recent (found 2 rows)" in body, body


POSTGREST = """\
version: 1
environments:
  local: {database: embedded, notify_postgrest: NOTIFY}
steps:
  - id: widen
    title: an index and a column
    priority: high
    operations:
      - {op: create_index, name: items_n, table: items, columns: [n]}
      - {op: add_column, table: items, column: note, type: text}
"""


@pytest.mark.parametrize("notify", [True, False])
def test_postgrest_hears_of_each_migration_once_it_committed(notify, tmp_path, dsn, db):
    """What a self-hosted PostgREST listens to: NOTIFY pgrst, 'reload schema', on the channel
    PostgREST LISTENs on, delivered only once each migration has committed."""
    import psycopg

    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, n bigint)")
    rollout = Rollout(write_plan(tmp_path, POSTGREST.replace("NOTIFY", str(notify).lower())), dsn)
    with psycopg.connect(dsn, autocommit=True) as postgrest:
        postgrest.execute("LISTEN pgrst")
        assert rollout("apply").exit_code == 0
        heard = [n.payload for n in postgrest.notifies(timeout=1.0)]
        migrations = db.execute("SELECT count(*) FROM rollout.events WHERE kind = 'migration.apply'").fetchone()[0]
        assert heard == (["reload schema"] * migrations if notify else []), heard
        assert migrations >= 2
        assert rollout("rollback", "widen").exit_code == 0
        heard = [n.payload for n in postgrest.notifies(timeout=1.0)]
        assert heard == (["reload schema"] * migrations if notify else []), heard
