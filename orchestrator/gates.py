"""Metric gates: a stage of a rollout holds until measurements from outside the database say
it is healthy, as Argo Rollouts' analysis does.

A gate measures one number or value (`http`: a URL's JSON and a path into it; `prometheus`: an
instant query) every `interval`, `count` times over the stage's hold. Each measurement is
passed, failed (its `success` condition false, or its `failure` condition true) or
inconclusive (the value could not be had: a timeout, a refused connection, an error status,
a missing path, an empty result). A gate fails once its failures pass `failure_limit`, is
inconclusive once its inconclusive measurements pass `inconclusive_limit`, and passes once it
has `count` measurements within both limits. Every measurement is an event in the audit trail
(`gate.measured`, with the value), so the tally survives any restart: it is read back from
the events of the current stage.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import web

if TYPE_CHECKING:  # the plan's models validate with this module's parsers
    from .plan_parts import Gate

_CONDITION = re.compile(r"^\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Measurement:
    verdict: str  # passed | failed | inconclusive
    value: object = None
    reason: str = ""

    def shown(self) -> str:
        return f"{self.verdict} ({self.reason or json.dumps(self.value, default=str)})"


def condition(text: str) -> tuple[str, object]:
    """`< 0.01`, `>= 200`, `== "ok"`, `!= false`: an operator and a JSON literal."""
    found = _CONDITION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a condition: write an operator (==, !=, <, <=, >, >=) and a JSON value, "
                         "e.g. '< 0.01' or '== \"ok\"'")
    try:
        literal = json.loads(found.group(2))
    except json.JSONDecodeError:
        raise ValueError(f"{found.group(2)!r} in {text!r} is not a JSON value (quote strings: \"ok\")") from None
    return found.group(1), literal


def holds(text: str, value: object) -> bool:
    """Whether `value` meets the condition; TypeError when they cannot be compared."""
    op, literal = condition(text)
    if op in ("==", "!="):
        return (value == literal) == (op == "==")
    if isinstance(value, bool) or isinstance(literal, bool) or not (
            isinstance(value, (int, float)) and isinstance(literal, (int, float))):
        raise TypeError(f"{value!r} {op} {literal!r} compares numbers only")
    return {"<": value < literal, "<=": value <= literal, ">": value > literal, ">=": value >= literal}[op]


def path_parts(path: str) -> list[str | int]:
    """`data.result[0].value[1]` as keys and indexes ($ or empty: the whole document)."""
    text = path.strip().removeprefix("$").lstrip(".")
    parts, end = [], 0
    for found in _PATH_PART.finditer(text):
        between = text[end:found.start()]
        if between not in ("", "."):
            raise ValueError(f"{path!r} is not a path like data.items[0].status")
        parts.append(int(found.group(2)) if found.group(2) is not None else found.group(1))
        end = found.end()
    if text[end:] not in ("",):
        raise ValueError(f"{path!r} is not a path like data.items[0].status")
    return parts


def measure(gate: Gate, environ: dict[str, str], timeout: float = 5.0) -> Measurement:
    """One measurement of the gate: its value and verdict, or inconclusive with why."""
    try:
        value = _prometheus(gate, environ, timeout) if gate.prometheus else _http(gate, environ, timeout)
    except _Inconclusive as exc:
        return Measurement("inconclusive", reason=str(exc))
    try:
        failed = (gate.success is not None and not holds(gate.success, value)) or \
                 (gate.failure is not None and holds(gate.failure, value))
    except TypeError as exc:
        return Measurement("inconclusive", value, str(exc))
    return Measurement("failed" if failed else "passed", value)


class _Inconclusive(Exception):
    """The value could not be had."""


def _address(url: str | None, url_env: str | None, environ: dict[str, str]) -> str:
    if url:
        return url
    value = environ.get(url_env or "")
    if not value:
        raise _Inconclusive(f"${url_env} is not set")
    return value


def _fetch(url: str, *, method: str = "GET", body: object = None, timeout: float) -> object:
    try:
        return web.call(url, method=method, body=body, timeout=timeout)
    except web.Unanswered as exc:
        raise _Inconclusive(str(exc)) from None


def _http(gate: Gate, environ: dict[str, str], timeout: float) -> object:
    probe = gate.http
    document = _fetch(_address(probe.url, probe.url_env, environ), method=probe.method, body=probe.body,
                      timeout=timeout)
    value = document
    for part in path_parts(probe.json_path):
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            raise _Inconclusive(f"no {probe.json_path} in the answer") from None
    return value


def _prometheus(gate: Gate, environ: dict[str, str], timeout: float) -> object:
    probe = gate.prometheus
    base = _address(probe.address, probe.address_env, environ).rstrip("/")
    answer = _fetch(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': probe.query})}", timeout=timeout)
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise _Inconclusive(f"Prometheus: {answer.get('error') if isinstance(answer, dict) else 'no answer'}")
    data = answer.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "vector":
        if not result:
            raise _Inconclusive("the query returned no series")
        sample = result[0]["value"]
    elif data.get("resultType") == "scalar":
        sample = result
    else:
        raise _Inconclusive(f"a {data.get('resultType')} result: gates read an instant vector or a scalar")
    try:
        return float(sample[1])
    except (TypeError, ValueError, IndexError):
        raise _Inconclusive(f"the sample {sample!r} is not a number") from None


def tally(measurements: list[str], gate: Gate) -> tuple[str, str]:
    """The gate's state from its verdicts so far at this stage: (state, why), state being
    failed, inconclusive, passed or measuring."""
    failed, unclear = measurements.count("failed"), measurements.count("inconclusive")
    if failed > gate.failure_limit:
        return "failed", f"{failed} failed measurement{'s' if failed != 1 else ''} (failure_limit {gate.failure_limit})"
    if unclear > gate.inconclusive_limit:
        return "inconclusive", (f"{unclear} inconclusive measurement{'s' if unclear != 1 else ''} "
                                f"(inconclusive_limit {gate.inconclusive_limit})")
    if len(measurements) >= gate.count:
        return "passed", f"{len(measurements)} measurements"
    return "measuring", f"{len(measurements)} of {gate.count} measurements"

