"""Two workers on one Temporal: the one running a case is killed (SIGKILL) in the middle of
containment, and another, a `quench worker` process of its own started after the kill (so
nothing but it can have finished the case), takes the case over and finishes it."""

import asyncio
import os
import signal
import sys
import time

import pytest

from models.case import Phase
from stack.embedded import EmbeddedStack
from stack.processes import ManagedProcess
from tests.e2e.support import lab_stack_config, open_lab_case, wait_for, wait_for_phase

pytestmark = pytest.mark.e2e

# The whole case runs on its own: no approval to wait for, a short watch.
UNATTENDED = {
    "QUENCH_NO_APPROVAL_ACTIONS": '["contain", "eradicate", "recover"]',
    "QUENCH_WATCH_SECONDS": "3",
    "QUENCH_CHECK_EVERY_SECONDS": "1",
    "QUENCH_DELIVERY_LAG_SECONDS": "0",
}
# Containment under way: the instance's stop and start take seconds in the lab.
UNDER_WAY = {Phase.CONTAINMENT, Phase.VERIFICATION}


@pytest.fixture
def two_workers(tmp_path):
    """The lab stack unsupervised (a killed worker stays dead), and the workers that take
    over, as compose runs them: one for each task queue, not started yet."""
    config = lab_stack_config(tmp_path / "state")
    config.extra_env.update(UNATTENDED)
    config.supervise = False
    stack = EmbeddedStack(config)
    stack.start()
    replacements = [_worker(stack, queue) for queue in ("cases", "scans")]
    try:
        yield stack, replacements
    finally:
        for process in replacements:
            process.stop()
        stack.stop()


def _worker(stack: EmbeddedStack, queue: str) -> ManagedProcess:
    process = ManagedProcess(
        f"worker-{queue}",
        [sys.executable, "-m", "starter", "worker", "--queue", queue],
        ready=lambda: b"worker polling" in process.log_since_start(),
        state_dir=stack.state_dir,
        env=stack.child_env(),
    )
    return process


async def test_a_case_whose_worker_is_killed_finishes_on_the_other(two_workers) -> None:
    stack, replacements = two_workers
    (first,) = [p for p in stack.processes if p.name == "worker"]
    # The case opens and, with nothing to approve, goes straight on to containment.
    _, handle, _ = await open_lab_case(stack, "ec2-role", wait_for_approval=False)
    await wait_for(handle, lambda status: status.phase in UNDER_WAY)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    await asyncio.to_thread(_wait_dead, first)
    for process in replacements:
        await asyncio.to_thread(process.start)

    status = await wait_for_phase(handle, Phase.CLOSED)
    assert status.outcome is not None and status.outcome.startswith("contained"), status.outcome
    assert status.open_items == []
    assert all(process.running for process in replacements)
    # Each served its own queue: the round's CloudTrail reads and the investigation ran on
    # the scans worker.
    cases, scans = (process.log_since_start() for process in replacements)
    assert b"worker polling quench-cases on" in cases
    assert b"worker polling quench-scans on" in scans
    assert status.eradication and status.investigation is not None


def _wait_dead(process: ManagedProcess) -> None:
    while process.exit_code() is None:
        time.sleep(0.1)
