"""``python -m loadtest.fake_ollama``: run the simulator (see :mod:`loadtest.fake_ollama.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
