"""A real, throwaway PostgreSQL server: the fleet tests' and the README's fleet demo.

    python -m sandbox.record.pgserver up      # prints `export SANDBOX_STORE=postgresql://...`
    python -m sandbox.record.pgserver down    # stops it and removes its data

Not a production database (fsync off): a fleet's real store is a PostgreSQL you run.

`initdb` (as the `postgres` OS user: the server refuses to run as root) into a fresh
directory, listening on 127.0.0.1 on a free port (and a private unix socket for the
superuser's set-up), one login role with a password (SCRAM over TCP: the password is
really used), stopped and removed in `stop()` whatever happened.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bindir() -> Path | None:
    """Debian's postgresql package: /usr/lib/postgresql/<major>/bin (newest first)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name), reverse=True)
    return Path(found[0]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster; `url(db)` is a password URL over loopback TCP."""

    ROLE = "sbx_fleet"

    def __init__(self, root: Path | None = None) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql ("
                               "scripts/bootstrap.sh --test does it)")
        self.bin = bindir
        self.os_user = pwd.getpwnam("postgres")
        self.dir = Path(tempfile.mkdtemp(prefix="sbx-pg-", dir=root))
        os.chown(self.dir, self.os_user.pw_uid, self.os_user.pw_gid)
        os.chmod(self.dir, 0o700)
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(12)
        self.started = False

    def _as_postgres(self, *argv: str, timeout: float = 60) -> str:
        from ..jail.launch import supervisor_env, tool

        r = subprocess.run([tool("runuser"), "-u", "postgres", "--", *argv],
                           capture_output=True, text=True, timeout=timeout, check=False,
                           cwd="/", env=supervisor_env())
        if r.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr or r.stdout}")
        return r.stdout

    def start(self) -> PgServer:
        self._as_postgres("mkdir", "-m", "700", str(self.sock))
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                          "--no-sync", "--locale=C.UTF-8")
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=200 -c shared_buffers=32MB")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.dir / "log"), "-o", opts, "-w", "-t", "60", "start")
        self.started = True
        self.admin(f"CREATE ROLE {self.ROLE} LOGIN CREATEDB PASSWORD '{self.password}'")
        return self

    def admin(self, sql: str, db: str = "postgres") -> None:
        """Run SQL as the superuser over the private unix socket (psycopg, so nothing
        lands in a shell history or a process list)."""
        import psycopg

        with psycopg.connect(host=str(self.sock), port=self.port, user="postgres",
                             dbname=db, autocommit=True) as conn:
            conn.execute(sql.encode())

    def createdb(self, name: str) -> str:
        self.admin(f"CREATE DATABASE {name} OWNER {self.ROLE}")
        return self.url(name)

    def url(self, db: str, *, password: str | None = None) -> str:
        return (f"postgresql://{self.ROLE}:{password or self.password}@127.0.0.1:"
                f"{self.port}/{db}")

    def stop(self, mode: str = "fast") -> None:
        if self.started:
            with contextlib.suppress(Exception):
                self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode,
                                  "-w", "-t", "60", "stop")
            self.started = False

    def restart(self) -> None:
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=200 -c shared_buffers=32MB")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.dir / "log"), "-o", opts, "-w", "-t", "60", "start")
        self.started = True

    def remove(self) -> None:
        self.stop("immediate")
        # A server that would not stop: its postmaster pid, killed.
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 9)
            time.sleep(0.2)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- `python -m sandbox.record.pgserver up|down`: one server kept under the state dir ------------

SERVER_ROOT = Path("/var/lib/sandbox-pgserver")


def _state() -> Path:
    from .. import paths

    return paths.state_dir() / "pgserver"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m sandbox.record.pgserver", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "url"])
    args = ap.parse_args(argv)
    state = _state()
    info_file = state / "server.json"
    if args.action in ("down", "url") and not info_file.exists():
        print(f"pgserver: none running (no {info_file}); start one: python -m "
              "sandbox.record.pgserver up", file=__import__("sys").stderr)
        return 1
    if args.action == "up":
        if info_file.exists():
            print(f"pgserver: already up; {json.loads(info_file.read_text())['export']}")
            return 0
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Not under the state dir: that is 0700 root, and the server runs as `postgres`.
        SERVER_ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
        server = PgServer(root=SERVER_ROOT).start()
        url = server.createdb("sandbox")
        export = f"export SANDBOX_STORE='{url}'"
        info_file.write_text(json.dumps({"dir": str(server.dir), "port": server.port,
                                         "sock": str(server.sock), "url": url,
                                         "export": export}))
        os.chmod(info_file, 0o600)
        print(export)
        return 0
    info = json.loads(info_file.read_text())
    if args.action == "url":
        print(info["url"])
        return 0
    server = PgServer.__new__(PgServer)
    bindir = pg_bindir()
    assert bindir is not None
    server.bin, server.os_user = bindir, pwd.getpwnam("postgres")
    server.dir = Path(info["dir"])
    server.data, server.sock, server.port = server.dir / "data", Path(info["sock"]), info["port"]
    server.started = True
    server.remove()
    info_file.unlink()
    print("pgserver: stopped and removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
