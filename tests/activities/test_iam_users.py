"""IAM user activities against moto: capturing a user, deactivating its key, denying its
older tokens and removing its console access."""

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import enable_iam_authentication
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import ERROR_ACCESS_DENIED, ERROR_INVALID_REQUEST, ERROR_NOT_FOUND, AwsClients
from activities.evidence import EvidenceStore
from activities.iam import IamActivities
from config.names import (
    AWS_QUARANTINE_POLICY_PREFIX,
    DENY_ALL_POLICY_NAME,
    REVOKE_USER_TOKENS_POLICY_NAME,
)
from models.activities import (
    AccessKeyInput,
    CaptureUserInput,
    DenyUserTokensInput,
    UserInput,
)
from tests.support import ACCOUNT, REGION

USER = "alice"
CASE = f"case-{ACCOUNT}-AKIAEXAMPLEALICEKEY1"
PASSWORD = "Correct-Horse-Battery-Staple-42"
QUARANTINE_POLICY = f"{AWS_QUARANTINE_POLICY_PREFIX}V3"
CUTOFF = datetime(2026, 11, 22, 7, 15, 30, 987654, tzinfo=UTC)

INLINE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
}
MANAGED_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*"}],
}
# AWS's quarantine policy is AWS managed; moto does not load those by default, so the tests
# attach a customer managed policy of the same name.
QUARANTINE_DOCUMENT = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"}],
}


@pytest.fixture
def iam_activities(clients: AwsClients, evidence: EvidenceStore) -> IamActivities:
    return IamActivities(clients, evidence)


def activities_allowed_only(iam: Any, evidence: EvidenceStore, actions: list[str]) -> IamActivities:
    """The activities as a responder allowed only these IAM actions, for use under moto's
    IAM authentication."""
    create_user(iam, "responder")
    allow = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
    iam.put_user_policy(UserName="responder", PolicyName="allow", PolicyDocument=json.dumps(allow))
    key = create_key(iam, "responder")
    session = boto3.Session(
        aws_access_key_id=key["id"], aws_secret_access_key=key["secret"], region_name=REGION
    )
    return IamActivities(AwsClients(session, REGION), evidence)


def create_user(iam: Any, user_name: str = USER) -> str:
    return str(iam.create_user(UserName=user_name)["User"]["Arn"])


def create_key(iam: Any, user_name: str = USER) -> dict[str, str]:
    """A new access key: its id and its secret, which only create_access_key ever shows."""
    key = iam.create_access_key(UserName=user_name)["AccessKey"]
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def create_policy(iam: Any, name: str, document: dict[str, Any]) -> str:
    return str(
        iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    )


def use_key(boto3_session: boto3.Session, key: dict[str, str]) -> None:
    """Make one call with the key, so moto records its last use (by STS, in REGION)."""
    sts = boto3_session.client(
        "sts",
        region_name=REGION,
        aws_access_key_id=key["id"],
        aws_secret_access_key=key["secret"],
    )
    sts.get_caller_identity()


def stored(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def key_statuses(iam: Any, user_name: str = USER) -> dict[str, str]:
    keys = iam.list_access_keys(UserName=user_name)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["Status"] for k in keys}


def tokens_policy(iam: Any, user_name: str = USER) -> dict[str, Any]:
    document = iam.get_user_policy(UserName=user_name, PolicyName=REVOKE_USER_TOKENS_POLICY_NAME)
    return dict(document["PolicyDocument"])


def tokens_cutoff(iam: Any, user_name: str = USER) -> str:
    statement = tokens_policy(iam, user_name)["Statement"][0]
    return str(statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"])


def deny_all_before(timestamp: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": timestamp}},
            }
        ],
    }


# capture_user_state


@pytest.fixture
def compromised_user(iam: Any, boto3_session: boto3.Session) -> dict[str, Any]:
    """A user with two keys (one used), an inline policy, a customer managed policy, AWS's
    quarantine policy, a group, console access and an MFA device."""
    user_arn = create_user(iam)
    used_key = create_key(iam)
    idle_key = create_key(iam)
    use_key(boto3_session, used_key)
    iam.put_user_policy(
        UserName=USER, PolicyName="read-objects", PolicyDocument=json.dumps(INLINE_POLICY)
    )
    policy_arn = create_policy(iam, "list-users", MANAGED_POLICY)
    iam.attach_user_policy(UserName=USER, PolicyArn=policy_arn)
    quarantine_arn = create_policy(iam, QUARANTINE_POLICY, QUARANTINE_DOCUMENT)
    iam.attach_user_policy(UserName=USER, PolicyArn=quarantine_arn)
    iam.create_group(GroupName="developers")
    iam.add_user_to_group(GroupName="developers", UserName=USER)
    iam.create_login_profile(UserName=USER, Password=PASSWORD)
    serial = iam.create_virtual_mfa_device(VirtualMFADeviceName="alice-phone")["VirtualMFADevice"][
        "SerialNumber"
    ]
    iam.enable_mfa_device(
        UserName=USER,
        SerialNumber=serial,
        AuthenticationCode1="123456",
        AuthenticationCode2="654321",
    )
    return {
        "user_arn": user_arn,
        "used_key": used_key,
        "idle_key": idle_key,
        "policy_arn": policy_arn,
        "quarantine_arn": quarantine_arn,
        "mfa_serial": serial,
    }


def test_capture_user_state_stores_the_user_and_everything_attached_to_it(
    s3: Any,
    compromised_user: dict[str, Any],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
) -> None:
    result = activity_env.run(
        iam_activities.capture_user_state, CaptureUserInput(case_id=CASE, user_name=USER)
    )

    record = result.evidence
    assert record.key == f"cases/{CASE}/evidence/iam-user-{USER}.json"
    body = stored(s3, record.bucket, record.key)
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert record.size_bytes == len(body)
    document = json.loads(body)

    assert document["user"]["Arn"] == compromised_user["user_arn"]
    assert document["user"]["UserName"] == USER

    keys = {k["AccessKeyId"]: k for k in document["access_keys"]}
    used, idle = compromised_user["used_key"]["id"], compromised_user["idle_key"]["id"]
    assert set(keys) == {used, idle}
    assert {k["Status"] for k in keys.values()} == {"Active"}
    assert keys[used]["last_used"]["ServiceName"] == "sts"
    assert keys[used]["last_used"]["Region"] == REGION
    assert keys[used]["last_used"]["LastUsedDate"]
    assert keys[idle]["last_used"]["ServiceName"] == "N/A"
    assert not keys[idle]["last_used"].get("LastUsedDate")

    attached = {p["policy"]["Arn"]: p["document"] for p in document["attached_policies"]}
    assert attached == {
        compromised_user["policy_arn"]: MANAGED_POLICY,
        compromised_user["quarantine_arn"]: QUARANTINE_DOCUMENT,
    }
    assert document["inline_policies"] == [{"name": "read-objects", "document": INLINE_POLICY}]
    assert [g["GroupName"] for g in document["groups"]] == ["developers"]
    assert document["login_profile"]["UserName"] == USER
    assert document["login_profile"]["CreateDate"]
    assert [d["SerialNumber"] for d in document["mfa_devices"]] == [compromised_user["mfa_serial"]]

    assert result.has_login_profile is True
    assert result.quarantine_policies == [QUARANTINE_POLICY]


def test_capture_user_state_of_a_user_without_console_access_or_quarantine(
    s3: Any, iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    create_key(iam)
    iam.attach_user_policy(
        UserName=USER, PolicyArn=create_policy(iam, "list-users", MANAGED_POLICY)
    )
    # Only a name that starts with AWS's prefix is AWS's quarantine.
    iam.attach_user_policy(
        UserName=USER,
        PolicyArn=create_policy(iam, f"Copy{AWS_QUARANTINE_POLICY_PREFIX}", QUARANTINE_DOCUMENT),
    )

    result = activity_env.run(
        iam_activities.capture_user_state, CaptureUserInput(case_id=CASE, user_name=USER)
    )

    assert result.has_login_profile is False
    assert result.quarantine_policies == []
    document = json.loads(stored(s3, result.evidence.bucket, result.evidence.key))
    assert document["login_profile"] is None
    assert document["mfa_devices"] == []
    assert document["groups"] == []
    assert document["inline_policies"] == []
    assert len(document["attached_policies"]) == 2


def test_capture_user_state_twice_returns_the_first_record_and_writes_once(
    s3: Any,
    iam: Any,
    evidence: EvidenceStore,
    compromised_user: dict[str, Any],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
    evidence_keys: Callable[[], list[str]],
) -> None:
    # With versioning on, a second write would show as a second version.
    s3.put_bucket_versioning(Bucket=evidence.bucket, VersioningConfiguration={"Status": "Enabled"})
    request = CaptureUserInput(case_id=CASE, user_name=USER)
    first = activity_env.run(iam_activities.capture_user_state, request)
    # The user changes between the attempts: the evidence stays what was first seen.
    iam.put_user_policy(
        UserName=USER, PolicyName="added-later", PolicyDocument=json.dumps(INLINE_POLICY)
    )

    again = activity_env.run(iam_activities.capture_user_state, request)

    assert again.evidence == first.evidence
    assert again.has_login_profile is True
    assert again.quarantine_policies == [QUARANTINE_POLICY]
    assert evidence_keys() == [first.evidence.key]
    versions = s3.list_object_versions(Bucket=first.evidence.bucket)["Versions"]
    assert len(versions) == 1
    body = stored(s3, first.evidence.bucket, first.evidence.key)
    assert hashlib.sha256(body).hexdigest() == first.evidence.sha256
    assert "added-later" not in [p["name"] for p in json.loads(body)["inline_policies"]]


def test_capture_user_state_stores_no_secret(
    s3: Any,
    compromised_user: dict[str, Any],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
) -> None:
    result = activity_env.run(
        iam_activities.capture_user_state, CaptureUserInput(case_id=CASE, user_name=USER)
    )

    body = stored(s3, result.evidence.bucket, result.evidence.key).decode()
    returned = result.model_dump_json()
    secrets = [
        compromised_user["used_key"]["secret"],
        compromised_user["idle_key"]["secret"],
        PASSWORD,
    ]
    for secret in secrets:
        assert secret not in body
        assert secret not in returned
    # The key ids are not secret, and are there: the check above looked at the real evidence.
    assert compromised_user["used_key"]["id"] in body


@pytest.mark.parametrize("policy_name", ["ChangeOwnPassword", "AllowGetSessionToken"])
def test_capture_user_state_keeps_an_inline_policy_whose_name_looks_like_a_secret(
    s3: Any,
    iam: Any,
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
    policy_name: str,
) -> None:
    create_user(iam)
    iam.put_user_policy(
        UserName=USER, PolicyName=policy_name, PolicyDocument=json.dumps(INLINE_POLICY)
    )

    result = activity_env.run(
        iam_activities.capture_user_state, CaptureUserInput(case_id=CASE, user_name=USER)
    )

    document = json.loads(stored(s3, result.evidence.bucket, result.evidence.key))
    assert document["inline_policies"] == [{"name": policy_name, "document": INLINE_POLICY}]


def test_capture_user_state_of_a_missing_user_is_not_found(
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
    evidence_keys: Callable[[], list[str]],
) -> None:
    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.capture_user_state,
            CaptureUserInput(case_id=CASE, user_name="no-such-user"),
        )
    assert raised.value.type == ERROR_NOT_FOUND
    assert raised.value.non_retryable is True
    assert evidence_keys() == []


# deactivate_access_key


def test_deactivate_access_key_makes_the_key_inactive_and_keeps_it(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    stolen = create_key(iam)["id"]
    other = create_key(iam)["id"]

    result = activity_env.run(
        iam_activities.deactivate_access_key, AccessKeyInput(user_name=USER, access_key_id=stolen)
    )

    assert result.access_key_id == stolen
    assert result.status == "Inactive"
    assert result.changed is True
    # Deactivated, not deleted; the user's other key is left alone.
    assert key_statuses(iam) == {stolen: "Inactive", other: "Active"}


def test_deactivate_access_key_without_listing_the_keys_still_deactivates_it(
    iam: Any, evidence: EvidenceStore, activity_env: ActivityEnvironment
) -> None:
    """ListAccessKeys denied: UpdateAccessKey names the user, and IAM itself refuses a
    key that is not that user's, so the key is still deactivated."""
    create_user(iam)
    stolen = create_key(iam)["id"]
    responder = activities_allowed_only(iam, evidence, ["iam:UpdateAccessKey"])

    with enable_iam_authentication():
        result = activity_env.run(
            responder.deactivate_access_key, AccessKeyInput(user_name=USER, access_key_id=stolen)
        )

    assert (result.status, result.changed) == ("Inactive", True)
    assert key_statuses(iam)[stolen] == "Inactive"


def test_deactivate_access_key_denied_both_ways_names_the_listing(
    iam: Any, evidence: EvidenceStore, activity_env: ActivityEnvironment
) -> None:
    """Neither call allowed: the error names ListAccessKeys, since nothing showed the key
    is the user's (so the case does not deny the user everything on its word)."""
    create_user(iam)
    stolen = create_key(iam)["id"]
    responder = activities_allowed_only(iam, evidence, ["iam:GetUser"])

    with enable_iam_authentication(), pytest.raises(ApplicationError) as raised:
        activity_env.run(
            responder.deactivate_access_key, AccessKeyInput(user_name=USER, access_key_id=stolen)
        )

    assert raised.value.type == ERROR_ACCESS_DENIED and raised.value.non_retryable
    assert raised.value.details[0]["call"] == "iam:ListAccessKeys"
    assert "(call iam:UpdateAccessKey)" in raised.value.message
    assert key_statuses(iam)[stolen] == "Active"


def test_deactivate_access_key_twice_changes_nothing_the_second_time(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    stolen = create_key(iam)["id"]
    other = create_key(iam)["id"]
    request = AccessKeyInput(user_name=USER, access_key_id=stolen)
    first = activity_env.run(iam_activities.deactivate_access_key, request)

    again = activity_env.run(iam_activities.deactivate_access_key, request)

    assert first.changed is True
    assert again.changed is False
    assert again.status == "Inactive"
    assert key_statuses(iam) == {stolen: "Inactive", other: "Active"}


def test_deactivate_access_key_refuses_a_key_of_another_user(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    create_user(iam, "bob")
    alices = create_key(iam)["id"]
    bobs = create_key(iam, "bob")["id"]

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.deactivate_access_key,
            AccessKeyInput(user_name=USER, access_key_id=bobs),
        )

    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True
    assert bobs in raised.value.message
    assert key_statuses(iam) == {alices: "Active"}
    assert key_statuses(iam, "bob") == {bobs: "Active"}


def test_deactivate_access_key_refuses_a_key_that_does_not_exist(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    alices = create_key(iam)["id"]

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.deactivate_access_key,
            AccessKeyInput(user_name=USER, access_key_id="AKIAEXAMPLENOSUCHKEY"),
        )

    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True
    assert key_statuses(iam) == {alices: "Active"}


# deny_user_everything


def test_deny_user_everything_puts_a_deny_all_beside_the_users_own_policies_and_again_is_a_no_op(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    iam.put_user_policy(
        UserName=USER, PolicyName="read-objects", PolicyDocument=json.dumps(INLINE_POLICY)
    )

    first = activity_env.run(iam_activities.deny_user_everything, UserInput(user_name=USER))
    again = activity_env.run(iam_activities.deny_user_everything, UserInput(user_name=USER))

    assert first.changed is True and DENY_ALL_POLICY_NAME in first.detail
    assert (again.changed, again.detail) == (False, f"{DENY_ALL_POLICY_NAME} was in place")
    kept = iam.get_user_policy(UserName=USER, PolicyName=DENY_ALL_POLICY_NAME)["PolicyDocument"]
    assert kept["Statement"] == [{"Effect": "Deny", "Action": ["*"], "Resource": ["*"]}]
    assert "Condition" not in json.dumps(kept)  # unlike the tokens' deny: long-term keys too
    assert sorted(iam.list_user_policies(UserName=USER)["PolicyNames"]) == sorted(
        [DENY_ALL_POLICY_NAME, "read-objects"]
    )


# deny_user_tokens_before


@pytest.mark.parametrize(
    "cutoff",
    [CUTOFF, CUTOFF.astimezone(timezone(timedelta(hours=2)))],
    ids=["utc", "utc+2"],
)
def test_deny_user_tokens_before_denies_tokens_issued_before_the_cutoff(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment, cutoff: datetime
) -> None:
    create_user(iam)
    iam.put_user_policy(
        UserName=USER, PolicyName="read-objects", PolicyDocument=json.dumps(INLINE_POLICY)
    )

    result = activity_env.run(
        iam_activities.deny_user_tokens_before,
        DenyUserTokensInput(user_name=USER, cutoff=cutoff),
    )

    assert result.changed is True
    assert result.policy_name == REVOKE_USER_TOKENS_POLICY_NAME
    assert result.cutoff_in_effect == datetime(2026, 11, 22, 7, 15, 30, tzinfo=UTC)
    assert tokens_policy(iam) == deny_all_before("2026-11-22T07:15:30Z")
    # The user's own inline policies are left as they were.
    assert sorted(iam.list_user_policies(UserName=USER)["PolicyNames"]) == sorted(
        [REVOKE_USER_TOKENS_POLICY_NAME, "read-objects"]
    )
    assert (
        iam.get_user_policy(UserName=USER, PolicyName="read-objects")["PolicyDocument"]
        == INLINE_POLICY
    )


def test_deny_user_tokens_before_twice_leaves_the_policy_unchanged(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    request = DenyUserTokensInput(user_name=USER, cutoff=CUTOFF)
    first = activity_env.run(iam_activities.deny_user_tokens_before, request)
    policy_after_first = tokens_policy(iam)

    again = activity_env.run(iam_activities.deny_user_tokens_before, request)

    assert first.changed is True
    assert again.changed is False
    assert again.cutoff_in_effect == first.cutoff_in_effect
    assert tokens_policy(iam) == policy_after_first
    assert iam.list_user_policies(UserName=USER)["PolicyNames"] == [REVOKE_USER_TOKENS_POLICY_NAME]


def test_deny_user_tokens_before_never_weakens_a_later_cutoff(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    later = CUTOFF + timedelta(hours=1)
    activity_env.run(
        iam_activities.deny_user_tokens_before, DenyUserTokensInput(user_name=USER, cutoff=later)
    )
    assert tokens_cutoff(iam) == "2026-11-22T08:15:30Z"

    result = activity_env.run(
        iam_activities.deny_user_tokens_before, DenyUserTokensInput(user_name=USER, cutoff=CUTOFF)
    )

    assert result.changed is False
    assert result.cutoff_in_effect == later.replace(microsecond=0)
    assert tokens_cutoff(iam) == "2026-11-22T08:15:30Z"


def test_deny_user_tokens_before_moves_an_earlier_cutoff_forward(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    activity_env.run(
        iam_activities.deny_user_tokens_before,
        DenyUserTokensInput(user_name=USER, cutoff=CUTOFF - timedelta(days=1)),
    )
    assert tokens_cutoff(iam) == "2026-11-21T07:15:30Z"

    result = activity_env.run(
        iam_activities.deny_user_tokens_before, DenyUserTokensInput(user_name=USER, cutoff=CUTOFF)
    )

    assert result.changed is True
    assert result.cutoff_in_effect == datetime(2026, 11, 22, 7, 15, 30, tzinfo=UTC)
    assert tokens_policy(iam) == deny_all_before("2026-11-22T07:15:30Z")


def test_deny_user_tokens_before_replaces_a_policy_that_does_not_deny_everything(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    narrow = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["s3:GetObject"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2099-01-01T00:00:00Z"}},
            }
        ],
    }
    iam.put_user_policy(
        UserName=USER, PolicyName=REVOKE_USER_TOKENS_POLICY_NAME, PolicyDocument=json.dumps(narrow)
    )

    result = activity_env.run(
        iam_activities.deny_user_tokens_before, DenyUserTokensInput(user_name=USER, cutoff=CUTOFF)
    )

    assert result.changed is True
    assert tokens_policy(iam) == deny_all_before("2026-11-22T07:15:30Z")


def test_deny_user_tokens_before_of_a_missing_user_is_not_found(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            iam_activities.deny_user_tokens_before,
            DenyUserTokensInput(user_name="no-such-user", cutoff=CUTOFF),
        )
    assert raised.value.type == ERROR_NOT_FOUND
    assert raised.value.non_retryable is True
    assert iam.list_users()["Users"] == []


def test_deny_user_tokens_before_writes_the_deny_when_it_cannot_read_the_policy_and_says_so(
    iam: Any, evidence: EvidenceStore, activity_env: ActivityEnvironment
) -> None:
    """Denying the attacker's tokens matters more than reading the policy first: the deny
    is written, as of now, and the result names the read that was denied."""
    create_user(iam)
    responder = activities_allowed_only(iam, evidence, ["iam:PutUserPolicy"])

    with enable_iam_authentication():
        result = activity_env.run(
            responder.deny_user_tokens_before, DenyUserTokensInput(user_name=USER, cutoff=CUTOFF)
        )

    assert result.changed is True
    assert "AccessDenied" in result.unread and "(call iam:GetUserPolicy)" in result.unread
    # Unread, it may have held a later cut-off: the one written is now, later than any.
    assert result.cutoff_in_effect > CUTOFF
    assert datetime.now(UTC) - result.cutoff_in_effect < timedelta(minutes=5)
    assert tokens_cutoff(iam) == result.cutoff_in_effect.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_deny_user_tokens_before_reads_the_policy_in_place_without_saying_so(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    result = activity_env.run(
        iam_activities.deny_user_tokens_before, DenyUserTokensInput(user_name=USER, cutoff=CUTOFF)
    )
    assert result.unread == ""


# remove_login_profile


def test_remove_login_profile_deletes_console_access(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    iam.create_login_profile(UserName=USER, Password=PASSWORD)

    result = activity_env.run(iam_activities.remove_login_profile, UserInput(user_name=USER))

    assert result.changed is True
    with pytest.raises(ClientError) as raised:
        iam.get_login_profile(UserName=USER)
    assert raised.value.response["Error"]["Code"] == "NoSuchEntity"
    # The user itself stays: it is evidence.
    assert iam.get_user(UserName=USER)["User"]["UserName"] == USER


def test_remove_login_profile_twice_changes_nothing_the_second_time(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    iam.create_login_profile(UserName=USER, Password=PASSWORD)
    first = activity_env.run(iam_activities.remove_login_profile, UserInput(user_name=USER))

    again = activity_env.run(iam_activities.remove_login_profile, UserInput(user_name=USER))

    assert first.changed is True
    assert again.changed is False
    assert again.detail == "no console access"
    with pytest.raises(ClientError) as raised:
        iam.get_login_profile(UserName=USER)
    assert raised.value.response["Error"]["Code"] == "NoSuchEntity"


def test_remove_login_profile_reports_access_denied_and_leaves_console_access(
    iam: Any, evidence: EvidenceStore, activity_env: ActivityEnvironment
) -> None:
    create_user(iam)
    iam.create_login_profile(UserName=USER, Password=PASSWORD)
    responder = activities_allowed_only(iam, evidence, ["iam:GetLoginProfile"])

    with enable_iam_authentication(), pytest.raises(ApplicationError) as raised:
        activity_env.run(responder.remove_login_profile, UserInput(user_name=USER))

    assert raised.value.type == ERROR_ACCESS_DENIED, raised.value.message
    assert raised.value.details[0]["aws_error_code"] == "AccessDenied"
    assert raised.value.non_retryable is True
    assert iam.get_login_profile(UserName=USER)["LoginProfile"]["UserName"] == USER
