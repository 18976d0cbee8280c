"""Two dynamic partition sets, one per kind of batch folder in the inbox.

- ``reference_batches``: labelled data the model side learns from (MVTec / DeepPCB / normal-abnormal
  folders, or a shift whose operator-confirmed ``labels.csv`` arrived later). A new one stales the
  model side only.
- ``shifts``: production batches to score. A new one stales (and, with automation on, runs) its
  own batch chain only.

A shift promoted to reference data keeps its shift partition: the same folder name is then a key
of both sets.
"""

import dagster as dg

reference_partitions = dg.DynamicPartitionsDefinition(name="reference_batches")
shift_partitions = dg.DynamicPartitionsDefinition(name="shifts")
