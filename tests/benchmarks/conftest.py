"""Put the repository root on ``sys.path`` so the tests import the ``benchmarks`` package
wherever pytest is started from."""

from __future__ import annotations

import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))
