"""Run every ``bench/bench_*.py`` one after the other and print a summary table.

Every benchmark script takes ``--quick`` (a smoke run of seconds to minutes) and ``--out PATH``
(its result file). By default this runner uses the quick mode and writes the results to a fresh
temporary folder, so the committed ``bench/results/*.json`` are never replaced by smoke-run
numbers; ``--full`` runs the real benchmarks, which write ``bench/results/<name>.json`` (the
scoring one takes about 1.5 h on 2 cores, the VQGAN one about 15 min).

Each script runs as a subprocess in its own process group, with a wall-clock limit
(``--timeout``); on timeout the whole group (its workers included) is stopped.

Run: ``make bench`` or ``.venv/bin/python -m bench.run_all [--full] [--timeout S] [NAME ...]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
QUICK_TIMEOUT_S = 900.0
FULL_TIMEOUT_S = 4 * 3600.0


@dataclass(frozen=True)
class Outcome:
    """What one benchmark run left behind."""

    script: str
    seconds: float
    returncode: int | None  # None: stopped at the timeout
    result: Path | None  # None: no result file written by this run


def discover(names: list[str]) -> list[Path]:
    """``bench/bench_*.py`` in name order, or those named (``vqgan`` or ``bench_vqgan``)."""
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if not names:
        return scripts
    by_name = {p.stem.removeprefix("bench_"): p for p in scripts}
    chosen = []
    for name in names:
        key = Path(name).stem.removeprefix("bench_")
        if key not in by_name:
            raise SystemExit(
                f"run_all: no benchmark {name!r}; available: {', '.join(sorted(by_name))}"
            )
        chosen.append(by_name[key])
    return chosen


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(script: Path, full: bool, out_dir: Path | None, timeout_s: float) -> Outcome:
    """Run ``python -m bench.<script>`` from the repository root; output goes to the terminal."""
    name = script.stem.removeprefix("bench_")
    result = (out_dir if out_dir is not None else RESULTS_DIR) / f"{name}.json"
    command = [sys.executable, "-m", f"bench.{script.stem}"]
    if not full:
        command.append("--quick")
    if out_dir is not None:
        command += ["--out", str(result)]
    print(f"\n=== {' '.join(command[1:])} (limit {timeout_s:.0f} s)", flush=True)
    wall_start = time.time()
    start = time.perf_counter()
    # A new session makes the script and its workers one process group, stopped together.
    proc = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True)
    try:
        returncode: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        returncode = None
    except KeyboardInterrupt:
        _stop_group(proc)
        raise
    seconds = time.perf_counter() - start
    # only a file this run wrote counts (a committed result of the same name does not)
    written = result.is_file() and result.stat().st_mtime >= wall_start - 1.0
    return Outcome(script.name, seconds, returncode, result if written else None)


def summary(outcomes: list[Outcome]) -> str:
    """A plain-text table: script, seconds, exit code, result file."""

    def shown(path: Path | None) -> str:
        if path is None:
            return "-"
        try:
            return str(path.resolve().relative_to(REPO_ROOT))
        except ValueError:
            return str(path)

    rows = [
        (
            o.script,
            f"{o.seconds:.1f}",
            "timeout" if o.returncode is None else str(o.returncode),
            shown(o.result),
        )
        for o in outcomes
    ]
    header = ("script", "seconds", "exit", "result")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}"
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. vqgan")
    parser.add_argument(
        "--full", action="store_true", help="full runs (hours), not the quick smoke runs"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="folder for the result files (default: a new temporary folder in quick mode, "
        "bench/results/ with --full)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"seconds per script (default {QUICK_TIMEOUT_S:.0f} quick, {FULL_TIMEOUT_S:.0f} full)",
    )
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    scripts = discover(args.names)
    timeout_s = args.timeout or (FULL_TIMEOUT_S if args.full else QUICK_TIMEOUT_S)
    out_dir = args.out_dir
    if out_dir is None and not args.full:
        out_dir = Path(tempfile.mkdtemp(prefix="bench_quick_"))
    if out_dir is not None:
        out_dir = out_dir.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = [run_one(script, args.full, out_dir, timeout_s) for script in scripts]
    mode = "full" if args.full else "quick"
    print(f"\n{mode} benchmark runs, results in {out_dir or RESULTS_DIR}:")
    print(summary(outcomes))
    return 0 if all(o.returncode == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
