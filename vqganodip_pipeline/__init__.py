"""VQGanoDIP: VQGAN reconstruction, GanoDIP patch localisation and a composite anomaly score
with a zero-false-negative threshold, orchestrated with Dagster."""

import os

# OpenMP worker threads that spin while waiting made PyTorch up to 45x slower whenever another
# process shared the cores (measured: 40 tiny training steps 320 s instead of 7-12 s on 2 cores
# next to a scikit-learn search). Passive waiting costs little when the machine is idle. It only
# takes effect if set before torch is first imported; users can still override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
