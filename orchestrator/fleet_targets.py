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
from .plan_parts import TARGET_PATTERN, Environment, LabelKey, LabelValue, Wave, first_repeated

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LABELS = TypeAdapter(dict[LabelKey, LabelValue])
_LABEL_RULE = ("a label is key=value: the key lowercase letters, digits, '_', '.', '-' (starting with a letter), "
               "the value without spaces, '=' or ','")
# a URI's password: a catalog row may name a ${VARIABLE} there, and nowhere else
_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:@/?#]*:)([^@/?#]*)(@.*)$", re.DOTALL)
CATALOG_TIMEOUT = "10s"  # a catalog that hangs must not hang the kill switch for long


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


@dataclass(frozen=True)
class Selection:
    """The targets a command acts on, and the whole fleet (which places them in waves)."""

    everyone: tuple[Member, ...]
    chosen: tuple[Member, ...]


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
    if (twice := first_repeated([m.name for m in found])) is not None:
        raise UsageError(f"environment {env_name!r} lists the target {twice!r} twice; give each target its own name")
    return found


def _variable(name: str, where: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise UsageError(f"{where}: ${name} is not set; export {name}=postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    return value


def _expand(text: str, where: str) -> str:
    """${VARIABLE}s filled in from the environment (the secrets stay out of the list)."""
    return _VARIABLE.sub(lambda m: _variable(m.group(1), where), text)


def checked_labels(labels: dict, where: str) -> dict[str, str]:
    try:
        return _LABELS.validate_python(labels)
    except ValidationError:
        raise UsageError(f"{where}: {_LABEL_RULE}") from None


def _from_file(path: Path) -> list[Member]:
    """`NAME DSN [key=value ...]` a line. A DSN is a URI or a ${VARIABLE}, so that a key=value
    DSN's password is never taken for a label; nothing of a line is echoed (it may hold a
    secret), only its place."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: the targets file does not exist; write one target a line: NAME DSN [key=value ...]"
                         ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the targets file ({type(exc).__name__})") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        if not re.fullmatch(TARGET_PATTERN, words[0]):
            raise UsageError(f"{where}: the line does not start with a target name (letters, digits, '_', '.', '-', "
                             "starting with a letter or digit, at most 63); write NAME DSN [key=value ...]")
        if len(words) < 2 or not words[1].startswith(("postgresql://", "postgres://", "${")):
            raise UsageError(f"{where}: target {words[0]!r} needs a DSN after its name: a URI "
                             "(postgresql://USER:PASSWORD@HOST:PORT/DBNAME, the password may be ${VARIABLE}), or "
                             "${VARIABLE} holding the whole DSN")
        labels = dict(word.partition("=")[::2] for word in words[2:])
        if any("=" not in word for word in words[2:]):
            raise UsageError(f"{where}: after the DSN, {_LABEL_RULE}")
        found.append(Member(words[0], _expand(words[1], where), checked_labels(labels, where)))
    return found


def _shown(text: str) -> str:
    """A value from a database, safe to print: quoted, control characters escaped."""
    return repr(text[:64])


def _from_query(env: Environment, env_name: str) -> list[Member]:
    query = env.targets_query
    catalog = Target(f"{env_name} (catalog)", _variable(query.dsn_env, f"environment {env_name!r}, targets_query"),
                     embedded=False)
    try:
        with connect(catalog, "rollout targets") as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = '{CATALOG_TIMEOUT}'")
            cursor = conn.execute(query.sql)
            columns = [c.name for c in cursor.description or ()]
            rows = cursor.fetchall()
    except psycopg.Error as exc:
        raise UsageError(f"environment {env_name!r}: targets_query failed: {catalog.scrub(describe_error(exc))}") from None
    if columns[:2] != ["name", "dsn"] or columns[2:] not in ([], ["labels"]):
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
        if labels is not None and not isinstance(labels, dict):
            raise UsageError(f"{where}: labels must be a jsonb object of strings, e.g. '{{\"region\": \"eu\"}}'")
        found.append(Member(name, _catalog_dsn(dsn, where), checked_labels(labels or {}, where)))
    return found


def _catalog_dsn(dsn: str, where: str) -> str:
    """A catalog's DSN with its password's ${VARIABLE} filled in. Only the password: whoever may
    write the catalog must not be able to send any of this machine's variables to a host of theirs."""
    head, password, tail = match.groups() if (match := _PASSWORD.match(dsn)) else (dsn, "", "")
    if _VARIABLE.search(head + tail):
        raise UsageError(f"{where}: a DSN from targets_query may name a ${{VARIABLE}} only as its password "
                         "(postgresql://USER:${VARIABLE}@HOST/DB)")
    return head + _expand(password, where) + tail


def parse_label(text: str) -> tuple[str, str]:
    """`region=eu` from the command line."""
    key, equals, value = text.partition("=")
    if not equals:
        raise UsageError(f"--label {text!r}: write key=value, e.g. --label region=eu")
    return key, value


def select(found: list[Member], names: tuple[str, ...] = (), labels: dict[str, str] | None = None) -> Selection:
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
    return Selection(tuple(found), tuple(chosen))


def waves(env: Environment, selection: Selection) -> list[tuple[Wave, list[Member]]]:
    """The chosen targets in the environment's waves: each target in the first wave that takes it.
    A `percent` wave counts shares of the whole fleet, so narrowing a command with --target or
    --label never moves a target to another wave."""
    fleet, chosen = selection.everyone, selection.chosen
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
