"""The databases of a fleet: listed in the plan, in a file, or by a catalog query; chosen by
name or label; ordered into waves.

Each target is a whole rollout environment of its own: its state, lock and audit trail live in
its database, so nothing here needs a coordinator. A DSN is a secret: it is read here, handed to
the connection, and never shown (a target is shown by its name).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pydantic import TypeAdapter, ValidationError

from .database import Target, connect
from .errors import UsageError, describe_error
from .plan import Plan
from .plan_parts import TARGET_PATTERN, Environment, LabelKey, LabelValue, Wave

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LABELS = TypeAdapter(dict[LabelKey, LabelValue])


@dataclass(frozen=True)
class Member:
    """One database of a fleet (a "target" to the operator)."""

    name: str
    conninfo: str = field(repr=False)  # a secret
    labels: dict[str, str] = field(default_factory=dict)

    def target(self, env: str) -> Target:
        return Target(env, self.conninfo, embedded=False)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(self.labels.get(key) == value for key, value in labels.items())


def members(plan: Plan, env_name: str) -> list[Member]:
    """Every target of the fleet environment, as the plan lists them (or its file, or its query)."""
    env = plan.environment(env_name)
    if env.targets:
        found = [Member(t.name, _variable(t.dsn_env, f"environment {env_name!r}, target {t.name!r}"), dict(t.labels))
                 for t in env.targets]
    elif env.targets_file:
        found = _from_file(Path(plan.directory) / env.targets_file)
    elif env.targets_query:
        found = _from_query(env, env_name)
    else:
        raise UsageError(f"environment {env_name!r} is one database, not a fleet: --target and --label choose "
                         "targets of a fleet (docs/fleets.md)")
    if not found:
        raise UsageError(f"environment {env_name!r} lists no targets")
    names = [m.name for m in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"environment {env_name!r} lists the target {twice[0]!r} twice; give each target its own name")
    return found


def _variable(name: str, where: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise UsageError(f"{where}: ${name} is not set; export {name}=postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    return value


def _expand(dsn: str, where: str) -> str:
    """A DSN with its ${VARIABLE}s filled in from the environment (the secrets stay out of the list)."""
    return _VARIABLE.sub(lambda m: _variable(m.group(1), where), dsn)


def _labels(words: list[str], where: str) -> dict[str, str]:
    labels = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals:
            raise UsageError(f"{where}: {word!r} is not a label; write key=value after the DSN (e.g. region=eu)")
        labels[key] = value
    try:
        return _LABELS.validate_python(labels)
    except ValidationError:
        raise UsageError(f"{where}: a label key is lowercase letters, digits, '_', '.', '-' (starting with a letter) "
                         "and a value has no spaces, '=' or ','") from None


def _from_file(path: Path) -> list[Member]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: the targets file does not exist; write one target a line: NAME DSN [key=value ...]"
                         ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the targets file ({type(exc).__name__}: {exc})") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        if not re.fullmatch(TARGET_PATTERN, words[0]):
            raise UsageError(f"{where}: {_shown(words[0])} is not a target name: letters, digits, '_', '.', '-', "
                             "starting with a letter or digit, at most 63")
        if len(words) < 2:
            raise UsageError(f"{where}: target {words[0]!r} has no DSN; write NAME DSN [key=value ...]")
        found.append(Member(words[0], _expand(words[1], where), _labels(words[2:], where)))
    return found


def _shown(text: str) -> str:
    """A value from a file or a database, safe to print: quoted, control characters escaped."""
    return repr(text[:64])


def _from_query(env: Environment, env_name: str) -> list[Member]:
    query = env.targets_query
    catalog = Target(f"{env_name} (catalog)", _variable(query.dsn_env, f"environment {env_name!r}, targets_query"),
                     embedded=False)
    try:
        with connect(catalog, "rollout targets") as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            cursor = conn.execute(query.sql)
            columns = [c.name for c in cursor.description or ()]
            rows = cursor.fetchall()
    except psycopg.Error as exc:
        raise UsageError(f"environment {env_name!r}: targets_query failed: {catalog.scrub(describe_error(exc))}") from None
    if columns[:2] != ["name", "dsn"] or len(columns) > 3 or columns[2:] not in ([], ["labels"]):
        raise UsageError(f"environment {env_name!r}: targets_query returns the columns {', '.join(columns) or 'none'}; "
                         "it must return name, dsn and optionally labels (a jsonb object)")
    found = []
    for row in rows:
        name, dsn, labels = row[0], row[1], row[2] if len(row) > 2 else None
        if not isinstance(name, str) or not re.fullmatch(TARGET_PATTERN, name):
            raise UsageError(f"environment {env_name!r}: targets_query returned the name {_shown(str(name))}, which "
                             "is not a target name (letters, digits, '_', '.', '-', at most 63)")
        where = f"environment {env_name!r}, targets_query, target {name!r}"
        if not isinstance(dsn, str) or not dsn.strip():
            raise UsageError(f"{where}: the dsn is empty")
        if labels is not None and (not isinstance(labels, dict) or
                                   not all(isinstance(v, str) for v in labels.values())):
            raise UsageError(f"{where}: labels must be a jsonb object of strings, e.g. '{{\"region\": \"eu\"}}'")
        try:
            checked = _LABELS.validate_python(labels or {})
        except ValidationError:
            raise UsageError(f"{where}: a label key is lowercase letters, digits, '_', '.', '-' and a value has no "
                             "spaces, '=' or ','") from None
        found.append(Member(name, _expand(dsn, where), checked))
    return found


def parse_label(text: str) -> tuple[str, str]:
    """`region=eu` from the command line."""
    key, equals, value = text.partition("=")
    if not equals:
        raise UsageError(f"--label {text!r}: write key=value, e.g. --label region=eu")
    return key, value


def select(found: list[Member], names: tuple[str, ...] = (), labels: dict[str, str] | None = None) -> list[Member]:
    """The targets named (every one must exist) that carry every label given."""
    known = {m.name: m for m in found}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"no target {unknown[0]!r} in this fleet; `rollout status` lists the targets")
    chosen = [known[n] for n in dict.fromkeys(names)] if names else found
    chosen = [m for m in chosen if m.matches(labels or {})]
    if not chosen:
        raise UsageError("no target of this fleet has the labels " +
                         ", ".join(f"{k}={v}" for k, v in (labels or {}).items()))
    return chosen


def waves(env: Environment, fleet: list[Member], chosen: list[Member]) -> list[tuple[Wave, list[Member]]]:
    """The chosen targets in the environment's waves: each target in the first wave that takes it.
    A `percent` wave counts shares of the whole fleet, so narrowing a command with --target or
    --label never moves a target to another wave."""
    plan_waves = env.waves or (Wave(name="all"),)
    by_name = sorted(fleet, key=lambda m: m.name)
    placed: dict[str, str] = {}
    for wave in plan_waves:
        if wave.targets:
            unknown = [n for n in wave.targets if n not in {m.name for m in fleet}]
            if unknown:
                raise UsageError(f"wave {wave.name!r} names the target {unknown[0]!r}, which the fleet does not list")
            taken = [m for m in by_name if m.name in wave.targets]
        elif wave.labels:
            taken = [m for m in by_name if m.matches(wave.labels)]
        elif wave.percent is not None:
            share = math.ceil(len(fleet) * wave.percent / 100) - len(placed)
            taken = [m for m in by_name if m.name not in placed][:max(share, 0)]
        else:
            taken = by_name
        for m in taken:
            placed.setdefault(m.name, wave.name)
    left = [m.name for m in by_name if m.name not in placed]
    if left:
        raise UsageError(f"the targets {', '.join(left[:5])}{' ...' if len(left) > 5 else ''} are in no wave: end "
                         "the waves with one that names no targets, labels or percent (the rest)")
    chosen_names = {m.name for m in chosen}
    return [(wave, [m for m in by_name if placed[m.name] == wave.name and m.name in chosen_names])
            for wave in plan_waves]
