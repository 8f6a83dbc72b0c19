"""An organisation's accounts, with every real piece: a finding from a member account is
handled in that account through the role Quench assumes there, and nowhere else; a finding
of an account Quench does not manage starts nothing; a managed account without Quench's
role gets a case that says so, and changes nothing."""

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from temporalio.service import RPCError

from config import names
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab.guardduty import eventbridge_event, instance_role_finding, user_key_finding
from lab.organization import (
    MANAGEMENT_ACCOUNT,
    MEMBERS,
    NOT_MANAGED,
    RESPONDER_ROLE,
    SCENARIO_ACCOUNT,
    WITHOUT_RESPONDER_ROLE,
    CrossAccountAttackReport,
    MemberReturnReport,
    attack_member,
    attacker_returns_to_member,
    iam_state,
    in_account,
    seed_organization,
)
from lab.scenario import WORLD_FILE, run_scenario, send_finding
from lab.world import ACCOUNT_ID, APP_ROLE, EVIDENCE_BUCKET, ensure_notifications, seed
from models.case import ActionKind, ActionStatus, ApprovalInput, Phase
from stack.embedded import LAB_WORKER_KEY, EmbeddedStack
from tests.e2e.support import (
    approve_in_process,
    aws,
    lab_stack_config,
    run_starter,
    s3_text,
    starter_approve,
    wait_for,
)
from workflows.case import CaseWorkflow

pytestmark = pytest.mark.e2e
EVERY_ACCOUNT = [ACCOUNT_ID, *MEMBERS, WITHOUT_RESPONDER_ROLE]
HEADER = Settings(lab=True).webhook_token_header
CONTAINMENT = {ActionKind.CONTAIN_INSTANCE_ROLE, ActionKind.CONTAIN_ROLE_SESSION}


@pytest.fixture(scope="module")
def org_stack(tmp_path_factory):
    """A stack of its own, so no other test's case changes an account while this module
    checks that nothing changed there."""
    config = lab_stack_config(tmp_path_factory.mktemp("quench-org"))
    stack = EmbeddedStack(config)
    stack.start()
    # The security account (its evidence bucket, its own application), saved as the lab's
    # world, so the cross-account scenario finds it.
    world = seed(stack.aws_url)
    (stack.state_dir / WORLD_FILE).write_text(world.model_dump_json())
    ensure_notifications(stack.aws_url)
    organization_members = seed_organization(stack.aws_url)
    yield stack, organization_members
    stack.stop()


def _states(stack, accounts) -> dict[str, dict]:
    return {account: iam_state(stack.aws_url, account) for account in accounts}


def _revocation(stack, account: str) -> dict | None:
    iam = in_account(account, "iam", stack.aws_url)
    try:
        return iam.get_role_policy(RoleName=APP_ROLE, PolicyName=names.REVOKE_SESSIONS_POLICY_NAME)
    except iam.exceptions.NoSuchEntityException:
        return None


async def _member_case(stack, members, account: str) -> tuple[CrossAccountAttackReport, str]:
    """The attack on the member account and its case: web-prod's through the lab's
    cross-account scenario, as `starter.py lab cross-account` runs it."""
    if account == SCENARIO_ACCOUNT:
        case = await asyncio.to_thread(
            run_scenario,
            stack.aws_url,
            stack.webhook_url,
            LAB_WEBHOOK_TOKEN,
            HEADER,
            stack.state_dir,
            "cross-account",
        )
        return case.attack, case.case_id
    attack = await asyncio.to_thread(attack_member, stack.aws_url, members[account])
    event = eventbridge_event(attack.finding)
    case_id = await asyncio.to_thread(
        send_finding, stack.webhook_url, LAB_WEBHOOK_TOKEN, HEADER, event
    )
    return attack, case_id


async def _handle(stack, case_id: str):
    client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
    return client, client.get_workflow_handle_for(CaseWorkflow.run, case_id)


async def _drive(stack, handle, case_id: str, attack, returns: bool) -> list[MemberReturnReport]:
    """Approve each action as it comes until the case closes with its report. With
    `returns`, the attacker comes back once the watch starts (deleting the revocation
    policy with the backdoor key), and again once the account is quarantined."""
    approved: set[str] = set()
    came_back: list[MemberReturnReport] = []
    async with asyncio.timeout(300):
        while True:
            status = await handle.query(CaseWorkflow.status)
            if status.phase is Phase.CLOSED and status.report is not None:
                return came_back
            quarantined = status.quarantine is not None and status.quarantine.lifted_at is None
            if returns and (
                (not came_back and status.phase is Phase.WATCHING)
                or (len(came_back) == 1 and quarantined)
            ):
                came_back.append(
                    await asyncio.to_thread(attacker_returns_to_member, stack.aws_url, attack)
                )
            for action in status.pending_actions():
                if action.id not in approved:
                    # The first with Quench's command line; the rest as it sends them.
                    if approved:
                        await approve_in_process(handle, action.id)
                    else:
                        await starter_approve(stack, case_id, action.id)
                    approved.add(action.id)
            await asyncio.sleep(0.5)


def _scps(stack, account: str) -> list[str]:
    org = in_account(MANAGEMENT_ACCOUNT, "organizations", stack.aws_url)
    attached = org.list_policies_for_target(TargetId=account, Filter="SERVICE_CONTROL_POLICY")
    return [p["Name"] for p in attached["Policies"] if not p["AwsManaged"]]


@pytest.mark.parametrize("account", list(MEMBERS))
async def test_a_member_accounts_case_is_handled_there_and_nowhere_else(org_stack, account):
    """web-prod's case is the lab's cross-account scenario, where the attacker undoes the
    containment during the watch and the case quarantines the account; web-staging's is
    the same theft without the return."""
    stack, members = org_stack
    others = [a for a in EVERY_ACCOUNT if a != account]
    before = await asyncio.to_thread(_states, stack, others)
    attack, case_id = await _member_case(stack, members, account)
    assert case_id == names.case_workflow_id(account, attack.stolen_access_key_id)
    _, handle = await _handle(stack, case_id)
    scenario = account == SCENARIO_ACCOUNT
    came_back = await _drive(stack, handle, case_id, attack, returns=scenario)
    status = await handle.query(CaseWorkflow.status)

    assert status.account_id == account and status.outcome == "contained"
    assert all(action.account_id == account for action in status.actions)
    # Contained and cleaned up in the member account: its role's older sessions are
    # denied, and the backdoor the attacker made there is gone.
    assert _revocation(stack, account) is not None
    member_iam = in_account(account, "iam", stack.aws_url)
    with pytest.raises(member_iam.exceptions.NoSuchEntityException):
        member_iam.get_user(UserName=attack.backdoor_user)
    assert status.open_items == [], status.open_items
    # The same role name in every other account, and everything else there, untouched.
    assert await asyncio.to_thread(_states, stack, others) == before
    # Evidence is central, in the security account's bucket, and names the account.
    assert status.evidence and status.report
    for record in [*status.evidence, status.report.json_report]:
        assert record.bucket == EVIDENCE_BUCKET
        assert record.account_id == account, record.key
        head = aws(stack, "s3").head_object(Bucket=record.bucket, Key=record.key)
        assert head["Metadata"]["account-id"] == account
    role = next(e for e in status.evidence if e.name.startswith("iam-role-"))
    captured = json.loads(
        aws(stack, "s3").get_object(Bucket=role.bucket, Key=role.key)["Body"].read()
    )
    assert f":{account}:" in json.dumps(captured)
    kinds = [a.kind for a in status.actions]
    assert _scps(stack, account) == []  # no quarantine left behind, in either case
    if not scenario:
        assert ActionKind.QUARANTINE not in kinds and came_back == []
        return
    # The attacker deleted the revocation policy and its stolen session worked again; the
    # case quarantined the account, and the attacker's next calls were denied by the
    # organisation although the account's own revocation policy was still gone.
    first, second = came_back
    assert first.revocation_deleted and first.denied == 0
    assert (second.denied, second.denied_by_quarantine) == (2, 2)
    assert kinds.index(ActionKind.QUARANTINE) < kinds.index(ActionKind.RECONTAIN)
    assert kinds[-1] is ActionKind.LIFT_QUARANTINE
    assert status.quarantine is not None and status.quarantine.lifted_at is not None
    report = s3_text(stack, status.report.markdown_report)
    assert f"Quarantine account {account} with an SCP" in report
    assert f"Lift the quarantine of account {account}" in report
    # The scenario, asked again, says where its case stands, read in the member account.
    config = stack.config
    told = await run_starter(
        stack,
        "lab",
        "cross-account",
        *("--state-dir", str(stack.state_dir), "--temporal-port", str(config.temporal_port)),
        *("--ui-port", str(config.ui_port), "--lab-aws-port", str(config.lab_aws_port)),
        *("--webhook-port", str(config.webhook_port)),
    )
    assert "(run before: not run again)" in told
    assert f"in account {account} (web-prod)" in told, told
    assert "sessions of web-app-role revoked" in told and "user svc-metrics removed" in told


async def test_a_finding_of_an_account_not_managed_starts_nothing(org_stack):
    stack, _ = org_stack
    before = await asyncio.to_thread(_states, stack, EVERY_ACCOUNT)
    finding = instance_role_finding(
        account_id=NOT_MANAGED,
        region="us-east-1",
        access_key_id="ASIANOTMANAGED000001",
        principal_id="AROANOTMANAGED000001:i-0abc",
        role_name=APP_ROLE,
        instance_id="i-0abc",
        instance_profile_arn=f"arn:aws:iam::{NOT_MANAGED}:instance-profile/web-app-profile",
        instance_profile_id="AIPANOTMANAGED000001",
        remote_ip="198.51.100.23",
        api="GetCallerIdentity",
        service_name="sts.amazonaws.com",
        user_agent="aws-cli/2",
        first_seen=datetime.now(UTC),
        last_seen=datetime.now(UTC),
        count=1,
    )
    async with httpx.AsyncClient(base_url=stack.webhook_url, timeout=30) as http:
        response = await http.post(
            "/v1/events/eventbridge",
            json=eventbridge_event(finding),
            headers={HEADER: LAB_WEBHOOK_TOKEN},
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outcome"] == "ignored" and answer["case_id"] is None
    assert f"account {NOT_MANAGED} is not managed" in answer["reason"]
    client, handle = await _handle(
        stack, names.case_workflow_id(NOT_MANAGED, "ASIANOTMANAGED000001")
    )
    with pytest.raises(RPCError):
        await handle.describe()
    query = f"{names.SA_ACCOUNT_ID.name} = '{NOT_MANAGED}'"
    listed = [w async for w in client.list_workflows(query)]
    assert listed == []
    assert await asyncio.to_thread(_states, stack, EVERY_ACCOUNT) == before


async def test_a_role_that_cannot_be_assumed_is_an_open_item_and_nothing_is_done(org_stack):
    stack, members = org_stack
    before = await asyncio.to_thread(_states, stack, EVERY_ACCOUNT)
    member = members[WITHOUT_RESPONDER_ROLE]
    attack = await asyncio.to_thread(attack_member, stack.aws_url, member)
    # The attack made its backdoor in the account; nothing else may change anywhere.
    before[WITHOUT_RESPONDER_ROLE] = await asyncio.to_thread(
        iam_state, stack.aws_url, WITHOUT_RESPONDER_ROLE
    )
    case_id = await asyncio.to_thread(
        send_finding,
        stack.webhook_url,
        LAB_WEBHOOK_TOKEN,
        HEADER,
        eventbridge_event(attack.finding),
    )
    _, handle = await _handle(stack, case_id)
    role_arn = f"arn:aws:iam::{WITHOUT_RESPONDER_ROLE}:role/{RESPONDER_ROLE}"

    def names_the_failed_assumption(status) -> bool:
        return any(role_arn in item and "AccessDenied" in item for item in status.open_items)

    status = await wait_for(handle, names_the_failed_assumption)
    item = next(i for i in status.open_items if role_arn in i)
    assert f"cannot act in account {WITHOUT_RESPONDER_ROLE} (web-dev)" in item
    assert "sts:AssumeRole" in item
    # Containment, once approved, fails the same way and says so; nothing falls back to
    # the worker's own credentials, in its own account or any other.
    # Unconfirmed (IAM could not be read), the principal is contained as the role session
    # the finding names.
    status = await wait_for(
        handle, lambda status: any(a.kind in CONTAINMENT for a in status.pending_actions())
    )
    contain = next(a for a in status.pending_actions() if a.kind in CONTAINMENT)
    await starter_approve(stack, case_id, contain.id)

    def revocation_failed(status) -> bool:
        return any(
            a.title == "Retry: revoke the role's sessions" and role_arn in a.steps[0]
            for a in status.pending_actions()
        )

    status = await wait_for(handle, revocation_failed)
    assert status.phase is Phase.NEEDS_HUMAN
    assert "failed to revoke the role's sessions" in status.phases[-1].note
    assert _revocation(stack, WITHOUT_RESPONDER_ROLE) is None
    assert await asyncio.to_thread(_states, stack, EVERY_ACCOUNT) == before


def _hiding_behind(stack, who: str) -> dict:
    """A finding of the attacker hiding behind Quench's role in a member account, the
    worker's own key, or a protected user of web-prod."""
    now = datetime.now(UTC)
    seen: dict[str, Any] = {"first_seen": now, "last_seen": now, "count": 1, "region": "us-east-1"}
    call: dict[str, Any] = {
        "api": "ListBuckets",
        "service_name": "s3.amazonaws.com",
        "user_agent": "aws-cli/2",
    }
    if who == "quench-role":
        account = "222222222222"  # web-staging
        return instance_role_finding(
            account_id=account,
            access_key_id="ASIAHIDINGBEHINDQUEN",
            principal_id="AROAHIDINGBEHINDQUEN:i-0abc",
            role_name=RESPONDER_ROLE,
            instance_id="i-0abc",
            instance_profile_arn=f"arn:aws:iam::{account}:instance-profile/web-app-profile",
            instance_profile_id="AIPAHIDINGBEHINDQUEN",
            remote_ip="198.51.100.23",
            **seen,
            **call,
        )
    if who == "worker-key":
        account, key, user = ACCOUNT_ID, LAB_WORKER_KEY, "quench-worker"
    else:
        account, user = SCENARIO_ACCOUNT, "break-glass-admin"
        iam = in_account(account, "iam", stack.aws_url)
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    return user_key_finding(
        account_id=account,
        access_key_id=key,
        principal_id="AIDAHIDINGBEHINDQUEN",
        user_name=user,
        remote_ip="198.51.100.23",
        **seen,
        **call,
    )


@pytest.mark.parametrize("who", ["quench-role", "worker-key", "protected-user"])
async def test_an_attacker_hiding_behind_quench_or_a_protected_user_changes_nothing(org_stack, who):
    stack, _ = org_stack
    finding = await asyncio.to_thread(_hiding_behind, stack, who)
    before = await asyncio.to_thread(_states, stack, EVERY_ACCOUNT)
    case_id = await asyncio.to_thread(
        send_finding, stack.webhook_url, LAB_WEBHOOK_TOKEN, HEADER, eventbridge_event(finding)
    )
    _, handle = await _handle(stack, case_id)
    status = await wait_for(
        handle, lambda s: any(a.id.startswith("manual-") for a in s.pending_actions())
    )
    by_hand = next(a for a in status.pending_actions() if a.id.startswith("manual-"))
    if who == "protected-user":
        assert not status.quench_own
        assert status.hands_off == "break-glass-admin is on the protected list"
        (contain,) = [a for a in status.pending_actions() if a is not by_hand]
        assert (contain.kind, contain.approvals_needed) == (ActionKind.CONTAIN_USER_KEY, 2)
        # One approval of the two: nothing is done yet.
        await starter_approve(stack, case_id, contain.id)
        await wait_for(handle, lambda s: any(a.endorsements for a in s.pending_actions()))
    else:
        assert status.quench_own
        assert "Quench's own" in (status.hands_off or "")
        # Only a human may contain it (evidence of what does not exist may wait a retry).
        pending = [a.kind for a in status.pending_actions() if a is not by_hand]
        assert set(pending) <= {ActionKind.RETRY}
    for action in status.pending_actions():
        if action.kind is not ActionKind.CONTAIN_USER_KEY:
            await handle.signal(
                CaseWorkflow.reject,
                ApprovalInput(action_id=action.id, approver="alice", reason="looked into it"),
            )
    result = await wait_for(handle, lambda s: s.phase is Phase.CLOSED)
    assert result.outcome == "not contained: alice: looked into it"
    assert all(a.status is not ActionStatus.DONE for a in result.actions)
    assert await asyncio.to_thread(_states, stack, EVERY_ACCOUNT) == before
