"""A throwaway PostgreSQL cluster in a temporary folder on a loopback port, for the tests and the benchmarks.

initdb and postgres refuse to run as root: as root, the cluster runs as the `postgres` user the
Debian package creates, in a folder outside pytest's (which only root may enter).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@dataclass
class Postgres:
    root: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls) -> Postgres:
        root = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:
            as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres")
        subprocess.run([*as_user, pg_bin("initdb") or "initdb", "-D", str(root / "data"), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        pg = cls(root, port, as_user)
        pg.ctl("start", *pg.options)
        return pg

    @property
    def options(self) -> list[str]:
        """The server's log goes to a file: with a pipe, pg_ctl's caller would wait on the server itself."""
        return ["-l", str(self.data / "log"), "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=200"]

    def ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args],
                       check=True, capture_output=True, timeout=90)

    def restart(self) -> None:
        self.ctl("restart", "-m", "fast", *self.options)

    def stop(self) -> None:
        self.ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}"')
            db.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
