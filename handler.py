"""RunPod's entry point for the serverless worker: ``python handler.py``.

The worker itself is :mod:`server.doors.serverless`, on the same core as the server.
"""

from __future__ import annotations

import sys

from server.doors.serverless import handler, main

__all__ = ["handler", "main"]

if __name__ == "__main__":
    sys.exit(main())
