"""Policies the attacker wrote onto, deleted from or detached from a user or role it did
not make, against moto: what was there before is found from CloudTrail and the principal's
age, and only a version whose origin is known is put back, once."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.evidence import EvidenceStore
from activities.faults import FaultInjector, parse_fault_plan
from activities.recovery import RecoveryActivities
from models.activities import FindPriorStateInput, PlanRecoveryInput, RestoreChangeInput
from models.case import RecoveryOperation, RecoveryStep
from playbook.classify import AttackerChange, AttackerResource, ChangeKind, ResourceKind
from tests.activities.test_recovery import ADMIN_KEY, ATTACKER_KEY, CASE, RecordsSource, _record
from tests.support import ACCOUNT, REGION

ROLE = "audit-readonly"
POLICY = "audit-read"
READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
LOOKBACK = 30 * 24 * 3600
ORIGINAL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "cloudtrail:Describe*", "Resource": "*"}],
}
EVERYTHING = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def role(iam: Any) -> str:
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    return ROLE


def _recovery(
    clients: AwsClients, evidence: EvidenceStore, records: list[dict[str, Any]] | None = None
) -> RecoveryActivities:
    return RecoveryActivities(clients, evidence, RecordsSource(records or []))


def _resource(kind: ResourceKind, name: str, at: datetime) -> AttackerResource:
    return AttackerResource(
        kind=kind,
        name=name,
        owner=ROLE,
        made_by=ATTACKER_KEY,
        event_id=f"{kind.value}-{name}",
        event_time=_stamp(at),
    )


def _states(activities: RecoveryActivities, resources: list[AttackerResource]) -> list[str]:
    request = FindPriorStateInput(
        account_id=ACCOUNT, resources=resources, attacker_keys=[], lookback_seconds=LOOKBACK
    )
    result = ActivityEnvironment().run(activities.find_prior_state, request)
    return [s.state for s in result.states]


def _change(kind: ChangeKind, target: str, detail: str, at: datetime) -> AttackerChange:
    return AttackerChange(
        kind=kind,
        target=target,
        detail=detail,
        made_by=ATTACKER_KEY,
        event_id=f"{kind.value}-{detail}",
        event_time=_stamp(at),
    )


def _plan(activities: RecoveryActivities, changes: list[AttackerChange]) -> list[RecoveryStep]:
    request = PlanRecoveryInput(
        case_id=CASE,
        account_id=ACCOUNT,
        changes=changes,
        trail_evidence=None,
        lookback_seconds=LOOKBACK,
        attacker_keys=[ATTACKER_KEY],
    )
    return ActivityEnvironment().run(activities.plan_recovery, request).steps


def _restore(activities: RecoveryActivities, step: RecoveryStep) -> Any:
    return ActivityEnvironment().run(
        activities.restore_change, RestoreChangeInput(case_id=CASE, step=step)
    )


def test_a_policy_put_or_attached_by_someone_else_before_existed(clients, evidence, role):
    now = datetime.now(UTC)
    earlier = now - timedelta(days=2)
    records = [
        _record("PutRolePolicy", ADMIN_KEY, earlier, {"roleName": ROLE, "policyName": POLICY}),
        _record("AttachRolePolicy", ADMIN_KEY, earlier, {"roleName": ROLE, "policyArn": READ_ONLY}),
        # The attacker's own earlier write says nothing about what was there before.
        _record("AttachRolePolicy", ATTACKER_KEY, earlier, {"roleName": ROLE, "policyArn": ADMIN}),
    ]
    source = RecordsSource(records)
    activities = RecoveryActivities(clients, evidence, source)

    states = _states(
        activities,
        [
            _resource(ResourceKind.ROLE_INLINE_POLICY, POLICY, now),
            _resource(ResourceKind.ROLE_POLICY_ATTACHMENT, READ_ONLY, now),
            _resource(ResourceKind.ROLE_POLICY_ATTACHMENT, ADMIN, now),
        ],
    )

    # The role was made inside the window: nobody else attached AdministratorAccess.
    assert states == ["existed", "existed", "absent"]
    # CloudTrail is read once for the role, not once for each of its policies.
    assert len(source.queries) == 1


def test_a_policy_deleted_or_detached_since_did_not_exist_before(clients, evidence, role):
    now = datetime.now(UTC)
    records = [
        _record(
            "PutRolePolicy",
            ADMIN_KEY,
            now - timedelta(days=3),
            {"roleName": ROLE, "policyName": POLICY},
        ),
        _record(
            "DeleteRolePolicy",
            ADMIN_KEY,
            now - timedelta(days=1),
            {"roleName": ROLE, "policyName": POLICY},
        ),
    ]
    activities = _recovery(clients, evidence, records)

    assert _states(activities, [_resource(ResourceKind.ROLE_INLINE_POLICY, POLICY, now)]) == [
        "absent"
    ]


def test_a_role_older_than_the_window_with_no_record_is_unknown(clients, evidence, role):
    # Seen from two months on, the role was made before the 30 days CloudTrail is searched.
    later = datetime.now(UTC) + timedelta(days=60)
    activities = _recovery(clients, evidence)

    assert _states(activities, [_resource(ResourceKind.ROLE_INLINE_POLICY, POLICY, later)]) == [
        "unknown"
    ]


def test_a_role_whose_age_cannot_be_read_is_unknown_naming_the_denied_call(
    boto3_session, evidence, role
):
    """GetRole denied: that policy's prior state is unknown (the round goes on, removing
    it with the attacker's version kept), and why names the call."""
    faults = FaultInjector(parse_fault_plan({"iam:GetRole": "access_denied"}))
    clients = AwsClients(boto3_session, REGION, faults=faults)
    activities = _recovery(clients, evidence)
    request = FindPriorStateInput(
        account_id=ACCOUNT,
        resources=[_resource(ResourceKind.ROLE_INLINE_POLICY, POLICY, datetime.now(UTC))],
        attacker_keys=[],
        lookback_seconds=LOOKBACK,
    )

    (state,) = ActivityEnvironment().run(activities.find_prior_state, request).states

    assert state.state == "unknown"
    assert "AccessDenied" in state.source and "(call iam:GetRole)" in state.source


def test_a_replaced_inline_policy_is_restored_once_and_the_attackers_version_kept(
    clients, evidence, iam, role, s3
):
    now = datetime.now(UTC)
    iam.put_role_policy(RoleName=ROLE, PolicyName=POLICY, PolicyDocument=json.dumps(EVERYTHING))
    records = [
        _record(
            "PutRolePolicy",
            ADMIN_KEY,
            now - timedelta(days=2),
            {"roleName": ROLE, "policyName": POLICY, "policyDocument": json.dumps(ORIGINAL)},
        )
    ]
    activities = _recovery(clients, evidence, records)

    (step,) = _plan(activities, [_change(ChangeKind.ROLE_POLICY, ROLE, POLICY, now)])
    first, second = _restore(activities, step), _restore(activities, step)

    assert step.operation is RecoveryOperation.RESTORE_INLINE_POLICY
    assert step.source is not None and "PutRolePolicy" in step.source
    assert (first.outcome, second.outcome) == ("restored", "already_restored")
    document = iam.get_role_policy(RoleName=ROLE, PolicyName=POLICY)["PolicyDocument"]
    assert document == ORIGINAL
    kept = s3.get_object(Bucket=first.evidence.bucket, Key=first.evidence.key)["Body"].read()
    assert json.loads(kept)["document"] == EVERYTHING


def test_an_inline_policy_new_with_the_attacker_has_nothing_to_restore(clients, evidence, role):
    activities = _recovery(clients, evidence)

    (step,) = _plan(activities, [_change(ChangeKind.ROLE_POLICY, ROLE, POLICY, datetime.now(UTC))])

    assert (step.operation, step.outcome, step.manual) == (None, "not_needed", None)


def test_an_inline_policy_with_no_known_earlier_version_goes_to_a_human(clients, evidence, role):
    activities = _recovery(clients, evidence)
    later = datetime.now(UTC) + timedelta(days=60)

    (step,) = _plan(activities, [_change(ChangeKind.ROLE_POLICY, ROLE, POLICY, later)])

    assert step.operation is None and step.manual is not None
    assert f"inline policy {POLICY} of role {ROLE}" in step.manual


def test_a_detached_policy_is_attached_again_once(clients, evidence, iam, role):
    arn = iam.create_policy(PolicyName="audit", PolicyDocument=json.dumps(ORIGINAL))["Policy"][
        "Arn"
    ]
    activities = _recovery(clients, evidence)
    later = datetime.now(UTC) + timedelta(days=60)

    (step,) = _plan(activities, [_change(ChangeKind.ROLE_POLICY_DETACHED, ROLE, arn, later)])
    first, second = _restore(activities, step), _restore(activities, step)

    assert step.operation is RecoveryOperation.REATTACH_POLICY
    assert (first.outcome, second.outcome) == ("restored", "already_restored")
    attached = iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [arn]


def _managed_policy(iam: Any) -> str:
    arn = iam.create_policy(PolicyName="deploy", PolicyDocument=json.dumps(ORIGINAL))["Policy"][
        "Arn"
    ]
    iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=json.dumps(EVERYTHING), SetAsDefault=True
    )
    return str(arn)


def test_a_new_default_version_goes_back_to_the_only_version_before_it(clients, evidence, iam):
    arn = _managed_policy(iam)
    activities = _recovery(clients, evidence)

    (step,) = _plan(activities, [_change(ChangeKind.POLICY_VERSION, arn, "v2", datetime.now(UTC))])
    first, second = _restore(activities, step), _restore(activities, step)

    assert step.restore_to == {"default_version": "v1", "delete_versions": ["v2"]}
    assert (first.outcome, second.outcome) == ("restored", "already_restored")
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert [(v["VersionId"], v["IsDefaultVersion"]) for v in versions] == [("v1", True)]


def test_the_default_version_before_comes_from_cloudtrail_when_there_are_several(
    clients, evidence, iam
):
    arn = _managed_policy(iam)  # v1, then v2 made default by the administrator
    iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=json.dumps(EVERYTHING), SetAsDefault=True
    )
    now = datetime.now(UTC)
    records = [
        {
            **_record(
                "CreatePolicyVersion",
                ADMIN_KEY,
                now - timedelta(days=1),
                {"policyArn": arn, "setAsDefault": True},
            ),
            "responseElements": {"policyVersion": {"versionId": "v2", "isDefaultVersion": True}},
        }
    ]
    activities = _recovery(clients, evidence, records)

    (step,) = _plan(activities, [_change(ChangeKind.POLICY_VERSION, arn, "v3", now)])
    _restore(activities, step)

    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert sorted((v["VersionId"], v["IsDefaultVersion"]) for v in versions) == [
        ("v1", False),
        ("v2", True),
    ]


def test_a_default_version_changed_with_no_known_origin_goes_to_a_human(clients, evidence, iam):
    arn = _managed_policy(iam)
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(EVERYTHING))
    activities = _recovery(clients, evidence)

    # SetDefaultPolicyVersion makes no version: v1, v2 and v3 are all the owner's.
    (step,) = _plan(activities, [_change(ChangeKind.POLICY_VERSION, arn, "", datetime.now(UTC))])

    assert step.operation is None and step.manual is not None and "v1, v2, v3" in step.manual
