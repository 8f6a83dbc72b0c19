"""Evidence that never delays the cut-off: only what containment changes is kept before
it (the principal's IAM state and the instance's, captured at once and while the principal
is resolved), the EBS snapshots before the stop, and everything else after the cut-off or
while a person decides."""

import uuid
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError

from models.case import ActionKind, CaseInput, CasePolicy, CaseStatus, Phase
from models.finding import finding_from_guardduty
from models.principal import CredentialKind
from tests.support import ACCOUNT, INSTANCE, user_key_event
from tests.workflows.test_case_workflow import (
    FakeAws,
    _record,
    _start,
    _wait_for,
    _worker,
)

CONTAIN_ON_ITS_OWN = CasePolicy(
    without_approval=[ActionKind.CONTAIN_INSTANCE_ROLE, ActionKind.CONTAIN_USER_KEY]
)
# Kept once the credential is cut off (or while a person decides).
AFTER_THE_CUT_OFF = ("store_evidence", "capture_cloudtrail_slice", "capture_trails")


async def _scheduled_before_any_completes(handle: WorkflowHandle) -> list[str]:
    """The activities the case scheduled before the first of its activities completed:
    those it ran at once."""
    scheduled = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            break
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled.append(event.activity_task_scheduled_event_attributes.activity_type.name)
    return scheduled


async def _scheduled_together(handle: WorkflowHandle, first: str, second: str) -> bool:
    """Whether `second` was scheduled before `first` completed (both running at once)."""
    scheduled: dict[int, str] = {}
    seen: set[str] = set()
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
            seen.add(name)
        if event.HasField("activity_task_completed_event_attributes"):
            done = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
            if done == first:
                return second in seen
    return False


def _contained(status: CaseStatus) -> bool:
    return status.verified_access_key_id is not None and len(status.evidence) >= 6


async def test_only_what_containment_changes_is_kept_before_the_cut_off(time_skipping_env):
    fake = FakeAws()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, CONTAIN_ON_ITS_OWN)
        contained = await _wait_for(handle, _contained)
        at_once = await _scheduled_before_any_completes(handle)
        await _record(handle, "cut_off_first_instance_role")
        await handle.terminate("the test is over once containment ran")

    # The principal is resolved while its IAM state and its instance's are captured.
    assert sorted(at_once) == ["capture_instance_state", "capture_role_state", "resolve_principal"]
    order = fake.names()
    revoke = order.index("revoke_role_sessions")
    assert order.index("capture_role_state") < revoke
    assert order.index("capture_instance_state") < revoke
    # The snapshots precede the stop; the rest follows the cut-off.
    assert order.index("snapshot_volumes") < order.index("stop_instance")
    for name in AFTER_THE_CUT_OFF:
        assert order.index(name) > revoke, name
    assert {e.name for e in contained.evidence} >= {
        "finding-lab-finding-0001",
        "iam-role-web-app-role",
        f"ec2-instance-{INSTANCE}",
        "ebs-snapshots",
        "cloudtrail",
        "trails",
    }
    assert contained.cut_off_at is not None
    # The proposal said the trails still being read get logging back after the cut-off.
    assert contained.actions[0].steps[-1].startswith("Start logging on any trail found")


async def test_a_person_approving_finds_nothing_left_to_wait_for(time_skipping_env):
    fake = FakeAws()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        # While the case waits on a person, the rest of the evidence is kept.
        waiting = await _wait_for(
            handle, lambda s: bool(s.pending_actions()) and len(s.evidence) >= 6
        )
        assert waiting.phase is Phase.AWAITING_APPROVAL
        kept_before = len(fake.calls)
        action = waiting.pending_actions()[0]
        await handle.execute_update(
            "approve_action",
            {"action_id": action.id, "approver": "alice", "reason": "confirmed malicious"},
        )
        await _wait_for(handle, lambda s: s.verified_access_key_id is not None)
        await _record(handle, "cut_off_first_approved_by_a_person")
        await handle.terminate("the test is over once containment ran")

    # The first of the case's calls after the approval is the cut-off itself: no evidence
    # is left to keep (the investigation, beside the case, makes its own reads).
    evidence_or_cut_off = {
        "capture_role_state",
        "capture_instance_state",
        "snapshot_volumes",
        "revoke_role_sessions",
        *AFTER_THE_CUT_OFF,
    }
    after = [n for n in fake.names()[kept_before:] if n in evidence_or_cut_off]
    assert after == ["revoke_role_sessions"]


async def test_a_user_key_is_deactivated_while_its_older_tokens_are_denied(time_skipping_env):
    fake = FakeAws(kind=CredentialKind.IAM_USER_KEY)
    queue = f"q-{uuid.uuid4()}"
    leaked = user_key_event("AKIAEXAMPLELEAKED001", "alice", "AIDAEXAMPLEALICE0001", "192.0.2.9")
    case_id = f"case-{ACCOUNT}-AKIAEXAMPLELEAKED001-{uuid.uuid4().hex[:6]}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await time_skipping_env.client.start_workflow(
            "CaseWorkflow",
            CaseInput(
                case_id=case_id,
                finding=finding_from_guardduty(leaked["detail"]),
                policy=CONTAIN_ON_ITS_OWN,
            ),
            id=case_id,
            task_queue=queue,
        )
        contained = await _wait_for(
            handle, lambda s: any(a.kind is ActionKind.REMOVE_CONSOLE_ACCESS for a in s.actions)
        )
        together = await _scheduled_together(
            handle, "deactivate_access_key", "deny_user_tokens_before"
        )
        at_once = await _scheduled_before_any_completes(handle)
        await _record(handle, "cut_off_first_user_key")
        await handle.terminate("the test is over once containment ran")

    assert sorted(at_once) == ["capture_user_state", "resolve_principal"]
    assert together
    # Listed in the order containment makes them: the key, then the tokens' deny.
    assert [c.kind for c in contained.made] == ["key_deactivated", "policy_put"]
    order = fake.names()
    for name in AFTER_THE_CUT_OFF:
        assert order.index(name) > order.index("deny_user_tokens_before"), name


async def test_a_snapshot_that_fails_leaves_an_open_item_and_the_stop_goes_ahead(
    time_skipping_env,
):
    fake = FakeAws()
    fake.fail_next["snapshot_volumes"] = ApplicationError(
        "snapshot volume vol-1: AccessDenied (call ec2:CreateSnapshot)",
        type="AwsAccessDenied",
        non_retryable=True,
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, CONTAIN_ON_ITS_OWN)
        contained = await _wait_for(handle, lambda s: s.verified_access_key_id is not None)
        await handle.terminate("the test is over once containment ran")

    order = fake.names()
    assert order.index("snapshot_volumes") < order.index("stop_instance")
    missing = [i for i in contained.open_items if i.startswith("evidence not kept: snapshot")]
    assert missing and "ec2:CreateSnapshot" in missing[0]
    notes = [e.what for e in contained.timeline]
    assert any("stopped without the EBS snapshots" in n for n in notes)
    retry: Any = next(a for a in contained.actions if a.kind is ActionKind.RETRY)
    assert retry.title == "Retry: snapshot the instance's volumes"


async def test_an_instance_the_finding_names_is_read_but_snapshotted_only_once_confirmed(
    time_skipping_env,
):
    """The finding names an instance; IAM resolves a plain role session: the instance's
    state was read beside the resolution, but no snapshot (a change) is made of it."""
    fake = FakeAws(kind=CredentialKind.ROLE_SESSION)
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(
            time_skipping_env,
            fake,
            queue,
            CasePolicy(without_approval=[ActionKind.CONTAIN_ROLE_SESSION]),
        )
        contained = await _wait_for(handle, lambda s: s.cut_off_at is not None)
        await handle.terminate("the test is over once containment ran")

    assert "capture_instance_state" in fake.names()
    assert "snapshot_volumes" not in fake.names()
    assert "stop_instance" not in fake.names()
    assert contained.credential is not None and contained.credential.principal.instance_id is None
