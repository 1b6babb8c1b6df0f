"""Real PgBouncer processes (Debian's pgbouncer) in front of the test server: one pooling in
transaction mode, one in session mode, each on a Unix socket of its own."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import parse_qs, urlparse

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
MODES = {"transaction": 6501, "session": 6502}


def unavailable() -> str | None:
    if not os.path.exists(BINARY):
        return "pgbouncer is not installed (.ci/run installs Debian's pgbouncer)"
    return None


class Bouncers:
    """Both poolers, started for a server reachable at `server_url` (a Unix socket URL)."""

    def __init__(self, server_url: str):
        query = parse_qs(urlparse(server_url).query)
        socket_dir, port = query["host"][0], query.get("port", ["5432"])[0]
        self.home = tempfile.mkdtemp(prefix="rollout-pgbouncer-")
        os.chmod(self.home, 0o777)
        self.processes = []
        for mode, listen in MODES.items():
            config = os.path.join(self.home, f"{mode}.ini")
            with open(config, "w") as handle:
                handle.write(f"[databases]\n* = host={socket_dir} port={port} user=postgres\n"
                             f"[pgbouncer]\nlisten_addr =\nunix_socket_dir = {self.home}\nlisten_port = {listen}\n"
                             f"auth_type = any\npool_mode = {mode}\nlogfile = {self.home}/{mode}.log\n"
                             f"pidfile = {self.home}/{mode}.pid\nmax_client_conn = 200\ndefault_pool_size = 10\n")
            command = [BINARY, config]
            if os.geteuid() == 0:  # PgBouncer will not run as root: run as the user that runs the server
                owner = os.stat(os.path.join(socket_dir, f".s.PGSQL.{port}")).st_uid
                command = [BINARY, "-u", pwd.getpwuid(owner).pw_name, config]
            self.processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for listen in MODES.values():
            self._wait(os.path.join(self.home, f".s.PGSQL.{listen}"))

    def _wait(self, path: str) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if os.path.exists(path):
                with socket.socket(socket.AF_UNIX) as probe:
                    try:
                        probe.connect(path)
                        return
                    except OSError:
                        pass
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {path}; see {self.home}/*.log")

    def url(self, mode: str, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.home}&port={MODES[mode]}"

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)
        shutil.rmtree(self.home, ignore_errors=True)
