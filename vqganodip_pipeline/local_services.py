"""Local stand-ins for production services, on 127.0.0.1 only: moto_server as S3.

Used by the tests (one server per session), the benchmarks and local stacks; nothing here is
needed in production, where the real S3 (or MinIO) endpoint is configured instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"


class ServiceError(RuntimeError):
    """A local service that is not installed or did not start; the message says which."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited: a zombie (exited, not yet reaped by
    its parent) counts as gone; someone else's process (no permission to signal) as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def wait_for_port(port: int, pid: int, timeout_s: float, name: str, hint: str = "") -> None:
    """Return once ``port`` on 127.0.0.1 accepts connections; raise :class:`ServiceError` if
    process ``pid`` exits or ``timeout_s`` passes first (``hint``, e.g. "see <log>", is added
    to the message)."""
    suffix = f"; {hint}" if hint else ""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if not process_alive(pid):
                raise ServiceError(
                    f"{name} exited before listening on {HOST}:{port}{suffix}"
                ) from None
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{name} did not listen on {HOST}:{port} in {timeout_s:.0f} s{suffix}"
                ) from None
            time.sleep(0.2)


@contextmanager
def moto_server(timeout_s: float = 30.0) -> Iterator[str]:
    """Run moto_server on a free port of 127.0.0.1; yields its endpoint URL, stops it after."""
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
        "moto_server"
    )
    if server is None:
        raise ServiceError("moto_server is not installed (pip install -e '.[dev]')")
    port = free_port()
    process = subprocess.Popen(
        [server, "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process.pid, timeout_s, "moto_server")
        yield f"http://{HOST}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
