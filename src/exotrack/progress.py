"""Milestones of long work (tiles of a whole slide, frames of a movie, samples of a batch) in the
log, so that a person following a Snakemake job's log sees how far it is and how long is left."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator

_log = logging.getLogger("exotrack.progress")


def steps(items: Iterable, *, total: int, what: str, parts: int = 10, log: logging.Logger = _log) -> Iterator:
    """Yield ``items``, logging ``what: done/total (pct), elapsed, about N s left`` each time
    another ``1/parts`` of ``total`` is done (and once at the end), at INFO level."""
    start = time.perf_counter()
    marks = {math.ceil(total * k / parts) for k in range(1, parts + 1)} if total > 0 else set()
    done = 0
    for item in items:
        yield item
        done += 1
        if done in marks:
            elapsed = time.perf_counter() - start
            left = elapsed / done * (total - done)
            log.info("%s: %d/%d (%.0f%%), %.1f s, about %.0f s left", what, done, total, 100 * done / total,
                     elapsed, left)
