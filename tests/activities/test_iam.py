"""IAM activities against moto: resolving the principal, capturing a role, revoking sessions."""

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import ERROR_INVALID_REQUEST, ERROR_NOT_FOUND, AwsClients
from activities.evidence import EvidenceStore
from activities.iam import IamActivities, trusted_principals, validate_role_name
from config.names import REVOKE_SESSIONS_POLICY_NAME
from lab.world import EC2_TRUST_POLICY
from models.activities import (
    CaptureRoleInput,
    ContainmentInPlaceInput,
    ResolvePrincipalInput,
    RevokeRoleSessionsInput,
    RoleTrustInput,
)
from models.finding import Finding, finding_from_guardduty
from models.principal import CredentialKind, PrincipalType
from tests.support import ACCOUNT, ROLE, STOLEN_KEY, finding, finding_detail

CASE = f"case-{ACCOUNT}-{STOLEN_KEY}"
PROFILE = "web-app-profile"
ROLE_ID_PREFIX = "AROAEXAMPLEROLEID0001"

TRUST_POLICY = EC2_TRUST_POLICY
INLINE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
}
MANAGED_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*"}],
}


@pytest.fixture
def iam_activities(clients: AwsClients, evidence: EvidenceStore) -> IamActivities:
    return IamActivities(clients, evidence)


def create_role(iam: Any, role_name: str = ROLE) -> str:
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))
    return str(role["Role"]["Arn"])


def create_profile(iam: Any, role_name: str, profile_name: str = PROFILE) -> str:
    profile = iam.create_instance_profile(InstanceProfileName=profile_name)
    iam.add_role_to_instance_profile(InstanceProfileName=profile_name, RoleName=role_name)
    return str(profile["InstanceProfile"]["Arn"])


def role_session_finding(instance_id: str) -> Finding:
    return finding(
        instance_id=instance_id,
        role_name=ROLE,
        principal_id=f"{ROLE_ID_PREFIX}:{instance_id}",
    )


def user_key_finding(
    access_key_id: str, user_name: str | None, user_type: str = "IAMUser"
) -> Finding:
    detail = finding_detail(access_key_id=access_key_id)
    keys = detail["resource"]["accessKeyDetails"]
    keys["principalId"] = "AIDAEXAMPLEUSERID0001"
    keys["userType"] = user_type
    if user_name is None:
        del keys["userName"]
    else:
        keys["userName"] = user_name
    del detail["resource"]["instanceDetails"]
    return finding_from_guardduty(detail)


def revocation_policy(iam: Any, role_name: str = ROLE) -> dict[str, Any]:
    document = iam.get_role_policy(RoleName=role_name, PolicyName=REVOKE_SESSIONS_POLICY_NAME)
    return dict(document["PolicyDocument"])


def revocation_cutoff(iam: Any, role_name: str = ROLE) -> str:
    statement = revocation_policy(iam, role_name)["Statement"][0]
    return str(statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"])


# resolve_principal


def test_resolve_principal_for_an_instance_role_session(
    iam: Any,
    launch_instance: Callable[..., str],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
) -> None:
    role_arn = create_role(iam)
    profile_arn = create_profile(iam, ROLE)
    instance_id = launch_instance(PROFILE)

    result = activity_env.run(
        iam_activities.resolve_principal,
        ResolvePrincipalInput(finding=role_session_finding(instance_id)),
    )

    credential = result.credential
    assert credential.access_key_id == STOLEN_KEY
    assert credential.kind is CredentialKind.INSTANCE_ROLE_SESSION
    principal = credential.principal
    assert principal.type is PrincipalType.ASSUMED_ROLE
    assert principal.account_id == ACCOUNT
    assert principal.role_name == ROLE
    assert principal.role_arn == role_arn
    assert principal.session_name == instance_id
    assert principal.instance_id == instance_id
    assert principal.instance_profile_arn == profile_arn
    assert principal.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/{instance_id}"


def test_resolve_principal_refuses_a_profile_that_does_not_carry_the_role(
    iam: Any,
    launch_instance: Callable[..., str],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
) -> None:
    create_role(iam)
    create_role(iam, "some-other-role")
    create_profile(iam, "some-other-role")
    instance_id = launch_instance(PROFILE)

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.resolve_principal,
            ResolvePrincipalInput(finding=role_session_finding(instance_id)),
        )
    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True
    assert "does not carry role web-app-role" in raised.value.message


def test_resolve_principal_refuses_an_instance_without_a_profile(
    iam: Any,
    launch_instance: Callable[..., str],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
) -> None:
    create_role(iam)
    instance_id = launch_instance()

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.resolve_principal,
            ResolvePrincipalInput(finding=role_session_finding(instance_id)),
        )
    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True
    assert "has no instance profile" in raised.value.message


def test_resolve_principal_reports_a_missing_role_as_not_found(
    iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.resolve_principal,
            ResolvePrincipalInput(finding=role_session_finding("i-0a1b2c3d4e5f60718")),
        )
    assert raised.value.type == ERROR_NOT_FOUND
    assert raised.value.non_retryable is True


def test_resolve_principal_finds_the_owner_of_a_user_key_without_a_user_name(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    iam.create_user(UserName="alice")
    access_key_id = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]

    result = activity_env.run(
        iam_activities.resolve_principal,
        ResolvePrincipalInput(finding=user_key_finding(access_key_id, user_name=None)),
    )

    credential = result.credential
    assert credential.access_key_id == access_key_id
    assert credential.kind is CredentialKind.IAM_USER_KEY
    assert credential.principal.type is PrincipalType.IAM_USER
    assert credential.principal.user_name == "alice"
    assert credential.principal.arn == f"arn:aws:iam::{ACCOUNT}:user/alice"


def test_resolve_principal_reports_an_unknown_user_key_as_not_found(
    iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.resolve_principal,
            ResolvePrincipalInput(finding=user_key_finding("AKIAEXAMPLENOSUCHKEY", user_name=None)),
        )
    assert raised.value.type == ERROR_NOT_FOUND
    assert raised.value.non_retryable is True
    assert "AKIAEXAMPLENOSUCHKEY" in raised.value.message


def test_resolve_principal_gives_the_real_arn_of_a_user_with_a_path(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    user_arn = iam.create_user(UserName="alice", Path="/engineering/")["User"]["Arn"]
    access_key_id = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]

    result = activity_env.run(
        iam_activities.resolve_principal,
        ResolvePrincipalInput(finding=user_key_finding(access_key_id, user_name="alice")),
    )

    assert result.credential.principal.arn == user_arn


def test_resolve_principal_recognises_a_root_access_key(
    iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    result = activity_env.run(
        iam_activities.resolve_principal,
        ResolvePrincipalInput(
            finding=user_key_finding("AKIAEXAMPLEROOTKEY01", user_name="Root", user_type="Root")
        ),
    )

    assert result.credential.kind is CredentialKind.ROOT
    assert result.credential.principal.arn == f"arn:aws:iam::{ACCOUNT}:root"


@pytest.mark.parametrize(
    "name", ["web-app-role; rm -rf /", "$(id)", "role`id`", "a b", "", "x" * 65, "../role"]
)
def test_validate_role_name_rejects_what_is_not_a_role_name(name: str) -> None:
    with pytest.raises(ApplicationError) as raised:
        validate_role_name(name)
    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True


def test_validate_role_name_rejects_a_trailing_newline() -> None:
    with pytest.raises(ApplicationError):
        validate_role_name("web-app-role\n")


# capture_role_state


@pytest.fixture
def captured_role(iam: Any) -> dict[str, str]:
    """A role with a trust policy, an inline policy, a customer managed policy and a profile."""
    role_arn = create_role(iam)
    iam.put_role_policy(
        RoleName=ROLE, PolicyName="read-objects", PolicyDocument=json.dumps(INLINE_POLICY)
    )
    policy_arn = iam.create_policy(
        PolicyName="list-users", PolicyDocument=json.dumps(MANAGED_POLICY)
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=ROLE, PolicyArn=policy_arn)
    profile_arn = create_profile(iam, ROLE)
    return {"role_arn": role_arn, "policy_arn": policy_arn, "profile_arn": profile_arn}


def test_capture_role_state_stores_the_role_and_its_policies_as_evidence(
    s3: Any,
    captured_role: dict[str, str],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
) -> None:
    record = activity_env.run(
        iam_activities.capture_role_state, CaptureRoleInput(case_id=CASE, role_name=ROLE)
    )

    assert record.key == f"cases/{CASE}/evidence/iam-role-{ROLE}.json"
    body = s3.get_object(Bucket=record.bucket, Key=record.key)["Body"].read()
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    document = json.loads(body)
    assert document["role"]["Arn"] == captured_role["role_arn"]
    assert document["trust_policy"] == TRUST_POLICY
    assert document["inline_policies"] == [{"name": "read-objects", "document": INLINE_POLICY}]
    [attached] = document["attached_policies"]
    assert attached["policy"]["Arn"] == captured_role["policy_arn"]
    assert attached["document"] == MANAGED_POLICY
    assert document["instance_profiles"] == [{"name": PROFILE, "arn": captured_role["profile_arn"]}]


def test_capture_role_state_twice_returns_the_first_record_and_writes_once(
    s3: Any,
    iam: Any,
    captured_role: dict[str, str],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
    evidence_keys: Callable[[], list[str]],
) -> None:
    request = CaptureRoleInput(case_id=CASE, role_name=ROLE)
    first = activity_env.run(iam_activities.capture_role_state, request)
    # The role changes between the attempts: the evidence stays what was first seen.
    iam.put_role_policy(
        RoleName=ROLE, PolicyName="added-later", PolicyDocument=json.dumps(INLINE_POLICY)
    )

    again = activity_env.run(iam_activities.capture_role_state, request)

    assert again == first
    assert evidence_keys() == [first.key]
    body = s3.get_object(Bucket=first.bucket, Key=first.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == first.sha256
    assert "added-later" not in [p["name"] for p in json.loads(body)["inline_policies"]]


def test_capture_role_state_of_a_missing_role_is_not_found(
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
    evidence_keys: Callable[[], list[str]],
) -> None:
    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.capture_role_state,
            CaptureRoleInput(case_id=CASE, role_name="no-such-role"),
        )
    assert raised.value.type == ERROR_NOT_FOUND
    assert raised.value.non_retryable is True
    assert evidence_keys() == []


# revoke_role_sessions

CUTOFF = datetime(2026, 11, 22, 7, 15, 30, 987654, tzinfo=UTC)


@pytest.mark.parametrize(
    "cutoff",
    [CUTOFF, CUTOFF.astimezone(timezone(timedelta(hours=2)))],
    ids=["utc", "utc+2"],
)
def test_revoke_role_sessions_denies_sessions_issued_before_the_cutoff(
    iam: Any,
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
    cutoff: datetime,
) -> None:
    create_role(iam)

    result = activity_env.run(
        iam_activities.revoke_role_sessions,
        RevokeRoleSessionsInput(role_name=ROLE, cutoff=cutoff),
    )

    assert result.changed is True
    assert result.policy_name == REVOKE_SESSIONS_POLICY_NAME
    assert result.cutoff_in_effect == datetime(2026, 11, 22, 7, 15, 30, tzinfo=UTC)
    assert revocation_policy(iam) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2026-11-22T07:15:30Z"}},
            }
        ],
    }


def test_revoke_role_sessions_twice_leaves_the_policy_unchanged(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_role(iam)
    request = RevokeRoleSessionsInput(role_name=ROLE, cutoff=CUTOFF)
    first = activity_env.run(iam_activities.revoke_role_sessions, request)
    policy_after_first = revocation_policy(iam)

    again = activity_env.run(iam_activities.revoke_role_sessions, request)

    assert first.changed is True
    assert again.changed is False
    assert again.cutoff_in_effect == first.cutoff_in_effect
    assert revocation_policy(iam) == policy_after_first
    assert iam.list_role_policies(RoleName=ROLE)["PolicyNames"] == [REVOKE_SESSIONS_POLICY_NAME]


def test_revoke_role_sessions_never_weakens_a_later_cutoff(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_role(iam)
    later = CUTOFF + timedelta(hours=1)
    activity_env.run(
        iam_activities.revoke_role_sessions, RevokeRoleSessionsInput(role_name=ROLE, cutoff=later)
    )

    result = activity_env.run(
        iam_activities.revoke_role_sessions, RevokeRoleSessionsInput(role_name=ROLE, cutoff=CUTOFF)
    )

    assert result.changed is False
    assert result.cutoff_in_effect == later.replace(microsecond=0)
    assert revocation_cutoff(iam) == "2026-11-22T08:15:30Z"


def test_revoke_role_sessions_moves_an_earlier_cutoff_forward(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_role(iam)
    activity_env.run(
        iam_activities.revoke_role_sessions,
        RevokeRoleSessionsInput(role_name=ROLE, cutoff=CUTOFF - timedelta(days=1)),
    )
    assert revocation_cutoff(iam) == "2026-11-21T07:15:30Z"

    result = activity_env.run(
        iam_activities.revoke_role_sessions, RevokeRoleSessionsInput(role_name=ROLE, cutoff=CUTOFF)
    )

    assert result.changed is True
    assert revocation_cutoff(iam) == "2026-11-22T07:15:30Z"


def test_revoke_role_sessions_keeps_a_later_cutoff_written_by_the_console(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_role(iam)
    console_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2026-11-22T09:00:00.000Z"}},
            }
        ],
    }
    iam.put_role_policy(
        RoleName=ROLE,
        PolicyName=REVOKE_SESSIONS_POLICY_NAME,
        PolicyDocument=json.dumps(console_policy),
    )

    result = activity_env.run(
        iam_activities.revoke_role_sessions, RevokeRoleSessionsInput(role_name=ROLE, cutoff=CUTOFF)
    )

    assert result.changed is False
    assert result.cutoff_in_effect == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert revocation_policy(iam) == console_policy


def test_revoke_role_sessions_reads_a_policy_with_a_single_statement_object(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_role(iam)
    later = {
        "Version": "2012-10-17",
        "Statement": {
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2026-11-22T09:00:00Z"}},
        },
    }
    iam.put_role_policy(
        RoleName=ROLE, PolicyName=REVOKE_SESSIONS_POLICY_NAME, PolicyDocument=json.dumps(later)
    )

    result = activity_env.run(
        iam_activities.revoke_role_sessions, RevokeRoleSessionsInput(role_name=ROLE, cutoff=CUTOFF)
    )

    assert result.changed is False
    assert revocation_policy(iam) == later


def test_revoke_role_sessions_of_a_missing_role_is_not_found(
    iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.revoke_role_sessions,
            RevokeRoleSessionsInput(role_name="no-such-role", cutoff=CUTOFF),
        )
    assert raised.value.type == ERROR_NOT_FOUND
    assert raised.value.non_retryable is True


def test_trusted_principals_flag_who_is_outside_the_account():
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {
                    "AWS": [f"arn:aws:iam::{ACCOUNT}:root", "arn:aws:iam::999988887777:root"],
                    "Service": "lambda.amazonaws.com",
                },
                "Action": "sts:AssumeRole",
            },
            {
                "Effect": "Allow",
                "Principal": {"Federated": "accounts.google.com"},
                "Action": ["sts:AssumeRoleWithWebIdentity"],
            },
            {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole"},
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:TagSession"},
        ],
    }
    found = [(p.kind, p.value, p.outside_account) for p in trusted_principals(document, ACCOUNT)]
    assert found == [
        ("AWS", f"arn:aws:iam::{ACCOUNT}:root", False),
        ("AWS", "arn:aws:iam::999988887777:root", True),
        ("Service", "lambda.amazonaws.com", False),
        ("Federated", "accounts.google.com", True),
    ]


def test_list_role_trust_reads_the_role_in_aws(iam: Any, iam_activities: IamActivities) -> None:
    iam.create_role(
        RoleName="ops-support-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::999988887777:root"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    result = ActivityEnvironment().run(
        iam_activities.list_role_trust,
        RoleTrustInput(role_name="ops-support-role", account_id=ACCOUNT),
    )
    assert [(p.value, p.outside_account) for p in result.principals] == [
        ("arn:aws:iam::999988887777:root", True)
    ]


def test_the_containment_in_place_is_read_back_deleted_edited_or_reactivated(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    cutoff = CUTOFF
    create_role(iam)
    activity_env.run(
        iam_activities.revoke_role_sessions, RevokeRoleSessionsInput(role_name=ROLE, cutoff=cutoff)
    )
    check = ContainmentInPlaceInput(role_name=ROLE, cutoff=cutoff)
    assert activity_env.run(iam_activities.check_containment_in_place, check).undone == []

    earlier = revocation_policy(iam)
    earlier["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"] = (
        "2026-11-01T00:00:00Z"
    )
    iam.put_role_policy(
        RoleName=ROLE, PolicyName=REVOKE_SESSIONS_POLICY_NAME, PolicyDocument=json.dumps(earlier)
    )
    (edited,) = activity_env.run(iam_activities.check_containment_in_place, check).undone
    assert edited.startswith(f"the {REVOKE_SESSIONS_POLICY_NAME} policy of role {ROLE} was edited")

    iam.delete_role_policy(RoleName=ROLE, PolicyName=REVOKE_SESSIONS_POLICY_NAME)
    assert activity_env.run(iam_activities.check_containment_in_place, check).undone == [
        f"the {REVOKE_SESSIONS_POLICY_NAME} policy of role {ROLE} was deleted"
    ]

    iam.create_user(UserName="ci-bot")
    key = iam.create_access_key(UserName="ci-bot")["AccessKey"]["AccessKeyId"]
    user_check = ContainmentInPlaceInput(user_name="ci-bot", access_key_id=key, cutoff=cutoff)
    undone = activity_env.run(iam_activities.check_containment_in_place, user_check).undone
    assert f"{key} of user ci-bot is active again" in undone
    assert any("QuenchRevokeOlderTokens policy of user ci-bot was deleted" in u for u in undone)
