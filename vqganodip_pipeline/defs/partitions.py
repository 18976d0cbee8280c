"""Production batches: one dynamic partition per batch folder of the inbox."""

import dagster as dg

batch_partitions = dg.DynamicPartitionsDefinition(name="batches")
