"""Decisions people can trust, on the dev server (the time-skipping server has no
updates): the approval policy's allowlist and two-person rule, decisions as updates that
answer at once or are refused with the reason, and refused signals kept on the case."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

from config import names
from models.case import (
    ActionKind,
    ActionStatus,
    ApprovalInput,
    CaseInput,
    CasePolicy,
    NoteInput,
    Phase,
)
from tests.support import ACCOUNT, finding
from tests.workflows.test_case_workflow import FakeAws, _pending, _record, _wait_for
from worker import WORKFLOWS
from workflows.case import CaseWorkflow

POLICY = CasePolicy(
    approvers={ActionKind.CONTAIN_INSTANCE_ROLE: ["alice", "bob"]},
    two_person=[ActionKind.CONTAIN_INSTANCE_ROLE],
)


@pytest_asyncio.fixture
async def case(dev_server_env) -> AsyncIterator[tuple[WorkflowHandle, FakeAws]]:
    """A case under POLICY waiting for approval of its containment, with fake AWS."""
    fake = FakeAws()
    client: Client = dev_server_env.client
    queue = f"decisions-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=fake.activities()):
        case_id = f"case-{ACCOUNT}-{uuid.uuid4().hex[:8]}"
        handle = await client.start_workflow(
            CaseWorkflow.run,
            CaseInput(case_id=case_id, finding=finding(), policy=POLICY),
            id=case_id,
            task_queue=queue,
        )
        await _wait_for(handle, _pending("contain-"))
        await _settled(handle)
        try:
            yield handle, fake
        finally:
            # A case still waiting is ended; one that closed has nothing to end.
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


async def _settled(handle: WorkflowHandle) -> None:
    """Until the work the case runs beside the approval (notifications, the investigation)
    is over and no workflow task is pending, so a test can count the events that follow."""
    await _wait_for(
        handle,
        lambda s: (
            any(e.what.startswith("notification needs_human") for e in s.timeline)
            and s.investigation is not None
        ),
    )
    async with asyncio.timeout(30):
        while True:
            raw = (await handle.describe()).raw_description
            if not raw.pending_activities and not raw.HasField("pending_workflow_task"):
                return
            await asyncio.sleep(0.1)


def _decision(action_id: str, who: str) -> ApprovalInput:
    return ApprovalInput(action_id=action_id, approver=who, reason="seen the finding")


async def _refused(handle: WorkflowHandle, update, decision: ApprovalInput) -> str:
    """The refusal's message: a refused update is an error for its caller."""
    with pytest.raises(WorkflowUpdateFailedError) as raised:
        await handle.execute_update(update, decision)
    cause = raised.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == names.DECISION_REFUSED_ERROR
    return cause.message


async def test_two_allowed_people_must_approve_and_every_refusal_says_why(case):
    handle, fake = case
    status = await handle.query(CaseWorkflow.status)
    (action,) = status.pending_actions()
    events = len((await handle.fetch_history()).events)

    # Someone the policy does not name: refused at once, and the history keeps nothing.
    message = await _refused(handle, CaseWorkflow.approve_action, _decision(action.id, "mallory"))
    assert "mallory may not decide contain actions" in message
    assert await _refused(handle, CaseWorkflow.approve_action, _decision("contain-99", "alice"))
    assert len((await handle.fetch_history()).events) == events

    first = await handle.execute_update(CaseWorkflow.approve_action, _decision(action.id, "alice"))
    assert (first.status, first.approvals, first.needed) == (ActionStatus.PENDING_APPROVAL, 1, 2)
    message = await _refused(handle, CaseWorkflow.approve_action, _decision(action.id, "alice"))
    assert "needs a second person" in message
    # The same refusal sent as a signal is kept on the case, with its reason.
    await handle.signal(CaseWorkflow.approve, _decision(action.id, "alice"))
    status = await _wait_for(handle, lambda s: bool(s.refused))
    assert [(r.by, r.reason) for r in status.refused] == [
        ("alice", "alice approved it already: it needs a second person")
    ]
    assert "deactivate_access_key" not in fake.names()
    assert "revoke_role_sessions" not in fake.names()

    second = await handle.execute_update(CaseWorkflow.approve_action, _decision(action.id, "bob"))
    assert (second.status, second.approvals, second.needed) == (ActionStatus.APPROVED, 2, 2)
    status = await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
    contain = next(a for a in status.actions if a.id == action.id)
    assert [e.approver for e in contain.endorsements] == ["alice"]
    assert contain.approval is not None and contain.approval.approver == "bob"
    assert "revoke_role_sessions" in fake.names()
    notes = await handle.execute_update(
        CaseWorkflow.add_note_now, NoteInput(author="carol", text="paged the app team")
    )
    assert notes.notes == 1
    await _record(handle, "two_person_approval")


async def test_a_rejection_by_one_allowed_person_decides_at_once(case):
    handle, fake = case
    (action,) = (await handle.query(CaseWorkflow.status)).pending_actions()

    result = await handle.execute_update(CaseWorkflow.reject_action, _decision(action.id, "bob"))

    assert (result.status, result.approvals) == (ActionStatus.REJECTED, 0)
    status = await _wait_for(handle, lambda s: s.phase is Phase.CLOSED)
    assert status.outcome is not None and "bob" in status.outcome
    assert "revoke_role_sessions" not in fake.names()
