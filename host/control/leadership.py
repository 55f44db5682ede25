"""Who may control the site: one injected object that acquires leadership, renews it
every tick, and says when it is lost. The only implementation now is a local lock (one
host: an exclusive lock on a file beside the store, held for the process's life). A pair
of hosts elected through an existing engine (etcd, Consul, ZooKeeper leases) plugs in
here with the same three calls.

Leadership is the host's side of fencing: the taps' side is the controller epoch. A
controller that acquires raises the epoch on every tap (SPEC.md, "Controller epoch"),
so a controller that lost leadership, or never had it, is refused by the taps even if
it keeps trying.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Protocol


class Leadership(Protocol):
    def acquire(self) -> bool:
        """Become the leader; False when another holds it."""

    def renew(self) -> bool:
        """Still the leader? Called every tick; False once lost."""

    def release(self) -> None: ...


class LocalLock:
    """Leadership as an exclusive lock on `path` (flock): held until release or exit, so a
    controller killed with SIGKILL frees it at once. Only processes of one host contend."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def renew(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        """The pid written by whoever holds the lock (for the refusal's message)."""
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"


class SoleController:
    """No contest: the site simulator, where this process is the only controller."""

    def acquire(self) -> bool:
        return True

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        return None
