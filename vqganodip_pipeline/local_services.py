"""Local stand-ins for production services, on 127.0.0.1 only: moto_server as S3.

Used by the tests (one server per session), the benchmarks and local stacks; nothing here is
needed in production, where the real S3 (or MinIO) endpoint is configured instead.
"""

from __future__ import annotations

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


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float, name: str) -> None:
    """Return once ``port`` accepts connections; raise :class:`ServiceError` if ``process``
    exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise ServiceError(f"{name} did not start on {HOST}:{port}") from None
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
        wait_for_port(port, process, timeout_s, "moto_server")
        yield f"http://{HOST}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
