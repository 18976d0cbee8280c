"""Retry policies and the concurrency pool of the assets.

- I/O-bound steps (reading an inbox folder, which may sit on S3 or a network share) retry on
  transient errors; a step that fails three times fails its run, and the inbox sensor requests
  the batch again once its files change (a corrected batch).
- VQGAN training retries once: an interrupted run resumes from its last checkpoint in the work
  folder (training is resumable bit-exactly), so a retry repeats no finished step.
- Every step that runs torch or a multi-core scikit-learn search claims a slot of the
  ``vqganodip_torch`` pool. Dagster runs at most the pool's limit of them at a time across all
  runs (``concurrency: pools: default_limit`` in ``dagster.yaml``, 1 by default in the instance
  the project writes), so a shift scored while the model retrains does not oversubscribe the
  cores.
"""

import dagster as dg

IO_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)
TRAINING_RETRY = dg.RetryPolicy(max_retries=1, delay=10)
COMPUTE_RETRY = dg.RetryPolicy(max_retries=1, delay=5)
TORCH_POOL = "vqganodip_torch"
