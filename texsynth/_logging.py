"""texsynth's logger: INFO lines go to stderr by default, as Lightning does for its own."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("texsynth")
if not log.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("texsynth: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False
