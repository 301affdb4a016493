"""PostgreSQL 15 for the stack: a project-local cluster on 127.0.0.1, password-only logins.

The binaries are the Debian package's (`apt-get install postgresql`), run with pg_ctl on a
data folder under `stack.dir`; the system's own cluster is never touched. Only TCP on
loopback is enabled (no Unix socket), every login needs a SCRAM password, and each server
gets its own role and database: `mlflow` (tracking, plus `mlflow_auth` for users) and
`prefect` (with the pg_trgm extension Prefect's search needs).

PostgreSQL refuses to run as root. Under root (a container, CI) the server runs as the
package's `postgres` user, which owns the data folder, with one capability added
(CAP_DAC_READ_SEARCH) so that it can reach a project inside a private folder such as /root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from visionloop.stack.layout import HOST, Layout, StackError
from visionloop.stack.processes import ProcessState, start_time

MAJOR = "15"
BIN = Path(f"/usr/lib/postgresql/{MAJOR}/bin")
SUPERUSER = "visionloop"
SERVER_USER = "postgres"  # the Debian package's system user, used when we are root
# database -> owning role (and the secrets entry holding that role's password)
# optuna: `visionloop tune` studies (MLflow and Optuna each need their own alembic_version)
DATABASES = {"mlflow": "mlflow", "mlflow_auth": "mlflow", "prefect": "prefect", "optuna": "mlflow"}
ROLE_SECRET = {"mlflow": "mlflow_db", "prefect": "prefect_db"}
INSTALL_HINT = "install it with `apt-get install postgresql` (Debian/Ubuntu)"


def installed() -> bool:
    return (BIN / "postgres").is_file() and (BIN / "pg_ctl").is_file()


def url(driver: str, role: str, password: str, port: int, database: str) -> str:
    """A SQLAlchemy URL (the generated passwords are URL-safe, so nothing needs quoting)."""
    return f"postgresql+{driver}://{role}:{password}@{HOST}:{port}/{database}"


def state(layout: Layout) -> ProcessState:
    """The postmaster's PID from postmaster.pid; a file left by a dead server is removed."""
    pid_file = layout.pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except FileNotFoundError:
        return ProcessState(None)
    except (OSError, ValueError, IndexError):
        pid = -1
    if pid > 0 and start_time(pid) is not None and _is_postgres(pid):
        return ProcessState(pid)
    pid_file.unlink(missing_ok=True)
    return ProcessState(None, f"stale postmaster.pid (process {pid} is not PostgreSQL); removed")


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    except OSError:
        return False


def check_version(layout: Layout) -> None:
    """A data folder made by another major version cannot be started by this one."""
    version_file = layout.pgdata / "PG_VERSION"
    if not version_file.exists():
        return
    found = version_file.read_text().strip()
    if found != MAJOR:
        raise StackError(
            f"{layout.pgdata} holds a PostgreSQL {found} cluster but the stack runs PostgreSQL "
            f"{MAJOR}: upgrade it with pg_upgrade (docs/production.md, Upgrades) or move the "
            "folder away to start a new, empty one"
        )


def initialise(layout: Layout, superuser_password: str) -> bool:
    """initdb the data folder unless it holds a cluster already; True when it was made."""
    check_version(layout)
    if (layout.pgdata / "PG_VERSION").exists():
        return False
    if layout.pgdata.exists() and any(layout.pgdata.iterdir()):
        raise StackError(
            f"{layout.pgdata} is not empty but holds no PostgreSQL cluster; move it away"
        )
    _make_server_folder(layout.postgres)
    _make_server_folder(layout.pgdata, mode=0o700)
    password_file = layout.postgres / ".initdb-password"
    _write_private(password_file, superuser_password)
    try:
        _run(
            [
                str(BIN / "initdb"),
                f"--pgdata={layout.pgdata}",
                f"--username={SUPERUSER}",
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",  # no trust, no peer: every login needs the password
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            "initdb",
        )
    finally:
        password_file.unlink(missing_ok=True)
    return True


def start(layout: Layout, port: int, timeout: float) -> None:
    options = f"-c listen_addresses={HOST} -c port={port} -c unix_socket_directories=''"
    _run(
        [
            str(BIN / "pg_ctl"),
            "start",
            f"--pgdata={layout.pgdata}",
            f"--log={layout.postgres / 'server.log'}",
            f"--options={options}",
            "--wait",
            f"--timeout={int(timeout)}",
        ],
        "pg_ctl start",
        hint=f"see {layout.postgres / 'server.log'}",
    )


def stop(layout: Layout) -> bool:
    if not state(layout).running:
        return False
    _run(
        [str(BIN / "pg_ctl"), "stop", f"--pgdata={layout.pgdata}", "--mode=fast", "--wait"],
        "pg_ctl stop",
    )
    return True


def ensure_databases(port: int, passwords: dict[str, str]) -> None:
    """Roles with the current passwords, their databases, pg_trgm for Prefect (idempotent)."""
    from psycopg import sql

    with connect(port, passwords["postgres"]) as admin:
        for role, secret in ROLE_SECRET.items():
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            statement = sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}")
            admin.execute(statement.format(sql.Identifier(role), sql.Literal(passwords[secret])))
        for database, owner in DATABASES.items():
            found = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not found:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(owner)
                    )
                )
    with connect(port, passwords["postgres"], database="prefect") as prefect_db:
        prefect_db.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")


def connect(port: int, password: str, database: str = "postgres", user: str = SUPERUSER):
    import psycopg

    try:
        return psycopg.connect(
            host=HOST,
            port=port,
            user=user,
            password=password,
            dbname=database,
            autocommit=True,
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1]
        if "password authentication failed" in reason:
            raise StackError(
                f"PostgreSQL on {HOST}:{port} rejected the password of {user!r}: the stack's "
                "secrets.json does not belong to this data folder; restore the secrets.json "
                "made with it (backups: docs/production.md)"
            ) from None
        raise StackError(f"cannot connect to PostgreSQL on {HOST}:{port}: {reason}") from None


def _run(argv: list[str], what: str, hint: str = "") -> None:
    done = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=600, cwd="/"
    )
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        detail = output[-1] if output else f"exit status {done.returncode}"
        raise StackError(f"PostgreSQL {what} failed: {detail}" + (f"; {hint}" if hint else ""))


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return [
        shutil.which("setpriv") or "setpriv",
        f"--reuid={SERVER_USER}",
        f"--regid={SERVER_USER}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        *argv,
    ]


def _make_server_folder(folder: Path, mode: int = 0o750) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(mode)
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise StackError(
                f"running as root, PostgreSQL needs the {SERVER_USER!r} system user that the "
                f"Debian package creates; {INSTALL_HINT}, or run the stack as a normal user"
            ) from None
        os.chown(folder, user.pw_uid, user.pw_gid)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
