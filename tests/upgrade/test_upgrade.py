"""Upgrading Quench while cases are open: a case opened by the previous release's worker,
waiting on a person, is finished by this version's worker after the old one is killed.
Cases wait on people for hours or days, so this is how every release is deployed (README,
"Upgrading with cases open"): the new worker replays the old history to the letter (the
patches in workflows/case/patches.py keep it so) and goes on from there.

The previous release is the commit in PREVIOUS_RELEASE, taken from git: moved on purpose
when a release is cut."""

import asyncio
import base64
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker

from codec.aesgcm import AesGcmCodec, encrypting_data_converter, generate_key_entry
from models.case import ApprovalInput, Phase
from tests.upgrade.old_worker import attacked_aws
from worker import WORKFLOWS
from workflows.case import CaseWorkflow

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """The previous release's source tree, from git."""
    commit = (HERE / "PREVIOUS_RELEASE").read_text().strip()
    if not _known(commit):
        # A shallow clone: fetch just that commit from where the clone came from.
        subprocess.run(
            ["git", "-C", str(ROOT), "fetch", "--quiet", "--depth=1", "origin", commit],
            check=False,
        )
    assert _known(commit), (
        f"the previous release {commit} is not in this clone's history (a shallow clone?): "
        "fetch it (git fetch --unshallow) to test the upgrade from it"
    )
    tree = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
        check=True,
        capture_output=True,
    ).stdout
    archive_path = tree / "release.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _known(commit: str) -> bool:
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
        check=False,
        capture_output=True,
    )
    return found.returncode == 0


async def test_a_case_opened_by_the_previous_release_finishes_on_this_one(
    dev_server_env, previous_release, tmp_path
):
    address = dev_server_env.client.service_client.config.target_host
    queue = f"upgrade-{uuid.uuid4()}"
    log = tmp_path / "old-worker.log"
    with log.open("wb") as out:
        old = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "old_worker.py"), "--address", address,
            "--task-queue", queue, "--start",
            cwd=previous_release,
            env={**os.environ, "PYTHONPATH": str(previous_release)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            case_id = await _case_opened(old, log)
        finally:
            # As a deployment replaces a worker: it is gone, mid-case.
            old.kill()
            await old.wait()
    # This release encrypts what it writes: the old history in clear, the new in ciphertext.
    key_id, key = generate_key_entry("upgrade")
    client = type(dev_server_env.client)(
        dev_server_env.client.service_client,
        namespace=dev_server_env.client.namespace,
        data_converter=encrypting_data_converter(
            AesGcmCodec({key_id: base64.b64decode(key)}, key_id)
        ),
    )
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)

    async with Worker(
        client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=attacked_aws().activities(),
    ):
        status = await _approve_until_closed(handle)

    assert status.phase is Phase.CLOSED
    # Contained; the attack's federated session is one Quench can only flag (as in any case).
    assert status.outcome is not None, status
    assert status.outcome.startswith(("contained", "partly contained: contained")), status.outcome
    # The old history replayed on the new code without a workflow task failing.
    history = await handle.fetch_history()
    failed = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert failed == []
    # The case goes on numbering its actions as the release that opened it did, across
    # kinds (contain-1, then eradicate-2...), not as new cases do (eradicate-1).
    numbers = [int(a.id.rsplit("-", 1)[1]) for a in status.actions]
    assert len(numbers) >= 2, [a.id for a in status.actions]
    assert numbers == list(range(1, len(numbers) + 1)), [a.id for a in status.actions]
    # What the new worker wrote is encrypted; what the old one wrote still reads.
    encodings = {
        p.metadata["encoding"]
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        for p in e.activity_task_scheduled_event_attributes.input.payloads
    }
    assert encodings == {b"json/plain", b"binary/encrypted"}


async def _case_opened(old: asyncio.subprocess.Process, log: Path) -> str:
    """The case id the old worker printed once its case awaited approval."""
    async with asyncio.timeout(90):
        while True:
            said = await asyncio.to_thread(log.read_text, errors="replace")
            for line in said.splitlines():
                if line.startswith("awaiting approval: "):
                    return line.removeprefix("awaiting approval: ")
            assert old.returncode is None, said
            await asyncio.sleep(0.2)


async def _approve_until_closed(handle):
    """Approve whatever the case asks, as a person would, until it closes."""
    async with asyncio.timeout(120):
        while True:
            status = await handle.query(CaseWorkflow.status)
            if status.phase is Phase.CLOSED:
                return status
            for action in status.pending_actions():
                await handle.execute_update(
                    CaseWorkflow.approve_action,
                    ApprovalInput(action_id=action.id, approver="ops@example.com", reason="ok"),
                )
            await asyncio.sleep(0.2)
