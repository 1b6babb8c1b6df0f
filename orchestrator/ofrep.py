"""The OpenFeature Remote Evaluation Protocol (OFREP v1) over a flag snapshot.

Pure functions from a request body to (HTTP status, JSON answer): the server (flag_server.py)
does the HTTP, this module what the protocol says the answer is. Every answer comes from
`flags.resolve`, the rule the SQL function and the Python client apply, so an OpenFeature SDK
in any language gets the same value for the same subject.

A rollout flag is boolean: variant "on" or "off". The targeting key is the subject (a guild
id, a user id); it is needed only when a percentage decides (reason SPLIT), as with the SQL
function, which answers off without one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from . import flags

Snapshot = Mapping[str, tuple[bool, int, Mapping[str, bool]]]  # FlagClient.snapshot()


class BadRequest(Exception):
    """An evaluation request the protocol answers with 400: errorCode and errorDetails."""

    def __init__(self, code: str, details: str):
        super().__init__(details)
        self.code, self.details = code, details


def context_of(body: bytes) -> dict:
    """The request's evaluation context. PARSE_ERROR for a body that is not a JSON object,
    INVALID_CONTEXT for a context that is not an object or a targetingKey that is not a string."""
    try:
        request = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("PARSE_ERROR", f"the request body is not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("PARSE_ERROR", "the request body nests too deeply") from None
    if not isinstance(request, dict):
        raise BadRequest("PARSE_ERROR", "the request body must be a JSON object: {\"context\": {...}}")
    context = request.get("context", {})
    if not isinstance(context, dict):
        raise BadRequest("INVALID_CONTEXT", "context must be a JSON object")
    key = context.get("targetingKey")
    if key is not None and not isinstance(key, str):
        raise BadRequest("INVALID_CONTEXT", "context.targetingKey must be a string")
    return context


def evaluation(snapshot: Snapshot, key: str, subject: str | None) -> tuple[int, dict]:
    """One flag's answer for `subject`: 200 with value, reason and variant; 404 FLAG_NOT_FOUND;
    400 TARGETING_KEY_MISSING when a percentage decides and no subject was given."""
    value = snapshot.get(key)
    if value is None:
        return 404, {"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": f"no flag {key!r} in this environment"}
    enabled, percent, targets = value
    on, reason = flags.resolve(key, enabled, percent, subject, targets)
    if reason == flags.SPLIT and subject is None:
        return 400, {"key": key, "errorCode": "TARGETING_KEY_MISSING",
                     "errorDetails": f"flag {key!r} is at {percent}%: the subject's id is needed as targetingKey"}
    return 200, {"key": key, "value": on, "reason": reason, "variant": "on" if on else "off",
                 "metadata": {"percent": percent if enabled else 0}}


def evaluate_one(snapshot: Snapshot, key: str, body: bytes) -> tuple[int, dict]:
    """POST /ofrep/v1/evaluate/flags/{key}."""
    try:
        context = context_of(body)
    except BadRequest as exc:
        return 400, {"key": key, "errorCode": exc.code, "errorDetails": exc.details}
    return evaluation(snapshot, key, context.get("targetingKey"))


def evaluate_all(snapshot: Snapshot, body: bytes, if_none_match: str | None = None) -> tuple[int, dict | None, str]:
    """POST /ofrep/v1/evaluate/flags: every flag, each a success or a failure of its own, with
    the answer's ETag; 304 (no body) when the caller already holds that answer."""
    try:
        context = context_of(body)
    except BadRequest as exc:
        return 400, {"errorCode": exc.code, "errorDetails": exc.details}, ""
    tag = etag(snapshot, context)
    # weak comparison, as If-None-Match asks: W/"x" matches "x"
    if if_none_match is not None and tag in (t.strip().removeprefix("W/") for t in if_none_match.split(",")):
        return 304, None, tag
    subject = context.get("targetingKey")
    return 200, {"flags": [evaluation(snapshot, key, subject)[1] for key in sorted(snapshot)]}, tag


_versions: list[tuple[Snapshot, str]] = []  # the last snapshot seen and its digest (a snapshot is immutable)


def etag(snapshot: Snapshot, context: dict) -> str:
    """The bulk answer's entity tag: it changes when any flag or target changes, and differs
    for another context (the same flags answer another subject differently)."""
    if not _versions or _versions[0][0] is not snapshot:
        state = json.dumps(sorted((k, v[0], v[1], sorted(v[2].items())) for k, v in snapshot.items()))
        _versions[:] = [(snapshot, hashlib.sha256(state.encode()).hexdigest())]
    of_context = json.dumps(context, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(f"{_versions[0][1]}:{of_context}".encode()).hexdigest()[:32] + '"'
