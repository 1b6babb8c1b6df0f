"""A throwaway PostgreSQL 15 cluster from the machine's binaries (Debian's postgresql-15):
the version the bot runs in production (Supabase)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

BINDIR = "/usr/lib/postgresql/15/bin"


def unavailable() -> str | None:
    """Why a PostgreSQL 15 cluster cannot be started here, or None when it can."""
    if not os.path.exists(os.path.join(BINDIR, "postgres")):
        return f"no PostgreSQL 15 at {BINDIR}: install Debian's postgresql-15 to run these tests on 15"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


class Cluster:
    """initdb, start on a Unix socket in a private folder, stop and delete on close."""

    def __init__(self) -> None:
        self.home = tempfile.mkdtemp(prefix="rollout-pg15-")
        os.chmod(self.home, 0o777)
        self.data = self.data_dir = os.path.join(self.home, "data")
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        self._run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.home, "log"),
                  "-o", f"-k {self.home} -c listen_addresses='' -c fsync=off", "start")

    def _run(self, program: str, *args: str) -> None:
        command = [os.path.join(BINDIR, program), *args]
        if os.geteuid() == 0:  # PostgreSQL will not run as root: run as its own system user
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.home}&port=5432"

    def close(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


class Standby:
    """A streaming standby of `primary` (pg_basebackup -R), on a socket of its own; its replay
    can be paused and resumed, to make it fall behind for real."""

    def __init__(self, primary: Cluster, name: str = "standby1") -> None:
        self.primary, self.name = primary, name
        self.home = tempfile.mkdtemp(prefix="rollout-pg15-standby-")
        os.chmod(self.home, 0o777)
        self.data = os.path.join(self.home, "data")
        # a replication slot of its own: the primary keeps the WAL this standby has not received yet
        primary._run("pg_basebackup", "-h", primary.home, "-p", "5432", "-U", "postgres", "-D", self.data,
                     "-R", "-X", "stream", "-C", "-S", name)
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as conf:  # named, as pg_stat_replication shows it
            conf.write(f"primary_conninfo = 'host={primary.home} port=5432 user=postgres application_name={name}'\n")
        primary._run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.home, "log"),
                     "-o", f"-k {self.home} -c listen_addresses='' -c fsync=off", "start")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.home}&port=5432"

    def close(self) -> None:
        try:
            self.primary._run("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
