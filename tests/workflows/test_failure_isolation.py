"""A step that fails for good stops nothing else, on the time-skipping server: a removal
denied by AWS is recorded as failed, with the call that failed, and is an open item; the
rest of the plan and the next rounds go on; its retry is offered beside the case, which
closes only once it is decided, and says what is still undone."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError

from models.case import ActionStatus, CaseInput, CasePolicy, CaseStatus, Phase
from tests.playbook.test_classify import STOLEN as RECORDED_STOLEN_KEY
from tests.playbook.test_classify import _attack_records, _recorder
from tests.support import STOLEN_KEY, finding
from tests.workflows.test_case_workflow import (
    FakeAws,
    _approval,
    _decided,
    _pending,
    _record,
    _result,
    _second_generation_records,
    _wait_for,
    _worker,
)
from workflows.case import CaseWorkflow

MINTED = "AKIAMINTEDONALICE001"
# The first removal of the plan, which the fake AWS fails.
REMOVAL = "remove_function_permission public of log-rotate"
# The activity's message starts with the removal it was making, as aws_errors writes it.
DENIED = f"{REMOVAL}: AccessDeniedException: denied by an SCP"


async def _start_waiting_long(env, queue: str) -> WorkflowHandle:
    """A case whose approvals never reach their deadline in the test: the time-skipping
    server strands a run whose signal cancels a deadline timer that fired meanwhile
    (temporalio/sdk-java#3088), and a retry waiting beside the case adds such timers."""
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    return await env.client.start_workflow(
        CaseWorkflow.run,
        CaseInput(
            case_id=case_id,
            finding=finding(),
            policy=CasePolicy(approval_deadline_seconds=7 * 24 * 3600),
        ),
        id=case_id,
        task_queue=queue,
    )


async def _run_until_only_the_retry_waits(env, handle: WorkflowHandle) -> CaseStatus:
    """Approve containment, every round and the recovery; leave a retry waiting (or the
    case closed, when none was offered)."""
    waiting = await _wait_for(handle, _pending("contain-"))
    await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))

    def decided_or_waiting(s: CaseStatus) -> bool:
        return (
            s.phase is Phase.CLOSED
            or any(a.id.startswith(("eradicate-", "recover-")) for a in s.pending_actions())
            or (s.phase is Phase.NEEDS_HUMAN and "before closing" in s.phases[-1].note)
        )

    while True:
        # Time passes only while the case watches: once it waits on people, no more.
        if not decided_or_waiting(await handle.query(CaseWorkflow.status)):
            await env.sleep(timedelta(minutes=50))
        status = await _wait_for(handle, decided_or_waiting)
        pending = [a for a in status.pending_actions() if not a.id.startswith("retry-")]
        if not pending:
            return status
        await handle.signal(CaseWorkflow.approve, _approval(pending[0].id))
        await _wait_for(handle, _decided(pending[0].id))


@pytest.mark.parametrize("retry", ["approved", "rejected"])
async def test_a_failed_removal_is_an_open_item_and_the_rounds_go_on(time_skipping_env, retry):
    fake = FakeAws()
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        "AKIABACKDOORKEY00001": _second_generation_records(),
    }
    fake.fail_next["remove_resource"] = ApplicationError(
        f"{DENIED} (call lambda:RemovePermission)", type="AwsAccessDenied", non_retryable=True
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _run_until_only_the_retry_waits(time_skipping_env, handle)

        # The denied removal is failed, named with its call, and open; the others went on.
        steps = [s for p in waiting.eradication for s in p.steps]
        failed = [s for s in steps if s.outcome == "failed"]
        assert len(failed) == 1 and failed[0].detail is not None
        assert "(call lambda:RemovePermission)" in failed[0].detail
        assert all(s.outcome == "removed" for s in steps if s is not failed[0])
        assert any("failed" in item and "still in AWS" in item for item in waiting.open_items)
        # The rounds went on past it, to the credentials the attacker minted.
        assert len(waiting.eradication) == 3
        (offer,) = waiting.pending_actions()
        assert offer.id.startswith("retry-") and failed[0].describe() in offer.steps[0]
        # The removal is named once, not again inside its own failure.
        why = "AccessDeniedException: denied by an SCP (call lambda:RemovePermission)"
        assert offer.steps == [f"{REMOVAL}: it failed: {why}"]
        assert f"{REMOVAL} failed: {why}; it is still in AWS" in waiting.open_items
        assert all(item.count(REMOVAL) <= 1 for item in waiting.open_items)

        if retry == "approved":
            await handle.signal(CaseWorkflow.approve, _approval(offer.id))
        else:
            await handle.signal(
                CaseWorkflow.reject, _approval(offer.id).model_copy(update={"reason": "by hand"})
            )
        await _wait_for(handle, _decided(offer.id))
        result = await _result(handle)
        if retry == "approved":
            await _record(handle, "failed_removal_retried_beside_the_case")

    assert result.phase is Phase.CLOSED
    retried = next(a for a in result.actions if a.id == offer.id)
    again = [s for p in result.eradication for s in p.steps if s.describe() == failed[0].describe()]
    (markdown,) = fake.report_markdown
    if retry == "approved":
        assert retried.status is ActionStatus.DONE
        assert again[0].outcome == "removed"
        assert not any("still in AWS" in item for item in result.open_items)
        # The report says the removal worked only on its retry, and eradication ended then.
        assert (
            f"| {REMOVAL} | `{RECORDED_STOLEN_KEY}` | removed on its retry ({offer.id}); it "
            "first failed: AccessDeniedException: denied by an SCP (call "
            "lambda:RemovePermission) |"
        ) in markdown
        assert retried.finished_at is not None
        assert f"| Eradicated | {retried.finished_at.isoformat()} |" in markdown
    else:
        assert retried.status is ActionStatus.REJECTED
        assert again[0].outcome == "failed"
        assert any(
            failed[0].describe() in item and "still in AWS" in item for item in result.open_items
        )
        assert f"| Eradicated | partly: 12 of 13 removals done; {REMOVAL} failed |" in markdown
        assert "(eradication is only partly done)" in markdown


async def test_a_restore_that_fails_for_good_is_left_to_a_human_and_the_rest_restored(
    time_skipping_env,
):
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _attack_records()}
    fake.fail_next["restore_change"] = ApplicationError(
        "put the trust policy back: AccessDenied: no (call iam:UpdateAssumeRolePolicy)",
        type="AwsAccessDenied",
        non_retryable=True,
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        await _run_until_only_the_retry_waits(time_skipping_env, handle)
        result = await _result(handle)

    assert [s.outcome for s in result.recovery].count("failed") == 1
    failed = next(s for s in result.recovery if s.outcome == "failed")
    assert all(s.outcome != "failed" for s in result.recovery if s is not failed)
    assert len([n for n, _ in fake.calls if n == "restore_change"]) == len(result.recovery)
    assert any(
        item.startswith(f"restore by hand: {failed.description} (it failed:")
        and "iam:UpdateAssumeRolePolicy" in item
        for item in result.open_items
    )
    assert result.phase is Phase.CLOSED and result.report is not None


def _key_minted_on_a_user_it_did_not_make() -> list[dict[str, Any]]:
    recorder, call = _recorder()
    call(
        "iam",
        "CreateAccessKey",
        {"UserName": "alice"},
        {"AccessKey": {"UserName": "alice", "AccessKeyId": MINTED, "Status": "Active"}},
    )
    return recorder.records


async def test_a_minted_key_the_plan_deleted_counts_as_contained(time_skipping_env):
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _key_minted_on_a_user_it_did_not_make()}
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        await _run_until_only_the_retry_waits(time_skipping_env, handle)
        result = await _result(handle)

    first = result.eradication[0]
    assert [(s.operation, s.resource.name, s.outcome) for s in first.steps] == [
        ("delete_access_key", MINTED, "removed")
    ]
    # Deleted, so contained: investigated in the next round, and nobody is asked to
    # contain it by hand.
    assert [p.access_key_ids for p in result.eradication] == [[STOLEN_KEY], [MINTED]]
    assert not any(MINTED in item for item in result.open_items)
    assert any(e.what.startswith(f"{MINTED} was deleted this round") for e in result.timeline)


async def test_a_rejected_containment_closes_with_the_credential_open_and_said_in_the_report(
    time_skipping_env,
):
    fake = FakeAws()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(
            CaseWorkflow.reject,
            _approval(waiting.pending_actions()[0].id).model_copy(update={"reason": "benign"}),
        )
        result = await _result(handle)

    assert result.phase is Phase.CLOSED
    assert f"{STOLEN_KEY} is not contained (contain-1 is rejected by alice: benign): " in (
        " ".join(result.open_items)
    )
    (markdown,) = fake.report_markdown
    assert "**Containment:** not contained." in markdown
    assert "Open items for humans\n\nNone." not in markdown
