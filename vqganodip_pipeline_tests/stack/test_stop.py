"""``make stack-down`` stops what the stack started and nothing else (no services needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vqganodip_pipeline import stack as stack_module


def sleeper(env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def test_stop_ends_marked_processes_and_spares_a_stale_pid_files_process(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "pids").mkdir()
    stranger = sleeper()  # not started by the stack: a pid file naming it is stale
    ours = sleeper({stack_module.MARKER: str(root)})  # a service of the stack
    orphan = sleeper({stack_module.MARKER: str(root)})  # e.g. a run worker, no pid file
    try:
        (root / "pids" / "webserver.pid").write_text(str(stranger.pid))
        (root / "pids" / "daemon.pid").write_text(str(ours.pid))
        stopped = stack_module.stop(root, timeout_s=10)
        assert stopped == ["daemon"]
        assert ours.wait(timeout=10) is not None and orphan.wait(timeout=10) is not None
        assert stranger.poll() is None, "a process the stack did not start was signalled"
        assert not list((root / "pids").iterdir())
    finally:
        for process in (stranger, ours, orphan):
            process.kill()
            process.wait(timeout=10)
