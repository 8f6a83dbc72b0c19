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

from models.case import ActionKind, ActionStatus, CaseInput, CasePolicy, CaseStatus, Phase
from models.principal import CredentialKind
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
    return await _approve_the_rest(env, handle)


async def _approve_the_rest(env, handle: WorkflowHandle) -> CaseStatus:
    """Approve every round and the recovery once contained; leave retries waiting."""

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


@pytest.mark.parametrize("retry", ["approved", "rejected"])
async def test_a_restore_that_fails_for_good_is_offered_again_and_the_rest_restored(
    time_skipping_env, retry
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
        waiting = await _run_until_only_the_retry_waits(time_skipping_env, handle)

        # The rest restored; the failed one is open and offered again beside the case.
        failed = next(s for s in waiting.recovery if s.outcome == "failed")
        assert all(s.outcome != "failed" for s in waiting.recovery if s is not failed)
        restores = len(waiting.recovery)
        assert len([n for n, _ in fake.calls if n == "restore_change"]) == restores
        item = next(i for i in waiting.open_items if i.startswith("restore by hand: "))
        assert failed.description in item and "iam:UpdateAssumeRolePolicy" in item
        (offer,) = waiting.pending_actions()
        assert offer.id.startswith("retry-") and offer.title == "Retry 1 failed restore"
        assert "iam:UpdateAssumeRolePolicy" in offer.steps[0]
        if retry == "approved":
            await handle.signal(CaseWorkflow.approve, _approval(offer.id))
        else:
            await handle.signal(
                CaseWorkflow.reject, _approval(offer.id).model_copy(update={"reason": "by hand"})
            )
        await _wait_for(handle, _decided(offer.id))
        result = await _result(handle)
        if retry == "approved":
            await _record(handle, "failed_restore_retried_beside_the_case")

    again = next(s for s in result.recovery if s.description == failed.description)
    calls = len([n for n, _ in fake.calls if n == "restore_change"])
    if retry == "approved":
        assert calls == restores + 1 and again.outcome != "failed"
        assert not any(i.startswith("restore by hand: ") for i in result.open_items)
    else:
        assert calls == restores and again.outcome == "failed"
        assert item in result.open_items
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
    assert f"{STOLEN_KEY} is not contained (contain-1 was rejected by alice: benign): " in (
        " ".join(result.open_items)
    )
    (markdown,) = fake.report_markdown
    assert "**Containment:** not contained." in markdown
    assert "Open items for humans\n\nNone." not in markdown


def _denied(call: str, what: str) -> ApplicationError:
    """As activities/aws.py raises a denial: the call named in the message and details."""
    return ApplicationError(
        f"{what}: AccessDenied: denied by an SCP (call {call})",
        {"aws_error_code": "AccessDenied", "doing": what, "call": call},
        type="AwsAccessDenied",
        non_retryable=True,
    )


async def test_a_principal_iam_cannot_confirm_is_contained_as_the_finding_names_it(
    time_skipping_env,
):
    """GetRole denied: the case does not wait on a human to retry the lookup. It revokes
    the sessions of the role the finding names and leaves the instance, whose role it
    could not check, alone; the lookup's failure is an open item to the end."""
    fake = FakeAws()
    fake.fail_next["resolve_principal"] = _denied("iam:GetRole", "get role web-app-role")
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        (containment,) = waiting.pending_actions()
        assert containment.kind is ActionKind.CONTAIN_ROLE_SESSION
        assert waiting.credential is not None
        assert waiting.credential.principal.role_name == finding().access_key.user_name
        assert waiting.credential.principal.instance_id is None
        await _run_until_only_the_retry_waits(time_skipping_env, handle)
        result = await _result(handle)
        await _record(handle, "principal_not_confirmed_contained_as_named")

    assert "revoke_role_sessions" in fake.names()
    assert "stop_instance" not in fake.names()
    (revoked,) = [call for name, call in fake.calls if name == "revoke_role_sessions"]
    assert revoked.role_name == finding().access_key.user_name
    assert any(
        item.startswith("principal not confirmed: resolving it failed: get role web-app-role")
        and "(call iam:GetRole)" in item
        for item in result.open_items
    )
    assert result.outcome is not None and result.outcome.startswith("contained")


@pytest.mark.parametrize("retry", ["approved", "rejected"])
async def test_containment_goes_ahead_without_evidence_that_could_not_be_kept(
    time_skipping_env, retry
):
    """The user's capture denied: containment is proposed at once, telling its approver
    what evidence it goes ahead without; the capture's retry is decided beside the case,
    and the open item stays only while the evidence is missing."""
    fake = FakeAws(kind=CredentialKind.IAM_USER_KEY)
    fake.fail_next["capture_user_state"] = _denied("iam:ListAccessKeys", "list keys of alice")
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        containment = next(a for a in waiting.pending_actions() if a.id.startswith("contain-"))
        (offer,) = [a for a in waiting.pending_actions() if a.id.startswith("retry-")]
        assert offer.title == "Retry: capture the user's IAM state"
        assert "(call iam:ListAccessKeys)" in offer.steps[0]
        assert containment.steps[0].startswith(
            "Evidence not kept (capture the user's IAM state: list keys of alice"
        )
        item = next(i for i in waiting.open_items if i.startswith("evidence not kept"))
        assert "(call iam:ListAccessKeys)" in item
        # Nothing changed in AWS yet; containment waits on its approver only.
        assert "deactivate_access_key" not in fake.names()
        await handle.signal(CaseWorkflow.approve, _approval(containment.id))
        # Whether alice has a password is unknown: removing it is proposed, said so.
        console = await _wait_for(handle, _pending("remove-console"))
        (removal,) = [a for a in console.pending_actions() if a.id.startswith("remove-console")]
        assert "unknown" in removal.steps[0]
        assert "deactivate_access_key" in fake.names()
        if retry == "approved":
            await handle.signal(CaseWorkflow.approve, _approval(offer.id))
        else:
            await handle.signal(
                CaseWorkflow.reject, _approval(offer.id).model_copy(update={"reason": "later"})
            )
        await _wait_for(handle, _decided(offer.id))
        await handle.signal(CaseWorkflow.approve, _approval(removal.id))
        await _wait_for(handle, _decided(removal.id))
        await _approve_the_rest(time_skipping_env, handle)
        result = await _result(handle)
        if retry == "approved":
            await _record(handle, "contained_without_evidence_kept_on_retry")

    captures = [name for name in fake.names() if name == "capture_user_state"]
    decided = next(a for a in result.actions if a.id == offer.id)
    if retry == "approved":
        assert len(captures) == 2 and decided.status is ActionStatus.DONE
        assert not any(i.startswith("evidence not kept") for i in result.open_items)
        assert "iam-user-alice" in [e.name for e in result.evidence]
    else:
        assert len(captures) == 1 and decided.status is ActionStatus.REJECTED
        assert item in result.open_items
    assert result.outcome is not None and result.outcome.startswith("contained")


async def test_a_case_opened_again_under_its_id_keeps_its_evidence_apart(time_skipping_env):
    """A finding delivered after its case closed opens a new case under the same id: it
    keeps its evidence in a folder of its own, never the earlier case's objects."""
    fake = FakeAws()
    queue = f"q-{uuid.uuid4()}"
    folders: list[str] = []
    async with _worker(time_skipping_env, fake, queue):
        first = await _start_waiting_long(time_skipping_env, queue)
        case_id = first.id
        for handle in (first, None):
            if handle is None:
                handle = await time_skipping_env.client.start_workflow(
                    CaseWorkflow.run,
                    CaseInput(case_id=case_id, finding=finding(), policy=CasePolicy()),
                    id=case_id,
                    task_queue=queue,
                )
            waiting = await _wait_for(handle, _pending("contain-"))
            await handle.signal(
                CaseWorkflow.reject,
                _approval(waiting.pending_actions()[0].id).model_copy(update={"reason": "test"}),
            )
            result = await _result(handle)
            folders.append(result.folder)

    assert len(set(folders)) == 2 and all(f.startswith(f"{case_id}/") for f in folders)
    stored = [call.case_id for name, call in fake.calls if name == "store_evidence"]
    assert sorted(set(stored)) == sorted(folders)
    reports = [call.status.folder for name, call in fake.calls if name == "write_report"]
    assert reports == folders


async def test_a_denied_deactivation_denies_the_user_everything_and_the_case_goes_on(
    time_skipping_env,
):
    """UpdateAccessKey denied: the user's older tokens are denied, then the user is denied
    everything, so the key is useless while it stays active; the case goes on and the
    deactivation is offered for a retry beside it, named with its call."""
    fake = FakeAws(kind=CredentialKind.IAM_USER_KEY)
    fake.has_login_profile = False
    fake.fail_next["deactivate_access_key"] = _denied(
        "iam:UpdateAccessKey", f"deactivate {STOLEN_KEY}"
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        waiting = await _wait_for(handle, _pending("retry-"))
        (retry,) = [a for a in waiting.pending_actions() if a.id.startswith("retry-")]
        assert retry.title == f"Retry: deactivate {STOLEN_KEY}"
        assert "(call iam:UpdateAccessKey)" in retry.steps[0]
        assert waiting.phase is not Phase.NEEDS_HUMAN
        containment = waiting.actions[0]
        assert containment.status is ActionStatus.DONE
        assert containment.outcome is not None and "denied everything" in containment.outcome
        (active,) = [i for i in waiting.open_items if i.startswith(f"{STOLEN_KEY} is still active")]
        assert "(call iam:UpdateAccessKey)" in active
        assert "denied everything by QuenchDenyAll meanwhile" in active
        await handle.signal(CaseWorkflow.approve, _approval(retry.id))
        await _wait_for(handle, _decided(retry.id))
        await _approve_the_rest(time_skipping_env, handle)
        result = await _result(handle)
        await _record(handle, "user_denied_everything_while_its_key_is_retried")

    names_ = fake.names()
    assert names_.count("deactivate_access_key") == 2
    first, second = [i for i, n in enumerate(names_) if n == "deactivate_access_key"]
    # The older tokens are denied beside the first deactivation, before everything is.
    assert first < names_.index("deny_user_everything")
    assert names_.index("deny_user_tokens_before") < names_.index("deny_user_everything")
    assert names_.index("deny_user_everything") < second
    assert result.outcome is not None and result.outcome.startswith("contained")
    assert active not in result.open_items
    # The tokens the key could still get are denied before anyone lifts the deny-everything.
    assert names_.count("deny_user_tokens_before") == 2
    assert second < len(names_) - names_[::-1].index("deny_user_tokens_before") - 1
    (lift,) = [i for i in result.open_items if "QuenchDenyAll" in i]
    assert lift.startswith(f"{STOLEN_KEY} is Inactive now and alice's tokens issued before ")
    assert lift.endswith("are denied: remove QuenchDenyAll from alice when alice may work again")


async def test_a_key_neither_deactivated_nor_denied_everything_waits_on_its_retry(
    time_skipping_env,
):
    """UpdateAccessKey and the deny-everything policy both denied: nothing makes the key
    useless, so the case waits on the deactivation's retry before it removes anything."""
    fake = FakeAws(kind=CredentialKind.IAM_USER_KEY)
    fake.has_login_profile = False
    fake.fail_next["deactivate_access_key"] = _denied(
        "iam:UpdateAccessKey", f"deactivate {STOLEN_KEY}"
    )
    fake.fail_next["deny_user_everything"] = _denied("iam:PutUserPolicy", "deny alice everything")
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        waiting = await _wait_for(handle, _pending("retry-"))
        (retry,) = waiting.pending_actions()
        assert retry.title == "Retry: deactivate the access key"
        assert waiting.phase is Phase.NEEDS_HUMAN
        assert any("denying alice everything failed too" in t.what for t in waiting.timeline)
        await handle.signal(CaseWorkflow.approve, _approval(retry.id))
        await _wait_for(handle, _decided(retry.id))
        await _approve_the_rest(time_skipping_env, handle)
        result = await _result(handle)

    assert fake.names().count("deactivate_access_key") == 2
    assert result.outcome is not None and result.outcome.startswith("contained")
    assert not any(i.startswith(f"{STOLEN_KEY} is still active") for i in result.open_items)


async def test_a_key_left_active_when_the_case_is_given_up_is_said_and_its_action_failed(
    time_skipping_env,
):
    """UpdateAccessKey and PutUserPolicy both denied (so neither the tokens' deny nor the
    deny-everything policy can be written), the deactivation's retry rejected: the case
    closes not contained, naming the active key and both calls; no action reads running."""
    fake = FakeAws(kind=CredentialKind.IAM_USER_KEY)
    fake.has_login_profile = False
    fake.fail_next["deactivate_access_key"] = _denied(
        "iam:UpdateAccessKey", f"deactivate {STOLEN_KEY}"
    )
    fake.fail_next["deny_user_tokens_before"] = _denied("iam:PutUserPolicy", "deny tokens of alice")
    fake.fail_next["deny_user_everything"] = _denied("iam:PutUserPolicy", "deny alice everything")
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        waiting = await _wait_for(handle, _pending("retry-"))
        (retry,) = waiting.pending_actions()
        assert retry.title == "Retry: deactivate the access key"
        assert "(call iam:UpdateAccessKey)" in retry.steps[0]
        await handle.signal(
            CaseWorkflow.reject, _approval(retry.id).model_copy(update={"reason": "by hand"})
        )
        result = await _result(handle)

    assert result.phase is Phase.CLOSED
    items = " ".join(result.open_items)
    assert f"{STOLEN_KEY} is still active: deactivating it failed" in items
    assert "(call iam:UpdateAccessKey)" in items
    assert "alice's tokens issued before " in items and " are not denied: " in items
    assert "(call iam:PutUserPolicy)" in items
    assert "not done: deactivate the access key: " in items
    assert f"{STOLEN_KEY} is not contained (contain-key-1 is failed (approved by " in items
    assert not any(a.status is ActionStatus.RUNNING for a in result.actions)
    containment = result.actions[0]
    assert containment.status is ActionStatus.FAILED
    assert containment.outcome is not None
    assert "gave up after failing to deactivate the access key" in containment.outcome
    (markdown,) = fake.report_markdown
    assert "**Containment:** not contained." in markdown


async def test_older_tokens_not_denied_are_an_open_item_and_retried_beside_the_case(
    time_skipping_env,
):
    """PutUserPolicy denied once: the key is deactivated, the case goes on, the tokens'
    deny is an open item naming the call and offered for a retry beside the case."""
    fake = FakeAws(kind=CredentialKind.IAM_USER_KEY)
    fake.has_login_profile = False
    fake.fail_next["deny_user_tokens_before"] = _denied("iam:PutUserPolicy", "deny tokens of alice")
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        waiting = await _wait_for(handle, _pending("retry-"))
        (retry,) = [a for a in waiting.pending_actions() if a.id.startswith("retry-")]
        assert retry.title == "Retry: deny alice's older tokens"
        assert waiting.phase is not Phase.NEEDS_HUMAN
        assert waiting.actions[0].status is ActionStatus.DONE
        (tokens,) = [i for i in waiting.open_items if " are not denied: " in i]
        assert "(call iam:PutUserPolicy)" in tokens
        assert "deny_user_everything" not in fake.names()
        await handle.signal(CaseWorkflow.approve, _approval(retry.id))
        await _wait_for(handle, _decided(retry.id))
        await _approve_the_rest(time_skipping_env, handle)
        result = await _result(handle)
        await _record(handle, "older_tokens_denied_on_a_retry_beside_the_case")

    assert fake.names().count("deny_user_tokens_before") == 2
    assert fake.names().count("deactivate_access_key") == 1
    assert result.outcome is not None and result.outcome.startswith("contained")
    assert tokens not in result.open_items


async def test_a_minted_key_is_deactivated_before_removals_so_a_failed_removal_leaves_it_contained(
    time_skipping_env,
):
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _key_minted_on_a_user_it_did_not_make()}
    fake.fail_next["remove_resource"] = _denied(
        "iam:DeleteAccessKey", f"delete_access_key {MINTED} of alice"
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _run_until_only_the_retry_waits(time_skipping_env, handle)
        (offer,) = waiting.pending_actions()
        await handle.signal(
            CaseWorkflow.reject, _approval(offer.id).model_copy(update={"reason": "by hand"})
        )
        await _wait_for(handle, _decided(offer.id))
        result = await _result(handle)
        await _record(handle, "minted_key_deactivated_before_removal")

    eradicate = next(a for a in result.actions if a.id.startswith("eradicate-"))
    assert eradicate.steps[0] == (f"Deactivate {MINTED} of alice first: the attacker minted it")
    names = fake.names()
    deactivated = [
        i
        for i, (name, call) in enumerate(fake.calls)
        if name == "deactivate_access_key" and call.access_key_id == MINTED
    ]
    assert len(deactivated) == 1 and deactivated[0] < names.index("remove_resource")
    first = result.eradication[0]
    assert first.deactivated == [MINTED]
    assert [s.outcome for s in first.steps] == ["failed"]
    # Its deletion failed and was left to a human, but it is contained: the case says so.
    assert MINTED not in result.uncontained
    assert not any("nothing the case did contains it" in item for item in result.open_items)
    assert any(MINTED in item and "still in AWS" in item for item in result.open_items)
    assert result.outcome == "contained"


async def test_a_rejected_containment_still_waits_for_the_evidence_retry_before_closing(
    time_skipping_env,
):
    fake = FakeAws()
    fake.fail_next["capture_instance_state"] = _denied(
        "ec2:DescribeInstances", "describe instance i-0a1b2c3d4e5f60718"
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        containment = next(a for a in waiting.pending_actions() if a.id.startswith("contain-"))
        (offer,) = [a for a in waiting.pending_actions() if a.id.startswith("retry-")]
        # Its state unknown, the instance is stopped and started: the approver is told.
        assert "its state could not be read" in " ".join(containment.steps)
        await handle.signal(
            CaseWorkflow.reject,
            _approval(containment.id).model_copy(update={"reason": "a test instance"}),
        )
        status = await _wait_for(handle, _decided(containment.id))
        status = await _wait_for(handle, lambda s: s.phase is Phase.NEEDS_HUMAN)
        assert f"waiting for a decision on {offer.id} before closing" in status.phases[-1].note
        await handle.signal(
            CaseWorkflow.reject, _approval(offer.id).model_copy(update={"reason": "not needed"})
        )
        result = await _result(handle)

    assert result.phase is Phase.CLOSED
    assert result.outcome == "containment rejected by alice: a test instance"
    assert next(a for a in result.actions if a.id == offer.id).status is ActionStatus.REJECTED
    assert not result.pending_actions()
    assert "snapshot_volumes" not in fake.names()


@pytest.mark.parametrize(
    ("activity", "call", "item"),
    [
        ("stop_instance", "ec2:StopInstances", "was not stopped and started"),
        ("start_instance", "ec2:StartInstances", "is stopped: starting it failed"),
        ("probe_instance_credentials", "ssm:SendCommand", "is not verified"),
        ("start_trails_logging", "cloudtrail:StartLogging", "could not be started"),
    ],
)
async def test_once_the_sessions_are_revoked_a_failed_step_of_containment_holds_nothing_up(
    time_skipping_env, activity, call, item
):
    """The role's sessions revoked, the stolen key is denied: a stop, start, check or
    trail restart that fails for good is an open item naming its call, and the watch,
    the rounds and the recovery go on."""
    fake = FakeAws()
    fake.trails_not_logging = ["management-events"]
    fake.attacker_records = {STOLEN_KEY: _attack_records()}
    fake.fail_next[activity] = _denied(call, activity.replace("_", " "))
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start_waiting_long(time_skipping_env, queue)
        await _run_until_only_the_retry_waits(time_skipping_env, handle)
        result = await _result(handle)
        if activity == "stop_instance":
            await _record(handle, "instance_not_rotated_the_case_goes_on")

    assert "revoke_role_sessions" in fake.names()
    (opened,) = [i for i in result.open_items if item in i]
    assert f"(call {call})" in opened
    containment = result.actions[0]
    assert containment.status is ActionStatus.DONE
    # Nothing waited on a retry of the failed step; the rounds ran and the case closed.
    assert not any(a.kind is ActionKind.RETRY for a in result.actions)
    assert "remove_resource" in fake.names()
    # Contained: only the federation token the rounds found is not (a human's to contain).
    assert result.phase is Phase.CLOSED
    assert result.outcome == "partly contained: contained, but not ASIAFEDERATED0000001"
    if activity == "stop_instance":
        assert "start_instance" not in fake.names()
