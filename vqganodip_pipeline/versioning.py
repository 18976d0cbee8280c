"""Code versions derived from source text, so that Dagster marks an asset stale exactly when the
library code behind it changes (and a checkpoint records the code that trained it)."""

from __future__ import annotations

import hashlib
import inspect
import os
import platform
from importlib import metadata
from types import ModuleType

from vqganodip_pipeline import __version__


def source_hash(*modules: ModuleType) -> str:
    """SHA-256 of the source of ``modules`` (order-independent), 12 hex characters."""
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:12]


def code_version(*modules: ModuleType) -> str:
    """``<package version>-<source hash>``, e.g. ``0.1.0-3fa9c2d1e0b4``."""
    return f"{__version__}-{source_hash(*modules)}"


def library_versions(names: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the core libraries (and ``names``), plus Python and the platform."""
    wanted = (
        "vqganodip-pipeline",
        "torch",
        "numpy",
        "pandas",
        "scikit-learn",
        "scikit-image",
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
