"""Progress lines ("clustered 1,035 faces…"): one logger, shown bare in a terminal and hidden by
``-q``, whichever entry point (the command line, a served dashboard) writes them."""
from __future__ import annotations

import logging

log = logging.getLogger("crowdsort.progress")


def show_progress(quiet: bool = False) -> None:
    """Progress lines to stderr as they are (no level, no logger name), unless ``quiet``. Replaces
    the handler a call before made: the command line's main runs more than once in a process
    (tests, notebooks)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)
