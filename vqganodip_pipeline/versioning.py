"""Code versions derived from source text, so that Dagster marks an asset stale exactly when the
library code behind it changes (and a checkpoint records the code that trained it)."""

from __future__ import annotations

import hashlib
import inspect
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
