"""One running stack per state directory: `up` holds an OS lock on a file in it.

A pid file alone cannot tell a live holder from a dead one whose pid was reused. The
kernel drops an flock when the last descriptor on it closes, which also happens when
the holder dies however it dies (kill -9 too), so a stale lock never blocks the next `up`.
"""

import contextlib
import fcntl
import os
import time
from pathlib import Path

from stack.processes import StackError

LOCK_FILE = "up.lock"


class StateDirInUseError(StackError):
    """Another process runs a stack on this state directory."""


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once, or raise StateDirInUseError naming the holder's pid."""
        if self._fd is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: the file holds the holder's pid, which a refused opener must not erase.
        # os.open's descriptors are not inherited, so no child of the stack holds the lock
        # after the process that took it has died.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            raise StateDirInUseError(
                f"{self.state_dir} is in use by another `up` (pid {holder or 'unknown'}); "
                f"stop that one first, or give this one its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # The file stays: removing it would let a second opener lock a new file while a
        # third still holds the old one. An empty file says no one holds it.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


def _holder_pid(fd: int) -> int | None:
    """The pid the holder wrote; it writes it just after taking the lock, so a refusal in
    that moment waits a little for it."""
    deadline = time.monotonic() + 1.0
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
