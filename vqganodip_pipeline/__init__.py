"""VQGanoDIP: VQGAN reconstruction, GanoDIP patch localisation and a composite anomaly score
with a zero-false-negative threshold, orchestrated with Dagster."""

__version__ = "0.1.0"
