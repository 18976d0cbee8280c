"""Progress of a step over a batch of images: done / total, images per second and time left,
logged at most every ``every_s`` seconds (and once at the end), so a shift of 1,000 images shows
where it is in the run log without flooding it."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throughput:
    """Counts images done out of ``total`` and reports through ``log``.

    ``clock`` is the time source in seconds (``time.monotonic``; a test passes its own).
    """

    def __init__(
        self,
        what: str,
        total: int,
        log: Callable[[str], None],
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total < 0 or every_s < 0:
            raise ValueError(f"total and every_s must be >= 0, got {total}, {every_s}")
        self.what, self.total, self.log, self.every_s, self.clock = what, total, log, every_s, clock
        self.done = 0
        self.started = clock()
        self._last_report = self.started

    @property
    def seconds(self) -> float:
        return self.clock() - self.started

    @property
    def images_per_second(self) -> float:
        """Images done per second of wall time so far (0 before the first one)."""
        seconds = self.seconds
        return self.done / seconds if seconds > 0 else 0.0

    def line(self) -> str:
        """``what: done/total images (p %), r images/s, about t left`` (``in t`` at the end)."""
        share = self.done / self.total if self.total else 1.0
        rate = self.images_per_second
        if self.done >= self.total:
            tail = f"done in {_duration(self.seconds)}"
        elif rate > 0:
            tail = f"about {_duration((self.total - self.done) / rate)} left"
        else:
            tail = "starting"
        return (
            f"{self.what}: {self.done}/{self.total} images ({share:.0%}), "
            f"{rate:.2f} images/s, {tail}"
        )

    def update(self, n: int) -> None:
        """``n`` more images are done; logs when ``every_s`` passed since the last line, or at
        the end."""
        self.done += n
        now = self.clock()
        if self.done >= self.total or now - self._last_report >= self.every_s:
            self._last_report = now
            self.log(self.line())


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
