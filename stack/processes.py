"""Supervised child processes: each logs to a file, is ready-checked before the next one
starts, is recorded in a pid file, and is stopped with its whole process group."""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """A problem starting the stack, worded for the person running it."""


# Ports for servers started on the fly are taken below the kernel's ephemeral range: an
# outgoing connection or another port-0 bind takes its port there, so a port chosen here
# cannot be taken by one in the moment before its server binds it.
_SPARE_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the ephemeral range, and not handed out
    before by this process."""
    for _ in range(1000):
        port = secrets.choice(_SPARE_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise StackError(f"no free port between {_SPARE_PORTS.start} and {_SPARE_PORTS.stop - 1}")


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the launcher dies, so nothing is left orphaned."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    state_dir: Path
    ports: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 60.0
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "pids" / f"{self.name}.pid"

    def stop_leftover(self) -> bool:
        """Stop this service's process from an earlier run that was not shut down."""
        if not self.pid_path.exists():
            return False
        pid = int(self.pid_path.read_text().strip() or 0)
        self.pid_path.unlink()
        # Only a process still running our exact command line is ours (pids get reused).
        if pid <= 0 or not _alive(pid) or _cmdline(pid) != self.argv:
            return False
        _terminate_group(pid)
        return True

    def start(self) -> None:
        for port in self.ports:
            if port_open(self.host, port):
                raise StackError(
                    f"{self.name}: port {port} on {self.host} is already in use by another "
                    f"program. Stop it, or choose other ports (see `python starter.py up --help`)."
                )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting {self.name}\n".encode())
        log.flush()
        self._process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.pid_path.write_text(str(self._process.pid))
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {self._process.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(0.25)
        self.stop()
        raise StackError(
            f"{self.name} was not ready after {self.ready_timeout:.0f}s; last lines of "
            f"{self.log_path}:\n{self.log_tail()}"
        )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            _terminate_group(self._process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)
        self._process = None
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _terminate_group(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
