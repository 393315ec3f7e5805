"""Garbage-collector pauses: keep them short, and show how long they are.

A collection stops the event loop, so every call streaming at that moment falls
silent for its length. CPython's full collection walks every tracked object, and a
started server holds tens of thousands that live for ever (modules, classes, pydantic
schemas): measured here, 50 to 100 ms per full collection, which churn (cancelled turns,
failing streams) brought on every 15 s or so. :func:`freeze_startup` moves those objects
out of the collector's sight once startup is done (``gc.freeze``), so a collection
walks only what serving created. :func:`watch` times each collection, for
``voice_llm_gc_pause_seconds``.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from ..core.stats import Histogram

__all__ = ["PAUSES", "freeze_startup", "watch"]

_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

# One histogram per generation, filled once :func:`watch` is called.
PAUSES: tuple[Histogram, ...] = tuple(Histogram(_BOUNDS) for _ in range(3))
_started = 0.0


def _observe(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
    else:
        PAUSES[info["generation"]].observe(time.perf_counter() - _started)


def watch() -> None:
    """Time every collection from now on into :data:`PAUSES` (once per process)."""
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)


def freeze_startup() -> None:
    """Collect once, then exempt every object alive now from later collections.

    Call when startup is complete (modules imported, the application built): what
    exists then lives as long as the process. Garbage is collected first, so none of
    it is kept for ever.
    """
    gc.collect()
    gc.freeze()
