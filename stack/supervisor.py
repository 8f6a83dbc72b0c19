"""Keeps a running stack running: restarts a process that dies, with backoff, and gives up
plainly after too many quick failures in a row."""

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stack.processes import ManagedProcess, StackError

log = logging.getLogger("quench.stack")


@dataclass(frozen=True)
class RestartPolicy:
    """Restart after 1 s, 2 s, 4 s ..., at most `max_delay` apart. A process that served
    for `healthy_after` seconds before it died starts the count again; after
    `max_attempts` restarts in a row that each failed sooner, the supervisor gives up."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    healthy_after: float = 60.0
    max_attempts: int = 7

    def delay(self, attempt: int) -> float:
        return float(min(self.first_delay * 2 ** (attempt - 1), self.max_delay))


@dataclass
class _Watched:
    process: ManagedProcess
    restart: bool
    attempt: int = 0  # restarts in a row, each after a quick failure
    restart_at: float | None = None  # dead, waiting out its backoff
    ready_by: float | None = None  # restarted, not ready yet


class Supervisor:
    """Watches already-started processes from a thread of its own, from start() to stop().

    `restarted` processes are restarted when they die; the death of a `foundation`
    process is a failure at once. Either way the failure, a message for the person
    running the stack, is reported and kept in `failure`, and the supervisor stops.
    """

    def __init__(
        self,
        restarted: Sequence[ManagedProcess],
        foundation: Sequence[ManagedProcess] = (),
        policy: RestartPolicy | None = None,
        report: Callable[[str], None] | None = None,
        interval: float = 0.25,
    ) -> None:
        # The foundation first: when it dies, the others die of it; that is no news.
        self._watched = [_Watched(p, restart=False) for p in foundation]
        self._watched += [_Watched(p, restart=True) for p in restarted]
        self.policy = policy or RestartPolicy()
        self.report = report or log.warning
        self.interval = interval
        self.failure: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The thread lives until stop(): a child gets SIGTERM when the thread that
        # started it ends (PR_SET_PDEATHSIG), so restarted processes die with it.
        self._thread = threading.Thread(target=self._run, name="stack-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while self.failure is None and not self._stopping.wait(self.interval):
            try:
                self.check()
            except Exception as exc:
                # Said plainly rather than lost with the thread (whose end would take the
                # processes it restarted with it).
                self._fail(f"supervising the stack failed: {exc!r}")

    def check(self) -> None:
        """One look at every process: note deaths, restart what is due, see restarted
        ones become ready."""
        for watched in self._watched:
            if self.failure is not None:
                return
            self._check(watched, time.monotonic())

    def _check(self, watched: _Watched, now: float) -> None:
        process = watched.process
        if watched.restart_at is not None:
            if now >= watched.restart_at:
                self._restart(watched, now)
            return
        code = process.exit_code()
        if code is None:
            if watched.ready_by is None:
                return
            if process.ready():
                watched.ready_by = None
                self.report(f"{process.name} restarted (pid {process.pid})")
            elif now > watched.ready_by:
                process.stop()
                self._failed(watched, f"was not ready {process.ready_timeout:g}s after a restart")
            return
        ran = now - process.started_at
        served = watched.ready_by is None
        self._failed(
            watched,
            f"{_exit_text(code)} after running {ran:.0f}s",
            healthy=served and ran >= self.policy.healthy_after,
        )

    def _failed(self, watched: _Watched, what: str, healthy: bool = False) -> None:
        process, policy = watched.process, self.policy
        watched.ready_by = None
        if not watched.restart:
            self._fail(
                f"{process.name} {what}; the stack cannot run without it and stops. "
                f"Last lines of {process.log_path}:\n{process.log_tail()}"
            )
            return
        watched.attempt = 1 if healthy else watched.attempt + 1
        if watched.attempt > policy.max_attempts:
            self._fail(
                f"giving up on {process.name}: it {what}, and its last {policy.max_attempts} "
                f"restarts each failed within {policy.healthy_after:g}s. Last lines of "
                f"{process.log_path}:\n{process.log_tail()}"
            )
            return
        delay = policy.delay(watched.attempt)
        watched.restart_at = time.monotonic() + delay
        self.report(
            f"{process.name} {what}; restarting it in {delay:g}s "
            f"(attempt {watched.attempt} of {policy.max_attempts})"
        )

    def _restart(self, watched: _Watched, now: float) -> None:
        watched.restart_at = None
        process = watched.process
        try:
            process.spawn(banner=f"restarting (attempt {watched.attempt})")
        except (StackError, OSError) as exc:
            self._failed(watched, f"could not be restarted: {exc}")
            return
        watched.ready_by = now + process.ready_timeout

    def _fail(self, message: str) -> None:
        self.failure = message
        self.report(message)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"exited with code {code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"exited with code {code}"
    return f"exited with code {code}"
