"""Process hygiene for the CLI and its worker pools: a SIGTERM stops a run like Ctrl-C (so
checkpoints are written), and workers never outlive the process that started them."""
from __future__ import annotations

import os
import signal
import threading


def cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def sigterm_as_interrupt() -> None:
    """Handle SIGTERM as KeyboardInterrupt: ``with`` blocks flush their checkpoints on the way out."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def die_with_parent() -> None:
    """Called in a worker: end it when its parent ends, even by ``kill -9`` (a pool worker
    would otherwise finish its queue for seconds, holding memory and the files it writes)."""
    import multiprocessing

    started_by = multiprocessing.parent_process()
    parent = started_by.pid if started_by is not None else os.getppid()
    try:  # Linux: the kernel signals the worker the moment the parent dies
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)

    def watch():  # elsewhere, or if prctl failed: notice the re-parenting within a second
        import time

        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()
