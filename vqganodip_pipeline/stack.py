"""The production topology without containers: ``make stack`` / ``make stack-down``.

The same services as ``docker/docker-compose.yml``, as plain processes on 127.0.0.1:

- PostgreSQL (Debian's server binaries) with a private data folder: Dagster's run, event-log
  and schedule storage;
- moto_server as the S3 service (MinIO in compose): asset storage, inbox and nothing else;
- ``dagster api grpc``: the user-code server of ``vqganodip_pipeline.definitions``;
- ``dagster-webserver`` and ``dagster-daemon`` (sensors, automation, run queue, run
  monitoring), both reading the generated ``dagster.yaml`` (Postgres storage, the queued run
  coordinator with a concurrency limit, the default run launcher: runs are processes that the
  code server starts) and a ``workspace.yaml`` that points at the gRPC server.

Everything lives under one stack folder (``.stack/`` by default, git-ignored): the database,
``DAGSTER_HOME``, logs, one pid file per service and ``stack.json`` (ports, endpoints,
generated password). Every process it starts carries ``VQGANODIP_STACK=<folder>`` in its
environment, and so does everything they start (run workers, step processes, PostgreSQL's
backends): :func:`stop` ends the pid files' process groups and then any process still carrying
that marker, so that ``make stack-down`` stops exactly what ``make stack`` started and nothing
else. Nothing is downloaded.

As root (CI, containers) PostgreSQL runs as the ``postgres`` user, which the Debian package
creates: the server refuses to run as root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vqganodip_pipeline.local_services import (
    HOST,
    ServiceError,
    free_port,
    process_alive,
    wait_for_port,
)

MARKER = "VQGANODIP_STACK"
LOCATION = "vqganodip_pipeline"
DEFAULT_ROOT = ".stack"
BUCKET = "vqganodip"
DB_NAME, DB_USER = "dagster", "dagster"
# the services in start order; stopped in the reverse one
SERVICES = ("postgres", "s3", "grpc", "webserver", "daemon")
# Runs dequeued at once (QueuedRunCoordinator) and torch-heavy steps at once (the
# ``vqganodip_torch`` pool): a 2-core machine trains and scores one thing at a time.
MAX_CONCURRENT_RUNS = 2
POOL_LIMIT = 1


def postgres_bin_dir() -> Path | None:
    """Folder of the PostgreSQL server binaries (``initdb``, ``pg_ctl``): ``$PG_BIN``, then
    Debian's ``/usr/lib/postgresql/<version>/bin`` (newest first), then ``PATH``; None when
    PostgreSQL is not installed (``apt-get install -y postgresql``)."""
    candidates = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name)
        )
        candidates += [v / "bin" for v in versions]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


@dataclass
class Stack:
    """One stack's folder, ports and credentials (``stack.json``)."""

    root: str
    postgres_port: int
    s3_port: int
    grpc_port: int
    webserver_port: int
    pg_password: str
    preset: str = "demo"
    bucket: str = BUCKET
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def home(self) -> Path:
        return self.path / "dagster_home"

    @property
    def pgdata(self) -> Path:
        return self.path / "postgres" / "data"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def webserver_url(self) -> str:
        return f"http://{HOST}:{self.webserver_port}"

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/storage"

    @property
    def inbox(self) -> str:
        return f"s3://{self.bucket}/inbox"

    @property
    def postgres_url(self) -> str:
        return f"postgresql://{DB_USER}:{self.pg_password}@{HOST}:{self.postgres_port}/{DB_NAME}"

    def env(self) -> dict[str, str]:
        """What the services (and a client of the stack) need in their environment on top of
        the caller's: the instance, the S3 locations and the (fake, moto) credentials."""
        return {
            MARKER: str(self.path),
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_PASSWORD": self.pg_password,
            "VQGANODIP_STORAGE": self.storage,
            "VQGANODIP_INBOX": self.inbox,
            "VQGANODIP_S3_ENDPOINT": self.s3_endpoint,
            "VQGANODIP_WORK": str(self.path / "work"),
            "VQGANODIP_PRESET": self.preset,
            "AWS_ACCESS_KEY_ID": "stack",
            "AWS_SECRET_ACCESS_KEY": "stack-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            **self.extra_env,
        }

    def save(self) -> None:
        state = self.path / "stack.json"
        state.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        state.chmod(0o600)

    @classmethod
    def load(cls, root: str | Path) -> Stack:
        return cls(**json.loads((Path(root) / "stack.json").read_text()))


def dagster_yaml(stack: Stack) -> str:
    """The instance configuration of the stack: PostgreSQL for runs, event logs and schedules
    (the password by reference to ``DAGSTER_PG_PASSWORD``), queued runs with a limit, the
    default run launcher, the torch pool's limit and run monitoring (a run whose worker died
    is marked failed and its pool slots are freed)."""
    return f"""\
# generated by vqganodip_pipeline.stack: the same shape as docker/dagster.yaml
telemetry:
  enabled: false
storage:
  postgres:
    postgres_db:
      username: {DB_USER}
      password:
        env: DAGSTER_PG_PASSWORD
      hostname: {HOST}
      db_name: {DB_NAME}
      port: {stack.postgres_port}
      # the driver dagster-postgres installs (SQLAlchemy 2.1's default is psycopg 3)
      scheme: postgresql+psycopg2
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
run_launcher:
  module: dagster._core.launcher
  class: DefaultRunLauncher
# the queue's limit lives here with the pools' (Dagster refuses it in both places)
concurrency:
  runs:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
  pools:
    default_limit: {POOL_LIMIT}
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
"""


def workspace_yaml(stack: Stack) -> str:
    """The workspace of the webserver and the daemon: the stack's gRPC code server."""
    return f"""\
load_from:
  - grpc_server:
      host: {HOST}
      port: {stack.grpc_port}
      location_name: {LOCATION}
"""


# --- processes -------------------------------------------------------------------------------


def _pid_file(root: Path, name: str) -> Path:
    return root / "pids" / f"{name}.pid"


def _bin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise ServiceError(f"{name} is not installed (pip install -e '.[stack]')")
    return found


def _spawn(stack: Stack, name: str, command: list[str], env: Mapping[str, str]) -> int:
    """Start ``command`` in its own session (so its whole process group can be signalled),
    output to ``logs/<name>.log``; writes its pid file."""
    log = (stack.path / "logs" / f"{name}.log").open("ab")
    with log:
        process = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=os.getcwd(),
        )
    _pid_file(stack.path, name).write_text(str(process.pid))
    return process.pid


def _reap(pid: int) -> None:
    # a child of this very process (``up`` followed by ``down`` in one process, the tests)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _as_postgres_user() -> dict[str, Any]:
    """Popen arguments that run a PostgreSQL binary as ``postgres`` when this process is root
    (the server refuses root); none otherwise."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError as error:
        raise ServiceError(
            "running as root needs the 'postgres' user (apt-get install postgresql)"
        ) from error
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _chown_for_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


def _start_postgres(stack: Stack, env: Mapping[str, str], durable: bool, timeout_s: float) -> None:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise ServiceError("PostgreSQL is not installed (apt-get install -y postgresql)")
    run_as = _as_postgres_user()
    base = stack.pgdata.parent
    base.mkdir(parents=True, exist_ok=True)
    _chown_for_postgres(base)
    # the server's user must reach its folder: every parent must be traversable
    for parent in base.parents:
        if parent == Path("/"):
            break
        if run_as and not os.stat(parent).st_mode & 0o001:
            raise ServiceError(f"{parent} is not traversable by the postgres user (chmod o+x)")
    pg_env = {**env, "PGPASSWORD": stack.pg_password}
    if not (stack.pgdata / "PG_VERSION").is_file():
        pwfile = base / "pwfile"
        pwfile.write_text(stack.pg_password + "\n")
        pwfile.chmod(0o600)
        _chown_for_postgres(pwfile)
        command = [
            str(bin_dir / "initdb"),
            "-D",
            str(stack.pgdata),
            "-U",
            DB_USER,
            "-E",
            "UTF8",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--locale=C",
        ]
        if not durable:
            command.append("--no-sync")
        try:
            subprocess.run(
                command, env=pg_env, check=True, capture_output=True, timeout=120, **run_as
            )
        except subprocess.CalledProcessError as error:
            raise ServiceError(f"initdb failed: {error.stderr.decode(errors='replace')}") from error
        finally:
            pwfile.unlink(missing_ok=True)
    options = (
        f"-c listen_addresses={HOST} -p {stack.postgres_port} -c unix_socket_directories={base}"
        + ("" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    )
    log = stack.path / "logs" / "postgres.log"
    log.touch()
    _chown_for_postgres(log)
    result = subprocess.run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(stack.pgdata),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout_s)),
            "start",
        ],
        env=pg_env,
        capture_output=True,
        timeout=timeout_s + 10,
        **run_as,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"PostgreSQL did not start: {result.stderr.decode(errors='replace')}; see {log}"
        )
    pid = int((stack.pgdata / "postmaster.pid").read_text().split()[0])
    _pid_file(stack.path, "postgres").write_text(str(pid))
    _create_database(stack)


def _create_database(stack: Stack) -> None:
    import psycopg2

    connection = psycopg2.connect(
        host=HOST,
        port=stack.postgres_port,
        user=DB_USER,
        password=stack.pg_password,
        dbname="postgres",
        connect_timeout=10,
    )
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        connection.close()


def _create_bucket(stack: Stack) -> None:
    import boto3

    env = stack.env()
    client = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=stack.bucket)


def graphql(
    stack: Stack, query: str, variables: Mapping[str, Any] | None = None, timeout_s: float = 30.0
) -> dict[str, Any]:
    """POST ``query`` to the stack webserver's GraphQL API; returns ``data`` (raises on
    errors)."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(
        f"{stack.webserver_url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer = json.loads(response.read())
    if answer.get("errors"):
        raise ServiceError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


_LOCATION_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def _wait_location_loaded(stack: Stack, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        with contextlib.suppress(
            urllib.error.URLError, ConnectionError, TimeoutError, ServiceError
        ):
            data = graphql(stack, _LOCATION_QUERY, timeout_s=10)
            entries = data["workspaceOrError"].get("locationEntries", [])
            loaded = [e for e in entries if e["name"] == LOCATION]
            if loaded and loaded[0]["locationOrLoadError"]:
                kind = loaded[0]["locationOrLoadError"]["__typename"]
                if kind == "RepositoryLocation":
                    return
                last = str(loaded[0]["locationOrLoadError"])
        time.sleep(0.5)
    raise ServiceError(f"the webserver did not load code location {LOCATION}: {last}")


def _wait_daemon(stack: Stack, timeout_s: float) -> None:
    """Wait for the daemon's first heartbeats (the run queue and the sensors)."""
    query = "query { instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
    deadline = time.monotonic() + timeout_s
    wanted = {"SENSOR", "QUEUED_RUN_COORDINATOR", "ASSET"}
    healthy: set[str] = set()
    while time.monotonic() < deadline:
        data = graphql(stack, query)
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {s["daemonType"] for s in statuses if s["healthy"]}
        if wanted <= healthy:
            return
        time.sleep(1)
    raise ServiceError(f"dagster-daemon not healthy in {timeout_s:.0f} s: {sorted(healthy)}")


def start(
    root: str | Path = DEFAULT_ROOT,
    preset: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    durable: bool = True,
    timeout_s: float = 120.0,
) -> Stack:
    """Start the whole stack under ``root`` and return it once the webserver serves the code
    location and the daemon is healthy. A stack already running there is stopped first; on
    any failure whatever was started is stopped again. ``durable=False`` (tests) runs
    PostgreSQL without fsync."""
    path = Path(root).resolve()
    if (path / "stack.json").exists():
        stop(path)
    for folder in ("logs", "pids", "dagster_home", "work"):
        (path / folder).mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    previous = {}
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, TypeError):
        previous = asdict(Stack.load(path))
    stack = Stack(
        root=str(path),
        postgres_port=free_port(),
        s3_port=free_port(),
        grpc_port=free_port(),
        webserver_port=free_port(),
        pg_password=previous.get("pg_password") or secrets.token_hex(16),
        preset=preset or os.environ.get("VQGANODIP_PRESET", "demo"),
        extra_env=dict(extra_env or {}),
    )
    stack.save()
    (stack.home / "dagster.yaml").write_text(dagster_yaml(stack))
    (path / "workspace.yaml").write_text(workspace_yaml(stack))
    env = {**os.environ, **stack.env()}
    logs = path / "logs"
    try:
        _start_postgres(stack, env, durable, timeout_s)
        pid = _spawn(stack, "s3", [_bin("moto_server"), "-H", HOST, "-p", str(stack.s3_port)], env)
        wait_for_port(stack.s3_port, pid, timeout_s, "moto_server", f"see {logs / 's3.log'}")
        _create_bucket(stack)
        pid = _spawn(
            stack,
            "grpc",
            [
                _bin("dagster"),
                "api",
                "grpc",
                "-m",
                "vqganodip_pipeline.definitions",
                "-h",
                HOST,
                "-p",
                str(stack.grpc_port),
                "--location-name",
                LOCATION,
            ],
            env,
        )
        wait_for_port(
            stack.grpc_port, pid, timeout_s, "dagster api grpc", f"see {logs / 'grpc.log'}"
        )
        workspace = str(path / "workspace.yaml")
        pid = _spawn(
            stack,
            "webserver",
            [
                _bin("dagster-webserver"),
                "-h",
                HOST,
                "-p",
                str(stack.webserver_port),
                "-w",
                workspace,
            ],
            env,
        )
        wait_for_port(
            stack.webserver_port,
            pid,
            timeout_s,
            "dagster-webserver",
            f"see {logs / 'webserver.log'}",
        )
        _wait_location_loaded(stack, timeout_s)
        _spawn(stack, "daemon", [_bin("dagster-daemon"), "run", "-w", workspace], env)
        _wait_daemon(stack, timeout_s)
    except BaseException:
        stop(path)
        raise
    return stack


def _carries_marker(pid: int, root: Path) -> bool:
    """Whether process ``pid`` has this stack's marker in its environment (True on a system
    without ``/proc``; False for a process whose environment this user cannot read, which
    this user did not start)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return f"{MARKER}={root}".encode() in environ.split(b"\0")


def _marked_processes(root: Path) -> list[int]:
    """Pids of the processes whose environment carries this stack's marker."""
    wanted = f"{MARKER}={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if wanted in (entry / "environ").read_bytes().split(b"\0") and process_alive(
                int(entry.name)
            ):
                found.append(int(entry.name))
    return found


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        for pid in pids:
            _reap(pid)
        left = [pid for pid in pids if process_alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _stop_postgres(root: Path, timeout_s: float) -> None:
    bin_dir = postgres_bin_dir()
    data = root / "postgres" / "data"
    if bin_dir is None or not (data / "postmaster.pid").exists():
        return
    subprocess.run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(timeout_s)),
            "stop",
        ],
        capture_output=True,
        timeout=timeout_s + 10,
        **_as_postgres_user(),
    )


def stop(root: str | Path = DEFAULT_ROOT, timeout_s: float = 20.0) -> list[str]:
    """Stop what :func:`start` started under ``root``, daemon first, PostgreSQL last: SIGTERM
    to each service's process group, SIGKILL after ``timeout_s``, then whatever process still
    carries the stack's marker (a run worker that left the group). Returns the services that
    were running."""
    path = Path(root).resolve()
    stopped = []
    for name in reversed(SERVICES):
        pid_file = _pid_file(path, name)
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text() or 0)
        # a stale pid file (after a reboot) may name someone else's process: only ours
        if pid > 0 and process_alive(pid) and _carries_marker(pid, path):
            stopped.append(name)
            if name == "postgres":
                _stop_postgres(path, timeout_s)
            else:
                _signal_group(pid, signal.SIGTERM)
            if _wait_gone([pid], timeout_s):
                _signal_group(pid, signal.SIGKILL)
                _wait_gone([pid], 5)
        pid_file.unlink()
    left = _marked_processes(path)
    for pid in left:
        _signal_group(pid, signal.SIGTERM)
    left = _wait_gone(left, timeout_s)
    for pid in left:
        _signal_group(pid, signal.SIGKILL)
    if _wait_gone(left, 5):
        raise ServiceError(f"processes of the stack in {path} would not stop: {left}")
    return stopped


def running(root: str | Path = DEFAULT_ROOT) -> dict[str, bool]:
    """Each service's state, from its pid file."""
    path = Path(root).resolve()
    state = {}
    for name in SERVICES:
        pid_file = _pid_file(path, name)
        state[name] = pid_file.exists() and process_alive(int(pid_file.read_text() or 0))
    return state


@contextlib.contextmanager
def stack_env(stack: Stack) -> Iterator[None]:
    """This process's environment set as the stack's services see it, restored after."""
    saved = {k: os.environ.get(k) for k in stack.env()}
    os.environ.update(stack.env())
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqganodip_pipeline.stack", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=("up", "down", "status", "env"))
    parser.add_argument("--root", default=os.environ.get("VQGANODIP_STACK_DIR", DEFAULT_ROOT))
    parser.add_argument("--preset", default=None)
    args = parser.parse_args(argv)
    if args.command == "up":
        began = time.monotonic()
        stack = start(args.root, args.preset)
        print(f"stack up in {time.monotonic() - began:.1f} s under {stack.root}")
        print(f"  Dagster UI  {stack.webserver_url}")
        print(f"  PostgreSQL  {HOST}:{stack.postgres_port} (db {DB_NAME}, user {DB_USER})")
        print(f"  S3 (moto)   {stack.s3_endpoint}  storage {stack.storage}  inbox {stack.inbox}")
        print(f"  code server {HOST}:{stack.grpc_port}; logs in {stack.root}/logs")
        print("  the sensors start switched off: switch them on in the UI (Automation)")
        print(f'  client environment: eval "$({sys.executable} -m vqganodip_pipeline.stack env)"')
        return 0
    if args.command == "down":
        stopped = stop(args.root)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if args.command == "env":
        for name, value in Stack.load(args.root).env().items():
            print(f"export {name}={value}")
        return 0
    for name, up in running(args.root).items():
        print(f"{name:>10}: {'running' if up else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
