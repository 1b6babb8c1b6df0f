"""`rollout init`: a plan for a team's existing database, ready for its first step.

It writes rollout.yaml with a local embedded environment and one environment per DSN
variable the team names, the JSON Schema beside it (editors that read the
`yaml-language-server` line complete and check every key), and a commented example step. The
plan it writes passes `rollout check` as it stands.
"""

from __future__ import annotations

import json
import os
import re

from .errors import UsageError
from .plan import json_schema

SUFFIXES = ("_DATABASE_URL", "_DB_URL", "_DSN", "_URL")

EXAMPLE = """\
steps: []
# A first step: write `steps:` for `steps: []` above, uncomment these lines and adapt them
# (docs/plan.md lists every key and operation; docs/your-first-plan.md builds a plan step by
# step). `rollout plan` shows the SQL it generates, its locks and findings, and writes nothing.
#
#  - id: orders_by_customer
#    title: Find a customer's orders without a scan
#    priority: high
#    operations:
#      - op: create_index
#        name: orders_customer_id
#        table: orders
#        columns: [customer_id]
"""


def environment_name(variable: str) -> str:
    """PRODUCTION_DATABASE_URL -> production."""
    name = variable
    for suffix in SUFFIXES:
        if name.upper().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
        raise UsageError(f"--dsn-env {variable!r} gives no usable environment name; name the variable like "
                         "STAGING_DATABASE_URL")
    return name


def init(directory: str, dsn_envs: tuple[str, ...]) -> list[str]:
    """Write rollout.yaml and rollout.schema.json in `directory`; returns the files written."""
    plan, schema = os.path.join(directory, "rollout.yaml"), os.path.join(directory, "rollout.schema.json")
    for path in (plan, schema):
        if os.path.exists(path):
            raise UsageError(f"{path} exists already: rollout init never overwrites a file")
    for variable in dsn_envs:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
            raise UsageError(f"--dsn-env {variable!r} is not an environment variable name")
    names = [environment_name(v) for v in dsn_envs]
    if len(set(names) | {"local"}) != len(names) + 1:
        raise UsageError(f"--dsn-env variables give the environments {', '.join(names)}: each needs its own name, "
                         "and 'local' is the embedded one")
    lines = ["# yaml-language-server: $schema=rollout.schema.json", "version: 1", "environments:",
             "  local: {database: embedded}  # a PostgreSQL that runs from pip, under .rollout/"]
    previous = "local"
    for variable, name in zip(dsn_envs, names):
        production = name in ("production", "prod")
        extras = f", after: {previous}" + (", confirm: true" if production else "")
        lines.append(f"  {name}: {{dsn_env: {variable}{extras}}}")
        previous = name
    with open(plan, "x", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n" + EXAMPLE)
    with open(schema, "x", encoding="utf-8") as handle:
        json.dump(json_schema(), handle, indent=2)
        handle.write("\n")
    return [plan, schema]
