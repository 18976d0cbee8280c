"""Source hashes of the package's import closures (what the assets' code versions are made of,
see defs/versions.py), and the versions and machine facts a result records."""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import platform
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path


def library_versions(names: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the core libraries (and ``names``), plus Python and the platform."""
    wanted = (
        "vqganodip-pipeline",
        "torch",
        "numpy",
        "pandas",
        "scikit-learn",
        "scikit-image",
        "opencv-python-headless",  # ORB keypoints (metrics/keypoints.py)
        "scipy",
        "dagster",
        *names,
    )
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in wanted:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict[str, object]:
    """What a timing was measured on: platform, CPU, memory, load, accelerator, library
    versions. The load average matters on shared machines: timings compare only within a run."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gib"] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["cuda"] = None
    info["versions"] = library_versions(("scipy", "pyarrow", "xgboost", "lightgbm"))
    return info


PACKAGE = "vqganodip_pipeline"


PACKAGE_ROOT = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` of this package (found without importing it)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(name: str, source: str) -> set[str]:
    """The modules of this package that the source of module ``name`` imports (statically,
    wherever the import statement is: top level or inside a function)."""
    return set(_imported_modules(name, source))


@functools.lru_cache(maxsize=1024)
def _imported_modules(name: str, source: str) -> frozenset[str]:
    # keyed by the text itself: a changed source is parsed again
    path = _module_file(name)
    is_package = path is not None and path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.add(origin)
            # "from package import module" imports the module too
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if m.split(".")[0] == PACKAGE and _module_file(m) is not None)


def module_source(name: str, sources: Mapping[str, str] | None = None) -> str:
    """The source text of module ``name`` of the package (``sources`` overrides it)."""
    if sources and name in sources:
        return sources[name]
    path = _module_file(name)
    if path is None:
        raise ValueError(f"{name}: not a module of {PACKAGE}")
    return path.read_text(encoding="utf-8")


def module_closure(
    names: Iterable[str], sources: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``{module: source}`` of ``names`` and every module of the package they import,
    transitively. ``sources`` replaces the source text of some modules (what-if versions)."""
    sources = sources or {}
    todo, seen = list(names), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        text = module_source(name, sources)
        seen[name] = text
        todo.extend(imported_modules(name, text) - seen.keys())
    return seen


def closure_hash(names: Iterable[str], sources: Mapping[str, str] | None = None) -> str:
    """SHA-256 (12 hex characters) of the sources of :func:`module_closure`, name-sorted."""
    digest = hashlib.sha256()
    for name, text in sorted(module_closure(names, sources).items()):
        digest.update(name.encode())
        digest.update(b"\x00")
        digest.update(text.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:12]
