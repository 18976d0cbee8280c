"""The persistent Dagster instance folder the demo and ``evaluate --dagster-home`` run in."""

from pathlib import Path


def prepare_instance_home(path: str | Path) -> Path:
    """Create ``path`` as a DAGSTER_HOME; a new one gets a ``dagster.yaml`` that switches
    telemetry off (offline-first: no usage statistics leave the machine unless the user opts
    in). An existing ``dagster.yaml`` is left as it is."""
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return home
