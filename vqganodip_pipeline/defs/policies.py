"""Retry policies and the concurrency pool of the assets.

- I/O-bound steps (reading an inbox folder, which may sit on S3 or a network share) retry on
  transient errors; a step that fails three times fails its run, and the inbox sensor requests
  the batch again once its files change (a corrected batch).
- VQGAN training retries once: an interrupted run resumes from its last checkpoint in the work
  folder (training is resumable bit-exactly), so a retry repeats no finished step.
- A retried step is not retried when it was interrupted (SIGINT, SIGTERM, a run cancelled in the
  UI): Dagster's retry policies restart interrupted steps too, so a cancelled training or search
  went on in the same process; :func:`stops_on_interrupt` turns the interrupt into a failure
  that is not retried.
- Every step that runs torch or a multi-core scikit-learn search claims a slot of the
  ``vqganodip_torch`` pool. Dagster runs at most the pool's limit of them at a time across all
  runs (``concurrency: pools: default_limit`` in ``dagster.yaml``, 1 by default in the instance
  the project writes), so a shift scored while the model retrains does not oversubscribe the
  cores.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError

INTERRUPTED = "interrupted (SIGINT, SIGTERM or a cancelled run): the step stopped, not retried"
F = TypeVar("F", bound=Callable[..., Any])

IO_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)
TRAINING_RETRY = dg.RetryPolicy(max_retries=1, delay=10)
COMPUTE_RETRY = dg.RetryPolicy(max_retries=1, delay=5)
TORCH_POOL = "vqganodip_torch"


def stops_on_interrupt(fn: F) -> F:
    """``fn`` (an asset's compute function, plain or generator) with interrupts raised as a
    :class:`dagster.Failure` that its retry policy does not retry."""

    def stopped() -> dg.Failure:
        return dg.Failure(INTERRUPTED, metadata={"interrupted": True}, allow_retries=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except (DagsterExecutionInterruptedError, KeyboardInterrupt) as error:
                raise stopped() from error

        generator.stops_on_interrupt = True  # type: ignore[attr-defined]
        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DagsterExecutionInterruptedError, KeyboardInterrupt) as error:
            raise stopped() from error

    plain.stops_on_interrupt = True  # type: ignore[attr-defined]
    return plain  # type: ignore[return-value]
