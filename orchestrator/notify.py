"""Webhooks told what happens to a rollout: a stage reached, a gate failed, a step done, failed
or aborted, a flag set, a backfill finished or stopped.

An event is sent once it has committed, never before: events are written inside the
transactions they describe, and one that rolls back did not happen. So the notifier keeps the
ids of the events its session recorded and, from a connection of its own, sends those it can
see. Delivery runs on a thread with retries and backoff; a webhook that keeps failing is
reported on stderr and given up, and never fails, slows or blocks the rollout. When the
command ends, what has committed is sent within a few seconds, then the notifier stops.

Webhook URLs carry their secret (Slack's do), so the plan names the environment variable
that holds each URL, and messages show only the scheme and host.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from urllib.parse import urlsplit

import psycopg

from . import web
from .database import Target, connect
from .plan_parts import Webhook
from .state import Event

NOTABLE_KINDS = {"rollout.stage", "rollout.check_failed", "rollout.reverted", "rollout.halted", "flag.set",
                 "backfill.done", "backfill.paused", "backfill.cancelled", "backfill.waiting"}
NOTABLE_STATES = {"done", "failed", "aborted"}
ATTEMPTS = 4
FLUSH_SECONDS = 10.0


def notable(event: Event) -> bool:
    return event.kind in NOTABLE_KINDS or (event.kind == "state" and event.to_state in NOTABLE_STATES)


def payload(event: Event, style: str) -> dict:
    """The body a webhook receives: the event as JSON, or a readable Slack message. Neither
    carries the rows a failed check found (the application's data stays in its database)."""
    message = _shareable(event)
    if style == "slack":
        mark = ":white_check_mark:" if event.ok else ":warning:"
        where = f"{event.env} · {event.step_id}" if event.step_id else event.env
        return {"text": f"{mark} rollout · {where}: {message} ({event.actor})"}
    return {"source": "rollout", "env": event.env, "step": event.step_id, "kind": event.kind, "ok": event.ok,
            "message": message, "actor": event.actor, "at": event.at.isoformat() if event.at else None,
            "from_state": event.from_state, "to_state": event.to_state, "detail": _without_rows(event.detail)}


def _shareable(event: Event) -> str:
    """The event's message, or for failed checks (whose message quotes the rows they found) one
    made of their names and counts."""
    results = (event.detail or {}).get("results")
    if not results:
        return event.message
    return "checks failed: " + ", ".join(_counted(r) for r in results if not r.get("ok"))


def _counted(result: dict) -> str:
    if result.get("error"):
        return f"{result.get('name')} (the check itself failed)"
    return f"{result.get('name')} (found {result.get('found')} rows)"


def _without_rows(detail: dict | None) -> dict | None:
    """A check's result without the sample rows it found: the application's data stays home."""
    if not detail or "results" not in detail:
        return detail
    return {**detail, "results": [{k: v for k, v in r.items() if k not in ("sample", "columns")}
                                  for r in detail["results"]]}


class Notifier:
    """Sends its session's notable events to the environment's webhooks, once they committed."""

    def __init__(self, target: Target, webhooks: tuple[Webhook, ...], environ: dict[str, str]):
        self.target = target
        self.hooks = []
        for hook in webhooks:
            url = (environ.get(hook.url_env) or "").strip()
            if url:
                self.hooks.append((url, hook.format))
            else:
                _warn(f"webhook ${hook.url_env} is not set; its notifications are skipped")
        self.pending: dict[int, Event] = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.deadline = float("inf")
        self.thread = threading.Thread(target=self._run, name="rollout notify", daemon=True)
        if self.hooks:
            self.thread.start()

    def expect(self, event: Event) -> None:
        """An event just written (perhaps inside a transaction not yet committed)."""
        if self.hooks and notable(event):
            with self.lock:
                self.pending[event.id] = event

    def close(self) -> None:
        """Send what has committed, for at most FLUSH_SECONDS, then stop."""
        if not self.thread.is_alive():
            return
        self.deadline = time.monotonic() + FLUSH_SECONDS
        self.closing.set()
        self.thread.join(FLUSH_SECONDS + 1)

    def _run(self) -> None:
        conn, warned = None, False
        while True:
            closing = self.closing.is_set()
            try:
                conn = conn or connect(self.target, "rollout notify")
                for event in self._committed(conn):
                    for url, style in self.hooks:
                        self._deliver(url, style, event)
            except Exception as exc:  # noqa: BLE001 - a notifier never stops the rollout; it tries again
                if not warned:
                    _warn(f"cannot read the events to notify ({type(exc).__name__}); trying again")
                    warned = True
                if conn is not None:
                    conn.close()
                conn = None
            if closing or time.monotonic() > self.deadline:
                if conn is not None:
                    conn.close()
                return
            self.closing.wait(0.2 if conn is not None else 2.0)

    def _committed(self, conn: psycopg.Connection) -> list[Event]:
        """The pending events another connection can see (committed), oldest first."""
        with self.lock:
            ids = sorted(self.pending)
        if not ids:
            return []
        seen = {row[0] for row in conn.execute("SELECT id FROM rollout.events WHERE id = ANY (%s)", (ids,))}
        with self.lock:
            return [self.pending.pop(i) for i in ids if i in seen]

    def _deliver(self, url: str, style: str, event: Event) -> None:
        delay = 0.5
        for attempt in range(1, ATTEMPTS + 1):
            try:
                web.call(url, method="POST", body=payload(event, style), answer=False)
                return
            except web.Unanswered as exc:
                reason = str(exc)
            if attempt == ATTEMPTS or time.monotonic() + delay > self.deadline:
                _warn(f"webhook {_shown(url)}: gave up on the {event.kind} event after {attempt} attempt"
                      f"{'s' if attempt > 1 else ''} ({reason})")
                return
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay *= 2


def _shown(url: str) -> str:
    """A webhook's URL without its secret: scheme and host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" if parts.scheme and parts.hostname else "(unparsable URL)"


def _warn(message: str) -> None:
    sys.stderr.write(f"rollout: {message}\n")
