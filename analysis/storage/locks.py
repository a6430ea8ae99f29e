"""One writer per dataset: a lock file that names its holder and dies with it.

The lock is an ``fcntl`` lock on ``D/.crowdsort.lock``: the kernel releases it when the
holding process ends, however it ends (``kill -9`` included), so a lock left by a crash is
never mistaken for a live one. The file's text says who holds it, for the refusal message.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".crowdsort.lock"


class DatasetBusyError(RuntimeError):
    """Another crowdsort process writes this dataset now."""


class DatasetLock:
    """``with DatasetLock(dataset, "extract-faces"):`` — refused at once if another process holds it."""

    def __init__(self, dataset: str | os.PathLike, command: str):
        self.path = Path(dataset) / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> "DatasetLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DatasetBusyError(
                f"{self.path.parent} is in use by {holder}; wait for it to finish (two runs on one dataset "
                "would overwrite each other's tables)") from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                     "argv": sys.argv[1:], "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        except OSError:  # a full disk: the lock holds all the same, only the holder's name for a refusal is lost
            pass
        return self

    def release(self) -> None:
        if self._fd is not None:
            # The file stays: removing it would let a third process lock a fresh inode while a
            # second one still waits on the old one.
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DatasetLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another crowdsort process"
    return (f"crowdsort {info.get('command', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"since {info.get('since', '?')})")
