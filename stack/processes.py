"""The stack's child processes: each logs to a file, is ready-checked before the next one
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


def _find_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up here, not in the child: between fork and exec a child of a threaded process
# (the supervisor restarts from its own thread) must not load a library.
_PRCTL = _find_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the thread that started it ends (the launcher's
    main thread, or the supervisor's), so nothing is left orphaned."""
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


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
    # Where this run's output starts in the log, and when it was spawned.
    _log_offset: int = 0
    started_at: float = 0.0

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
        """Spawn the process and wait until it is ready."""
        self.spawn()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if (code := self.exit_code()) is not None:
                raise StackError(
                    f"{self.name} exited with code {code} while starting; "
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

    def spawn(self, banner: str = "starting") -> None:
        """Start the process without waiting for it; `banner` heads its output in the log."""
        for port in self.ports:
            if port_open(self.host, port):
                raise StackError(
                    f"{self.name}: port {port} on {self.host} is already in use by another "
                    f"program. Stop it, or choose other ports (see `python starter.py up --help`)."
                )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"\n==== {stamp} {banner} {self.name}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                preexec_fn=_die_with_parent,
            )
        self.started_at = time.monotonic()
        self.pid_path.write_text(str(self._process.pid))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def exit_code(self) -> int | None:
        """The exit code once the process has ended (-N if signal N ended it); None while
        it runs."""
        return self._process.poll() if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_since_start(self) -> bytes:
        """What the process has logged since it was last spawned."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read()
        except OSError:
            return b""

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
