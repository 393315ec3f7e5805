"""Logging for the server and the RunPod worker: plain lines, and JSON lines for records."""

from __future__ import annotations

import logging

from ..config import Config

__all__ = ["setup_logging"]


def setup_logging(config: Config) -> None:
    """Log at the configured level; turn and webhook records as bare JSON lines.

    ``server.turn`` (and its children) carry one JSON object per line, ready for a
    log pipeline; everything else is ``time level name: message``.
    """
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per control request
    records = logging.getLogger("server.turn")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    records.addHandler(handler)
    records.propagate = False
