"""`python starter.py up` as a person runs it, with the lab: a worker or webhook killed with
SIGKILL is restarted and serves; a second `up` on the same state directory is refused and
harms nothing; an `up` killed with -9 does not block the next one."""

import asyncio
import copy
import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config import names
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab.attack import AttackReport
from lab.guardduty import eventbridge_event
from lab.scenario import CASE_FILE, LabCase, send_finding
from stack.processes import free_port
from tests.stack.support import alive, wait_for
from workflows.case import CaseWorkflow

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
UP_LINE = "The stack is up."
PROCESSES = ("temporal", "lab-aws", "worker", "webhook")


@dataclass
class Up:
    """A running `starter.py up`: its options, and what it has printed."""

    process: subprocess.Popen[bytes]
    state_dir: Path
    options: list[str]
    webhook_port: int
    temporal_port: int
    output_path: Path

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def pid(self, name: str) -> int:
        return int((self.state_dir / "pids" / f"{name}.pid").read_text())

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    def starter(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Another Quench command line on this stack's state directory and ports."""
        return subprocess.run(
            [sys.executable, "starter.py", *args, *self.options],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        """As a service manager stops it: SIGTERM, and `up` stops its stack."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=180)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stack_options(state_dir: Path) -> tuple[list[str], int, int]:
    webhook_port, temporal_port = free_port(), free_port()
    options = [
        "--state-dir",
        str(state_dir),
        "--temporal-port",
        str(temporal_port),
        "--ui-port",
        str(free_port()),
        "--lab-aws-port",
        str(free_port()),
        "--webhook-port",
        str(webhook_port),
    ]
    return options, webhook_port, temporal_port


def start_up(state_dir: Path, options: list[str], webhook_port: int, temporal_port: int) -> Up:
    """`starter.py up` with the lab, once it says the stack is up (its scenario's case
    waits for an approval by then)."""
    output_path = state_dir.parent / f"{state_dir.name}-up-{uuid.uuid4().hex[:8]}.out"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "starter.py", "up", *options],
            cwd=PROJECT_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    up = Up(process, state_dir, options, webhook_port, temporal_port, output_path)
    try:
        wait_for(lambda: UP_LINE in up.output() or process.poll() is not None, "`up`", timeout=600)
    except BaseException:
        up.stop()
        raise
    if UP_LINE not in up.output():
        up.stop()
        pytest.fail(f"`up` exited with {process.returncode}:\n{up.output()}")
    return up


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("up") / "state"
    options, webhook_port, temporal_port = stack_options(state_dir)
    running = start_up(state_dir, options, webhook_port, temporal_port)
    yield running
    running.stop()


def _kill_and_wait_for_restart(up: Up, name: str) -> tuple[int, int]:
    """SIGKILL one of the stack's processes; its old and new pids once it serves again."""
    old = up.pid(name)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: f"{name} restarted (pid" in up.output(), f"{name} to be restarted")
    new = up.pid(name)
    return old, new


def test_a_killed_worker_is_restarted_and_a_new_case_gets_to_its_first_approval(up):
    old, new = _kill_and_wait_for_restart(up, "worker")

    assert new != old and alive(new) and not alive(old)
    assert re.search(
        r"worker exited with code -9 \(SIGKILL\) after running \d+s; restarting it in 1s "
        r"\(attempt 1 of 7\)",
        up.output(),
    )
    assert f"worker restarted (pid {new})" in up.output()
    # A case opened after the kill: only a worker runs it to an action awaiting approval.
    lab = up.starter("lab", "user-key")
    assert lab.returncode == 0, lab.stdout + lab.stderr
    assert "waiting for approval of contain-key-" in lab.stdout
    assert up.process.poll() is None


async def test_a_killed_webhook_is_restarted_and_takes_a_new_finding(up):
    old, new = _kill_and_wait_for_restart(up, "webhook")

    assert new != old and alive(new) and not alive(old)
    assert re.search(
        r"webhook exited with code -9 \(SIGKILL\) after running \d+s; restarting it in 1s "
        r"\(attempt 1 of 7\)",
        up.output(),
    )
    # GuardDuty's finding for another stolen session key of the lab's instance role, sent
    # after the kill: the restarted webhook hands it to a new case.
    lab_case = LabCase[AttackReport].model_validate_json((up.state_dir / CASE_FILE).read_text())
    detail = copy.deepcopy(lab_case.attack.finding)
    other_key = "ASIA" + uuid.uuid4().hex[:16].upper()
    detail["id"] = uuid.uuid4().hex
    detail["resource"]["accessKeyDetails"]["accessKeyId"] = other_key
    settings = Settings(lab=True, temporal_address=up.temporal_address)
    case_id = await asyncio.to_thread(
        send_finding,
        up.webhook_url,
        LAB_WEBHOOK_TOKEN,
        settings.webhook_token_header,
        eventbridge_event(detail),
    )
    assert case_id == names.case_workflow_id(lab_case.world.account_id, other_key)
    assert case_id != lab_case.case_id
    client = await connect(settings)
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
    async with asyncio.timeout(300):
        status = await handle.query(CaseWorkflow.status)
        while not status.pending_actions():
            await asyncio.sleep(0.5)
            status = await handle.query(CaseWorkflow.status)
    assert up.process.poll() is None


def test_report_and_lab_find_the_stack_by_its_state_dir_alone(up):
    """`up` ran on ports of its own: `report --lab` and `lab` given only --state-dir reach
    it (its case has no report yet, and its scenario ran already)."""
    case = LabCase[AttackReport].model_validate_json((up.state_dir / CASE_FILE).read_text())

    def starter(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "starter.py", *args, "--state-dir", str(up.state_dir)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    report = starter("report", case.case_id, "--lab")
    assert report.returncode == 1, report.stdout + report.stderr
    assert report.stderr.startswith(f"error: {case.case_id} has no report yet (phase ")
    lab = starter("lab", "ec2-role")
    assert lab.returncode == 0, lab.stdout + lab.stderr
    assert "(run before: not run again)" in lab.stdout
    assert f"Case {case.case_id}: phase " in lab.stdout


def test_a_second_up_on_the_same_state_dir_is_refused_and_harms_nothing(up):
    pids = {name: up.pid(name) for name in PROCESSES}
    printed = up.output()

    second = up.starter("up", timeout=120)

    assert second.returncode == 1, second.stdout + second.stderr
    holder = f"{up.state_dir.resolve()} is in use by another `up` (pid {up.process.pid})"
    assert f"error: {holder}" in second.stdout
    assert "Stopping the stack" not in second.stdout
    # The first stack: the same processes, all alive, serving, and nothing to report.
    assert {name: up.pid(name) for name in PROCESSES} == pids
    assert all(alive(pid) for pid in pids.values())
    assert httpx.get(f"{up.webhook_url}/readyz", timeout=10).status_code == 200
    assert up.process.poll() is None
    assert up.output() == printed


def test_an_up_killed_with_minus_9_does_not_block_the_next(tmp_path):
    state_dir = tmp_path / "state"
    options, webhook_port, temporal_port = stack_options(state_dir)
    first = start_up(state_dir, options, webhook_port, temporal_port)
    first_pids = {name: first.pid(name) for name in PROCESSES}
    first.process.kill()
    first.process.wait()

    second = start_up(state_dir, options, webhook_port, temporal_port)
    try:
        assert "in use by another" not in second.output()
        # It resumes: nothing run again, the lab told as its AWS is now, and every case
        # with where it stands.
        case = LabCase[AttackReport].model_validate_json((state_dir / CASE_FILE).read_text())
        attack, printed = case.attack, second.output()
        assert "Lab: resumed; no scenario is run again" in printed
        assert "CloudTrail records delivered" not in printed  # the attack's report, dated
        assert (
            f"    now: stolen key {attack.stolen_access_key_id}: sessions of web-app-role not "
            f"revoked yet; what the attacker made: user {attack.backdoor_user}, "
        ) in printed
        assert "Cases on this stack: 1\n" in printed
        assert f"Case {case.case_id}: phase awaiting_approval; 0 open items\n" in printed
        assert "  waiting for approval of contain-1: " in printed
        assert f"QUENCH_TEMPORAL_ADDRESS=127.0.0.1:{temporal_port} " in printed
        assert second.process.poll() is None
        # The first stack's processes went with it; the second runs its own.
        assert not any(alive(pid) for pid in first_pids.values())
        assert all(alive(second.pid(name)) for name in PROCESSES)
        assert (state_dir / "up.lock").read_text().strip() == str(second.process.pid)
    finally:
        second.stop()
    assert second.process.returncode == 0, second.output()
