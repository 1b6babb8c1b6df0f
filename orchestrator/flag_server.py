"""`rollout flags serve`: one environment's flags over HTTP for applications in any language.

    POST /ofrep/v1/evaluate/flags/{key}   OFREP single evaluation (API key required)
    POST /ofrep/v1/evaluate/flags         OFREP bulk evaluation, with ETag / If-None-Match
    GET  /healthz                         200 while the snapshot is fresh, else 503
    GET  /metrics                         Prometheus: flags, steps, backfills, evaluations served

An ASGI application run by uvicorn. Every evaluation reads the FlagClient's snapshot (one
query a refresh interval, none per request), so a flag change reaches it within the interval.
API keys come from an environment variable and are compared in constant time; they are never
logged (uvicorn's access log is off). TLS is a proxy's job (docs/flags.md).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import socket
import time
from collections.abc import Iterable

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import ofrep
from .client import FlagClient
from .database import resolve_target
from .errors import DatabaseUnavailable, UsageError
from .metrics import RolloutCollector, registry
from .plan import Plan

PREFIX = "/ofrep/v1/evaluate/flags"
MAX_BODY = 64 * 1024  # an evaluation context is small; a bigger body is refused before it is read whole
_JSON = (b"content-type", b"application/json")


class FlagApp:
    """The ASGI application: routing, API keys, and the protocol's answers from ofrep.py."""

    def __init__(self, client: FlagClient, keys: Iterable[str] | None, collector: RolloutCollector):
        self.client, self.collector = client, collector
        self.keys = [k.encode() for k in keys] if keys is not None else None
        self.registry, self.served = registry(collector)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            await self._healthz(send)
        elif path == "/metrics":  # it reads the database: off the event loop, so evaluations never wait on it
            text = await asyncio.to_thread(generate_latest, self.registry)
            await _send(send, 200, text, (b"content-type", CONTENT_TYPE_LATEST.encode()))
        elif path == PREFIX or path.startswith(PREFIX + "/"):
            await self._evaluate(scope, receive, send, path)
        else:
            await _json(send, 404, {"errorDetails": f"no such endpoint: {path[:100]}"})

    async def _evaluate(self, scope, receive, send, path: str) -> None:
        if scope["method"] != "POST":
            await _json(send, 405, {"errorDetails": "OFREP evaluations are POST requests"}, (b"allow", b"POST"))
            return
        headers = dict(scope["headers"])
        if (refused := self._refused(headers)) is not None:
            if refused == 401:
                await _json(send, 401, {"errorDetails": "an API key is needed: Authorization: Bearer <key>, or "
                                        "X-API-Key"}, (b"www-authenticate", b'Bearer realm="rollout flags"'))
            else:
                await _json(send, 403, {"errorDetails": "this API key is not accepted"})
            return
        body = await _body(receive, headers)
        if body is _GONE:
            return
        if body is None:
            await _json(send, 413, {"errorDetails": f"the request body is larger than {MAX_BODY} bytes"})
            return
        snapshot = self.client.snapshot()
        if path == PREFIX:
            status, answer, tag = ofrep.evaluate_all(snapshot, body, headers.get(b"if-none-match", b"").decode(
                "latin-1") or None)
            if status == 200:
                for flag in answer["flags"]:
                    self.served.labels(flag["key"], flag.get("reason", "ERROR")).inc()
            etag = ((b"etag", tag.encode()),) if tag else ()
            if status == 304:
                await _send(send, 304, b"", *etag)
            else:
                await _json(send, status, answer, *etag)
            return
        key = path[len(PREFIX) + 1:]
        status, answer = ofrep.evaluate_one(snapshot, key, body)
        # a key not in the snapshot is counted under no name: a caller cannot grow the label set
        self.served.labels(key if key in snapshot else "", answer.get("reason", "ERROR")).inc()
        await _json(send, status, answer)

    def _refused(self, headers: dict[bytes, bytes]) -> int | None:
        """401 without a key, 403 with one that is not accepted, None when it is (or none is needed)."""
        if self.keys is None:
            return None
        given = headers.get(b"x-api-key")
        bearer = headers.get(b"authorization", b"")
        if given is None and bearer[:7].lower() == b"bearer ":
            given = bearer[7:].strip()
        if not given:
            return 401
        # constant time against every key, so the answer's timing says nothing about which nearly matched
        return None if sum(hmac.compare_digest(given, key) for key in self.keys) else 403

    async def _healthz(self, send) -> None:
        at, interval = self.client.refreshed_at, self.client.refresh_seconds
        age = time.monotonic() - at if at is not None else None
        fresh = age is not None and age < 3 * interval + 1
        # no error text: /healthz needs no key, and a connection error names hosts and roles
        await _json(send, 200 if fresh else 503, {
            "status": "ok" if fresh else "stale", "flags": len(self.client.snapshot()),
            "snapshot_age_seconds": round(age, 3) if age is not None else None,
            "database": "unreachable" if self.client.last_error else "ok"})


_GONE = b"\0gone"  # the client went away before its body arrived: nothing to answer


async def _body(receive, headers: dict[bytes, bytes]) -> bytes | None:
    """The whole request body, None when it is larger than MAX_BODY, or _GONE."""
    declared = headers.get(b"content-length", b"0")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send, status: int, payload: dict, *headers: tuple[bytes, bytes]) -> None:
    await _send(send, status, json.dumps(payload, separators=(",", ":")).encode(), _JSON, *headers)


async def _send(send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def api_keys(variable: str, required: bool) -> list[str] | None:
    """The accepted API keys, from the named environment variable (comma-separated)."""
    if not required:
        return None
    keys = [k.strip() for k in os.environ.get(variable, "").split(",") if k.strip()]
    if not keys:
        raise UsageError(f"no API keys: set {variable} to one or more keys (comma-separated), or name another "
                         "variable with --keys-env; --no-auth serves without keys (only behind a proxy that "
                         "authenticates)")
    short = [k for k in keys if len(k) < 16]
    if short:
        raise UsageError(f"{variable} holds a key shorter than 16 characters; use long random keys "
                         "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return keys


def serve(plan: Plan, env: str, *, dsn: str | None, host: str, port: int, refresh_seconds: float,
          keys: list[str] | None, announce=print) -> None:
    """Serve `env`'s flags until interrupted."""
    target = resolve_target(plan, env, dsn)
    client = FlagClient(target.conninfo, env=env, refresh_seconds=refresh_seconds)
    try:
        if client.refreshed_at is None:
            raise DatabaseUnavailable(f"cannot read the flags of environment {env!r} at {target.display}: "
                                      f"{target.scrub(client.last_error or 'no answer')}")
        stages = {s.id: list(plan.stages(s).stages) for s in plan.steps if plan.stages(s) is not None}
        collector = RolloutCollector(target, client.snapshot, stages.get)
        sock = _listen(host, port)
        bound = sock.getsockname()[1]
        announce(f"serving the flags of {env} on http://{host}:{bound}: OFREP at {PREFIX}, /metrics, /healthz "
                 f"(refresh every {refresh_seconds:g}s{'' if keys else ', no API key required'})")
        config = uvicorn.Config(FlagApp(client, keys, collector), log_level="warning", access_log=False,
                                lifespan="off", server_header=False)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # uvicorn shut down gracefully, then raised again the signal that stopped it
        collector.close()
        announce(f"stopped serving the flags of {env}")
    finally:
        client.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                         "or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
