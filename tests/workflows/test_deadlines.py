"""Approval deadlines on the time-skipping server: a case nobody answers escalates, each time
its deadline passes, and tells people; containment of a severe finding goes ahead at the
deadline only where the policy allows it, and the case records that it did."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from config import names
from models.case import (
    ActionKind,
    ActionStatus,
    CaseInput,
    CasePolicy,
    CaseStatus,
    NotificationKind,
    Phase,
)
from playbook.report import build_report, render_markdown
from tests.playbook.test_classify import _attack_records
from tests.support import ACCOUNT, STOLEN_KEY, finding
from tests.workflows.test_case_workflow import (
    FakeAws,
    _approval,
    _pending,
    _record,
    _result,
    _wait_for,
    _worker,
)
from workflows.case import CaseWorkflow

DEADLINE = timedelta(minutes=10)


async def _start(env: WorkflowEnvironment, queue: str, policy: CasePolicy, severity: float):
    case_id = f"case-{ACCOUNT}-{STOLEN_KEY}-{uuid.uuid4().hex[:6]}"
    return await env.client.start_workflow(
        CaseWorkflow.run,
        CaseInput(case_id=case_id, finding=finding(severity=severity), policy=policy),
        id=case_id,
        task_queue=queue,
    )


def _escalated(times: int):
    return lambda s: any(a.escalations >= times for a in s.pending_actions())


def _kinds(fake: FakeAws, channel: str = "sns") -> list[NotificationKind]:
    return [n.kind for n in fake.notifications[channel]]


async def test_an_unanswered_containment_escalates_at_each_deadline(time_skipping_env):
    fake = FakeAws()
    policy = CasePolicy(approval_deadline_seconds=int(DEADLINE.total_seconds()))
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, queue, policy, severity=8.0)
        waiting = await _wait_for(handle, _pending("contain-"))
        action = waiting.pending_actions()[0]
        assert action.deadline == action.requested_at + DEADLINE
        # People are told at once, by both channels, with the command that approves.
        asked = await _wait_for_notifications(handle, fake, 1)
        assert asked[0].kind is NotificationKind.NEEDS_HUMAN
        assert f"quench approve {handle.id} {action.id} --by" in asked[0].text
        assert f"--name {names.UPDATE_APPROVE}" in asked[0].text
        assert _kinds(fake, "chat") == [NotificationKind.NEEDS_HUMAN]

        await time_skipping_env.sleep(DEADLINE + timedelta(seconds=30))
        once = await _wait_for(handle, _escalated(1))
        await time_skipping_env.sleep(DEADLINE)
        twice = await _wait_for(handle, _escalated(2))
        # Still waiting for a human: escalation never decides.
        assert "revoke_role_sessions" not in fake.names()
        assert twice.pending_actions()[0].status is ActionStatus.PENDING_APPROVAL
        assert twice.phase is Phase.AWAITING_APPROVAL
        description = await handle.describe()
        assert description.typed_search_attributes.get(names.SA_ESCALATIONS) == 2

        await handle.signal(CaseWorkflow.approve, _approval(action.id))
        result = await _result(handle)
        await _record(handle, "approval_escalated")

    escalation = once.pending_actions()[0]
    assert escalation.deadline == escalation.requested_at + 2 * DEADLINE
    assert any(e.what.startswith(f"{action.id} escalated (time 1)") for e in once.timeline)
    assert _kinds(fake)[:3] == [
        NotificationKind.NEEDS_HUMAN,
        NotificationKind.ESCALATED,
        NotificationKind.ESCALATED,
    ]
    escalated = fake.notifications["sns"][1]
    assert escalated.subject.startswith(f"ESCALATED: {action.id} has waited 10m")
    assert "the case escalates again" in escalated.text
    assert len({n.notification_id for n in fake.notifications["sns"]}) == len(
        fake.notifications["sns"]
    )
    # A human decided in the end, and the report says the action was escalated twice.
    contained = next(a for a in result.actions if a.id == action.id)
    assert contained.approval is not None and contained.approval.approver == "alice"
    assert not contained.approval.automatic and contained.escalations == 2
    assert result.phase is Phase.CLOSED
    assert _kinds(fake)[-1] is NotificationKind.CLOSED
    report = render_markdown(build_report(result, result.phases[-1].at))
    assert f"| {action.id} | " in report and "approved after 2 escalations | alice |" in report


async def test_containment_of_a_severe_finding_proceeds_at_the_deadline_when_allowed(
    time_skipping_env,
):
    fake = FakeAws()
    policy = CasePolicy(
        approval_deadline_seconds=int(DEADLINE.total_seconds()), auto_contain_min_severity=7.0
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, queue, policy, severity=8.0)
        waiting = await _wait_for(handle, _pending("contain-"))
        action = waiting.pending_actions()[0]
        asked = await _wait_for_notifications(handle, fake, 1)
        assert "then the case proceeds on its own" in asked[0].text
        assert "revoke_role_sessions" not in fake.names()
        await time_skipping_env.sleep(DEADLINE + timedelta(seconds=30))
        contained = await _wait_for(handle, lambda s: s.watch is not None)
        await _record(handle, "contained_at_deadline")
        await handle.terminate("the test is over once containment ran")

    decided = next(a for a in contained.actions if a.id == action.id)
    assert decided.status is ActionStatus.DONE
    assert decided.approval is not None
    assert decided.approval.automatic and decided.approval.approver == names.AUTO_APPROVER
    assert "severity 7.0 or more" in decided.approval.reason
    assert "(this case: 8.0)" in decided.approval.reason
    assert decided.escalations == 0
    # Contained for real, by the same steps a human approval runs.
    order = fake.names()
    assert order.index("revoke_role_sessions") < order.index("stop_instance")
    assert contained.verified_access_key_id is not None
    assert _kinds(fake)[:2] == [NotificationKind.NEEDS_HUMAN, NotificationKind.PROCEEDED]
    report = render_markdown(build_report(contained, contained.phases[-1].at))
    assert "approved (by the case policy, without a person) | quench:policy |" in report


async def test_only_severe_containment_may_proceed_on_its_own(time_skipping_env):
    """Below the policy's severity, containment escalates; eradication always waits."""
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _attack_records()}
    policy = CasePolicy(
        approval_deadline_seconds=int(DEADLINE.total_seconds()),
        approval_deadlines={ActionKind.ERADICATE: 120},
        auto_contain_min_severity=7.0,
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, queue, policy, severity=6.9)
        waiting = await _wait_for(handle, _pending("contain-"))
        action = waiting.pending_actions()[0]
        await time_skipping_env.sleep(DEADLINE + timedelta(seconds=30))
        escalated = await _wait_for(handle, _escalated(1))
        assert "revoke_role_sessions" not in fake.names()
        assert escalated.pending_actions()[0].approval is None
        await handle.signal(CaseWorkflow.approve, _approval(action.id))
        # Eradication of what the attacker made: its own, shorter, deadline, and never
        # taken without people, whatever the severity.
        plan = await _wait_for_eradication(time_skipping_env, handle)
        eradicate = plan.pending_actions()[0]
        assert eradicate.deadline is not None
        waited = eradicate.deadline - eradicate.requested_at
        assert waited == timedelta(seconds=120) * (eradicate.escalations + 1)
        await time_skipping_env.sleep(timedelta(seconds=150))
        later = await _wait_for(handle, _escalated(eradicate.escalations + 1))
        assert later.pending_actions()[0].id == eradicate.id
        assert later.pending_actions()[0].approval is None
        assert "remove_resource" not in fake.names()
        await handle.terminate("the test is over")


async def test_the_policy_can_let_containment_run_without_approval(time_skipping_env):
    fake = FakeAws()
    policy = CasePolicy(without_approval=[ActionKind.CONTAIN_INSTANCE_ROLE])
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, queue, policy, severity=2.0)
        contained = await _wait_for(handle, lambda s: s.verified_access_key_id is not None)
        await handle.terminate("the test is over once containment ran")

    action = contained.actions[0]
    assert action.kind is ActionKind.CONTAIN_INSTANCE_ROLE and action.status is ActionStatus.DONE
    assert action.approval is not None and action.approval.automatic
    assert action.approval.approver == names.AUTO_APPROVER
    assert action.approval.reason == "the case policy runs contain actions without approval"
    # Nobody was asked, so nobody was told to decide.
    assert NotificationKind.NEEDS_HUMAN not in _kinds(fake)


def test_retries_and_manual_containment_always_need_a_person():
    for kind in (ActionKind.RETRY, ActionKind.MANUAL_CONTAINMENT):
        with pytest.raises(ValidationError, match="always need a person's approval"):
            CasePolicy(without_approval=[ActionKind.CONTAIN_USER_KEY, kind])


async def test_a_failing_channel_is_noted_and_never_stops_the_case(time_skipping_env):
    fake = FakeAws()
    fake.fail_next["notify_chat"] = ApplicationError(
        "the chat webhook answered HTTP 403", type="ChatWebhookRefused", non_retryable=True
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, queue, CasePolicy(), severity=5.0)
        waiting = await _wait_for(handle, _pending("contain-"))
        await _wait_for(handle, lambda s: any("notification" in e.what for e in s.timeline))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        result = await _result(handle)

    noted = [e.what for e in result.timeline if e.what.startswith("notification")]
    assert noted[0].startswith("notification needs_human: sns sent (message 1); chat failed")
    assert "HTTP 403" in noted[0]
    # Not retried (the webhook refused it), and the case went on to close.
    assert fake.names().count("notify_chat") == len(noted)
    assert result.phase is Phase.CLOSED
    assert noted[-1].startswith("notification closed: sns sent")


async def test_a_slow_channel_never_holds_up_containment(time_skipping_env):
    fake = FakeAws()
    fake.chat_answers = asyncio.Event()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, queue, CasePolicy(), severity=5.0)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        # Contained while the chat tool still has not answered the first notification.
        contained = await _wait_for(handle, lambda s: s.verified_access_key_id is not None)
        assert fake.names().count("notify_chat") == 1
        assert not any(e.what.startswith("notification ") for e in contained.timeline)
        fake.chat_answers.set()
        result = await _result(handle)

    noted = [e.what for e in result.timeline if e.what.startswith("notification ")]
    assert noted[0] == "notification needs_human: sns sent (message 1); chat sent (HTTP 200)"
    assert noted[-1].startswith("notification closed: ")


async def _wait_for_notifications(handle, fake: FakeAws, count: int):
    """The notifications once the case has noted `count` of them; each went to both
    channels."""

    def noted(status: CaseStatus) -> bool:
        return sum(e.what.startswith("notification ") for e in status.timeline) >= count

    await _wait_for(handle, noted)
    return fake.notifications["sns"]


async def _wait_for_eradication(env: WorkflowEnvironment, handle) -> CaseStatus:
    """Past the containment watch to the first eradication round's approval."""
    await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
    await env.sleep(timedelta(minutes=50))
    return await _wait_for(handle, _pending("eradicate-"))
