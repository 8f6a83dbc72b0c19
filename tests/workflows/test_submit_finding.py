"""The case's submit_finding update, on the dev server (the time-skipping server has no
updates): what the case makes of each finding, how it tells the opening delivery from its
redelivery (also for cases started the old way, with signal-with-start, and for cases
continued as new), and what its validator refuses without a trace in the history."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from config import names
from models.case import CaseInput, CaseResume, CaseStatus, EradicationProgress, Phase, PhaseChange
from models.finding import Finding
from models.intake import FindingOutcome, SubmitFindingInput
from tests.support import ACCOUNT, deliveries_recorded, finding, history_for_the_repo
from worker import WORKFLOWS
from workflows.case import CaseWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"


@pytest_asyncio.fixture
async def cases(dev_server_env) -> AsyncIterator[tuple[Client, str]]:
    """A worker that runs case workflows and no activities: a case answers updates and
    waits for its first activity."""
    queue = f"submit-{uuid.uuid4()}"
    async with Worker(dev_server_env.client, task_queue=queue, workflows=WORKFLOWS):
        yield dev_server_env.client, queue


def _key() -> str:
    return "ASIA" + uuid.uuid4().hex[:16].upper()


async def _submit(handle: WorkflowHandle, submitted: Finding) -> FindingOutcome:
    """The case's answer, with a refusal as duplicate (what the webhook says)."""
    try:
        result = await handle.execute_update(
            CaseWorkflow.submit_finding, SubmitFindingInput(finding=submitted)
        )
    except WorkflowUpdateFailedError as exc:
        assert isinstance(exc.cause, ApplicationError)
        assert exc.cause.type == names.DUPLICATE_FINDING_ERROR, exc.cause
        return FindingOutcome.DUPLICATE
    return result.outcome


async def _events(handle: WorkflowHandle) -> int:
    return await deliveries_recorded(handle)


async def _start(client: Client, queue: str, opening: Finding, **kwargs) -> WorkflowHandle:
    case_id = f"case-{ACCOUNT}-{opening.access_key.access_key_id}"
    return await client.start_workflow(
        CaseWorkflow.run,
        CaseInput(case_id=case_id, finding=opening, **kwargs),
        id=case_id,
        task_queue=queue,
    )


async def test_each_finding_gets_the_outcome_it_deserves(cases):
    client, queue = cases
    opening = finding(access_key_id=_key())
    handle = await _start(client, queue, opening)
    later = opening.updated_at + timedelta(minutes=20)
    assert await _submit(handle, opening) is FindingOutcome.NEW_CASE
    assert await _submit(handle, opening) is FindingOutcome.DUPLICATE
    other = finding(access_key_id=opening.access_key.access_key_id, finding_id="second")
    assert await _submit(handle, other) is FindingOutcome.JOINED
    grown = other.model_copy(update={"count": 30, "updated_at": later})
    assert await _submit(handle, grown) is FindingOutcome.UPDATED
    assert await _submit(handle, grown) is FindingOutcome.DUPLICATE
    # Same id and updatedAt is the same delivery, whatever else differs.
    recounted = grown.model_copy(update={"count": 31})
    assert await _submit(handle, recounted) is FindingOutcome.DUPLICATE
    # An older delivery, late: nothing new.
    assert await _submit(handle, other) is FindingOutcome.DUPLICATE
    status = await handle.query(CaseWorkflow.status)
    assert [(f.id, f.count) for f in status.findings] == [
        ("lab-finding-0001", 7),
        ("second", 7),
        ("second", 30),
    ]
    assert sum("seen again" in t.what for t in status.timeline) == 1
    assert sum("joined the case" in t.what for t in status.timeline) == 1
    await handle.terminate("test done")
    if os.environ.get("QUENCH_RECORD_HISTORIES") == "1":
        # A history with submit_finding updates in it, for the replay tests.
        text = history_for_the_repo((await handle.fetch_history()).to_json())
        await asyncio.to_thread((HISTORIES / "findings_submitted.json").write_text, text)


async def test_duplicates_and_refusals_leave_no_trace_in_the_history(cases):
    client, queue = cases
    opening = finding(access_key_id=_key())
    handle = await _start(client, queue, opening)
    assert await _submit(handle, opening) is FindingOutcome.NEW_CASE
    length = await _events(handle)
    assert await _submit(handle, opening) is FindingOutcome.DUPLICATE

    elsewhere = finding(access_key_id=_key())
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            CaseWorkflow.submit_finding, SubmitFindingInput(finding=elsewhere)
        )
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == names.ANOTHER_CREDENTIAL_ERROR

    naive = finding(access_key_id=opening.access_key.access_key_id, finding_id="no-zone")
    naive = naive.model_copy(update={"updated_at": naive.updated_at.replace(tzinfo=None)})
    with pytest.raises(WorkflowUpdateFailedError) as unordered:
        await handle.execute_update(CaseWorkflow.submit_finding, SubmitFindingInput(finding=naive))
    assert isinstance(unordered.value.cause, ApplicationError)
    assert unordered.value.cause.type == names.INVALID_FINDING_ERROR

    assert await _events(handle) == length
    status = await handle.query(CaseWorkflow.status)
    assert [f.id for f in status.findings] == ["lab-finding-0001"]
    await handle.terminate("test done")


async def test_a_case_started_by_signal_with_start_has_answered_its_opening_finding(cases):
    """Cases running since before the update existed were opened with signal-with-start:
    their opening finding was acknowledged then, so a redelivery is a duplicate."""
    client, queue = cases
    opening = finding(access_key_id=_key())
    case_id = f"case-{ACCOUNT}-{opening.access_key.access_key_id}"
    handle = await client.start_workflow(
        CaseWorkflow.run,
        CaseInput(case_id=case_id, finding=opening),
        id=case_id,
        task_queue=queue,
        start_signal=names.SIGNAL_ADD_FINDING,
        start_signal_args=[opening],
    )
    assert await _submit(handle, opening) is FindingOutcome.DUPLICATE
    # The signal still works beside the update, and they agree on what is new.
    second = finding(access_key_id=opening.access_key.access_key_id, finding_id="by-signal")
    await handle.signal(CaseWorkflow.add_finding, second)
    assert await _submit(handle, second) is FindingOutcome.DUPLICATE
    status = await handle.query(CaseWorkflow.status)
    assert [f.id for f in status.findings] == ["lab-finding-0001", "by-signal"]
    await handle.terminate("test done")


async def test_a_case_continued_as_new_has_answered_its_opening_finding(cases):
    client, queue = cases
    opening = finding(access_key_id=_key())
    now = datetime.now(UTC)
    carried = CaseStatus(
        case_id=f"case-{ACCOUNT}-{opening.access_key.access_key_id}",
        phase=Phase.ERADICATION,
        account_id=ACCOUNT,
        findings=[opening],
        phases=[PhaseChange(phase=Phase.ERADICATION, at=now)],
        actions=[],
        approvals=[],
        evidence=[],
    )
    resume = CaseResume(
        status=carried,
        action_seq=3,
        eradication=EradicationProgress(
            compromise_time=now - timedelta(hours=2),
            pending=[opening.access_key.access_key_id],
            investigated=[],
            rounds_done=3,
            outcome="contained",
        ),
    )
    handle = await _start(client, queue, opening, resume=resume)
    assert await _submit(handle, opening) is FindingOutcome.DUPLICATE
    joining = finding(access_key_id=opening.access_key.access_key_id, finding_id="after-can")
    assert await _submit(handle, joining) is FindingOutcome.JOINED
    await handle.terminate("test done")
