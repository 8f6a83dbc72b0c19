"""The supervisor with small real child processes: restarts with backoff, logged with the
exit code and the attempt; a bound on quick failures; the foundation is never restarted."""

import os
import re
import signal
import sys

import pytest

from stack.processes import ManagedProcess
from stack.supervisor import RestartPolicy, Supervisor
from tests.stack.support import alive, wait_for

SERVES = [sys.executable, "-c", "import time; print('serving', flush=True); time.sleep(600)"]
FAILS_AT_ONCE = [sys.executable, "-c", "print('bad settings: QUENCH_X'); raise SystemExit(3)"]
# Short delays so the tests do not wait; nothing below depends on how long anything takes.
QUICK = RestartPolicy(first_delay=0.01, max_delay=0.04, healthy_after=3600, max_attempts=3)


def _child(tmp_path, name: str, argv: list[str]) -> ManagedProcess:
    process = ManagedProcess(name, argv, ready=lambda: False, state_dir=tmp_path)
    process.ready = lambda: b"serving" in process.log_since_start()
    return process


@pytest.fixture
def supervised():
    """Start a Supervisor over spawned processes; stop it and them after the test."""
    started: list[tuple[Supervisor, list[ManagedProcess]]] = []

    def supervise(restarted, foundation=(), policy=QUICK) -> tuple[Supervisor, list[str]]:
        reports: list[str] = []
        for process in [*restarted, *foundation]:
            process.spawn()
        supervisor = Supervisor(restarted, foundation, policy, reports.append, interval=0.01)
        supervisor.start()
        started.append((supervisor, [*restarted, *foundation]))
        return supervisor, reports

    yield supervise
    for supervisor, processes in started:
        supervisor.stop()
        for process in processes:
            process.stop()


def _kill_once_served(process: ManagedProcess, reports: list[str], restarts: int) -> int:
    """SIGKILL the process once it serves (after `restarts` restarts); its pid."""
    if restarts:
        wait_for(lambda: sum("restarted (pid" in r for r in reports) == restarts, "the restart")
    pid = process.pid
    assert pid is not None and alive(pid)
    wait_for(process.ready, "the child to serve")
    os.kill(pid, signal.SIGKILL)
    return pid


def test_backoff_doubles_from_one_second_to_its_cap():
    policy = RestartPolicy()
    assert [policy.delay(attempt) for attempt in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_killed_child_is_restarted_and_each_restart_is_logged(tmp_path, supervised):
    child = _child(tmp_path, "webhook", SERVES)
    supervisor, reports = supervised([child])

    first = _kill_once_served(child, reports, restarts=0)
    second = _kill_once_served(child, reports, restarts=1)
    wait_for(lambda: sum("restarted (pid" in r for r in reports) == 2, "the second restart")

    third = child.pid
    assert third is not None and alive(third) and third not in (first, second)
    assert int(child.pid_path.read_text()) == third
    restarts = [r for r in reports if "restarting" in r]
    assert len(restarts) == 2
    assert re.fullmatch(
        r"webhook exited with code -9 \(SIGKILL\) after running \d+s; "
        r"restarting it in 0\.01s \(attempt 1 of 3\)",
        restarts[0],
    )
    # Killed before it had served an hour: a quick failure, so the backoff grows.
    assert restarts[1].endswith("restarting it in 0.02s (attempt 2 of 3)")
    assert f"webhook restarted (pid {third})" in reports
    log = child.log_path.read_text()
    assert "restarting (attempt 1) webhook" in log and "restarting (attempt 2) webhook" in log
    assert supervisor.failure is None


def test_a_child_that_always_fails_at_once_is_given_up_on_after_the_bound(tmp_path, supervised):
    child = _child(tmp_path, "worker", FAILS_AT_ONCE)
    supervisor, reports = supervised([child])

    failure = wait_for(lambda: supervisor.failure, "the supervisor to give up")

    restarts = [r for r in reports if "restarting it" in r]
    assert [r.split("; ", 1)[1] for r in restarts] == [
        "restarting it in 0.01s (attempt 1 of 3)",
        "restarting it in 0.02s (attempt 2 of 3)",
        "restarting it in 0.04s (attempt 3 of 3)",
    ]
    assert all(r.startswith("worker exited with code 3 after running") for r in restarts)
    assert failure.startswith("giving up on worker: it exited with code 3 after running")
    assert "its last 3 restarts each failed within 3600s" in failure
    assert "bad settings: QUENCH_X" in failure  # the log's last lines say why
    assert reports[-1] == failure
    # Started once and restarted three times; then left alone.
    assert child.log_path.read_text().count("bad settings: QUENCH_X") == 4
    assert child.exit_code() == 3


def test_a_child_that_served_long_enough_starts_the_count_again(tmp_path, supervised):
    # Every run counts as long enough: each failure is the first of a new series.
    policy = RestartPolicy(first_delay=0.01, max_delay=0.04, healthy_after=0, max_attempts=1)
    child = _child(tmp_path, "worker", SERVES)
    supervisor, reports = supervised([child], policy=policy)

    for done in range(3):
        _kill_once_served(child, reports, restarts=done)
    wait_for(lambda: sum("restarted (pid" in r for r in reports) == 3, "the third restart")

    restarts = [r for r in reports if "restarting it" in r]
    assert [r.split("; ", 1)[1] for r in restarts] == 3 * [
        "restarting it in 0.01s (attempt 1 of 1)"
    ]
    assert supervisor.failure is None


def test_a_restart_that_never_becomes_ready_counts_as_a_failure(tmp_path, supervised):
    # Serves on its first run only; restarted, it runs but never says it serves.
    marker = tmp_path / "ran-once"
    once = (
        "import pathlib, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch(); print('serving', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = _child(tmp_path, "webhook", [sys.executable, "-c", once])
    child.ready_timeout = 0.5
    policy = RestartPolicy(first_delay=0.01, max_delay=0.01, healthy_after=3600, max_attempts=1)
    supervisor, reports = supervised([child], policy=policy)

    _kill_once_served(child, reports, restarts=0)
    failure = wait_for(lambda: supervisor.failure, "the supervisor to give up")

    assert failure.startswith("giving up on webhook: it was not ready 0.5s after a restart")
    assert not child.running()  # the one that never became ready was stopped


def test_a_dead_foundation_process_is_not_restarted_and_fails_the_stack(tmp_path, supervised):
    temporal = _child(tmp_path, "temporal", SERVES)
    worker = _child(tmp_path, "worker", SERVES)
    supervisor, reports = supervised([worker], foundation=[temporal])
    wait_for(temporal.ready, "the foundation to serve")
    dead = temporal.pid
    assert dead is not None

    os.kill(dead, signal.SIGKILL)
    failure = wait_for(lambda: supervisor.failure, "the supervisor to fail")

    assert re.match(
        r"temporal exited with code -9 \(SIGKILL\) after running \d+s; the stack cannot run "
        r"without it and stops\. Last lines of \S+temporal\.log:\n",
        failure,
    )
    assert failure.endswith("serving")
    assert not any("restarting" in r for r in reports)
    assert temporal.pid == dead and not temporal.running()
    assert worker.running()  # the stack's owner stops the rest
