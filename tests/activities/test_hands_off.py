"""What Quench never changes on its own, against moto: its own identity (learned from
sts:GetCallerIdentity) and anything protected, by name or by the quench:protected tag.
Each refusal changes nothing in AWS and names the call it did not make."""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.ec2 import Ec2Activities
from activities.eradication import EradicationActivities
from activities.evidence import EvidenceStore
from activities.hands_off import ERROR_HANDS_OFF, QuenchIdentity
from activities.iam import IamActivities, revoke_sessions_policy
from config.names import PROTECTED_TAG_KEY, REVOKE_SESSIONS_POLICY_NAME
from models.activities import (
    AccessKeyInput,
    InstanceInput,
    ReleaseChangeInput,
    RemoveResourceInput,
    ResolvePrincipalInput,
    RevokeRoleSessionsInput,
    UserInput,
)
from models.case import CaseChange
from tests.activities.test_iam import (
    PROFILE,
    create_profile,
    create_role,
    role_session_finding,
    user_key_finding,
)
from tests.activities.test_iam_users import create_key, create_user, key_statuses
from tests.support import ACCOUNT, REGION, ROLE

MEMBER = "111111111111"
QUENCH_ROLE = "QuenchResponder"
PROTECTED_TAG = [{"Key": PROTECTED_TAG_KEY, "Value": "true"}]
WORKER_KEY = "AKIAQUENCHWORKER0001"
CUTOFF = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def quench(mocked_aws: None) -> AwsClients:
    """The worker's clients, knowing who Quench is: moto's caller, its key, its roles."""
    session = boto3.Session(
        aws_access_key_id=WORKER_KEY, aws_secret_access_key="not-a-secret", region_name=REGION
    )
    clients = AwsClients(session, REGION)
    clients.identity = QuenchIdentity.learn(
        clients, [f"arn:aws:iam::{MEMBER}:role/{QUENCH_ROLE}", f"arn:aws:iam::{ACCOUNT}:role/q/Q"]
    )
    return clients


@pytest.fixture
def iam_activities(quench: AwsClients, evidence: EvidenceStore) -> IamActivities:
    return IamActivities(quench, evidence)


def _refused(activity_env: ActivityEnvironment, fn: Callable[..., Any], input: Any) -> str:
    with pytest.raises(ApplicationError) as refused:
        activity_env.run(fn, input)
    assert refused.value.type == ERROR_HANDS_OFF and refused.value.non_retryable
    return refused.value.message


def test_quench_learns_who_it_is_from_aws(quench: AwsClients) -> None:
    identity = quench.identity
    assert identity is not None
    # moto's caller for a key it did not issue, and the key the clients sign with.
    assert identity.arn == f"arn:aws:sts::{ACCOUNT}:user/moto"
    assert identity.access_key_id == WORKER_KEY
    assert identity.account_id == ACCOUNT
    assert (
        identity.owns(ACCOUNT, user_name="moto")
        == "user moto is Quench's own (the worker's credentials)"
    )
    assert identity.owns(MEMBER, role_name=QUENCH_ROLE) == (
        f"role {QUENCH_ROLE} is Quench's own in account {MEMBER}"
    )
    # A role's path does not hide it; the same name in another account is not Quench.
    assert identity.owns(ACCOUNT, role_name="Q") is not None
    assert identity.owns("222222222222", role_name=QUENCH_ROLE) is None
    assert identity.owns(ACCOUNT, user_name="alice", access_key_id="AKIAOTHER") is None


def test_a_finding_naming_quenchs_own_key_is_quench_and_nothing_is_looked_up(
    iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    # No user of that name exists: an attacker hiding behind the worker's key.
    result = activity_env.run(
        iam_activities.resolve_principal,
        ResolvePrincipalInput(finding=user_key_finding(WORKER_KEY, "someone-else")),
    )
    assert result.quench_own
    assert result.hands_off == f"access key {WORKER_KEY} is Quench's own (the worker's credentials)"


def test_a_finding_naming_quenchs_member_role_is_quench(
    iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    finding = role_session_finding("i-0123456789abcdef0")
    keys = finding.access_key.model_copy(update={"user_name": QUENCH_ROLE})
    finding = finding.model_copy(update={"account_id": MEMBER, "access_key": keys})
    result = activity_env.run(
        iam_activities.resolve_principal,
        ResolvePrincipalInput(account_id=MEMBER, finding=finding),
    )
    assert result.quench_own
    assert result.credential.principal.role_name == QUENCH_ROLE


@pytest.mark.parametrize("by", ["name", "tag"])
def test_a_protected_role_or_instance_is_found_protected_when_resolved(
    iam: Any,
    ec2: Any,
    launch_instance: Callable[..., str],
    iam_activities: IamActivities,
    activity_env: ActivityEnvironment,
    by: str,
) -> None:
    create_role(iam)
    create_profile(iam, ROLE)
    instance_id = launch_instance(PROFILE)
    protected_names = []
    if by == "name":
        protected_names = [instance_id]
    else:
        iam.tag_role(RoleName=ROLE, Tags=PROTECTED_TAG)
    result = activity_env.run(
        iam_activities.resolve_principal,
        ResolvePrincipalInput(
            finding=role_session_finding(instance_id), protected_names=protected_names
        ),
    )
    assert not result.quench_own
    assert result.hands_off == (
        f"{instance_id} is on the protected list"
        if by == "name"
        else f"role {ROLE} carries the {PROTECTED_TAG_KEY} tag"
    )


def test_an_unprotected_principal_may_be_contained(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam, "bob")
    key = create_key(iam, "bob")["id"]
    result = activity_env.run(
        iam_activities.resolve_principal,
        ResolvePrincipalInput(finding=user_key_finding(key, "bob"), protected_names=["alice"]),
    )
    assert (result.hands_off, result.quench_own) == (None, False)


@pytest.mark.parametrize("by", ["name", "tag"])
def test_a_protected_users_key_is_never_deactivated_nor_the_user_denied(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment, by: str
) -> None:
    create_user(iam, "alice-admin")
    key = create_key(iam, "alice-admin")["id"]
    names = ["alice-admin"] if by == "name" else []
    if by == "tag":
        iam.tag_user(UserName="alice-admin", Tags=PROTECTED_TAG)
    why = (
        "alice-admin is on the protected list"
        if by == "name"
        else f"user alice-admin carries the {PROTECTED_TAG_KEY} tag"
    )

    deactivate = AccessKeyInput(user_name="alice-admin", access_key_id=key, protected_names=names)
    assert _refused(activity_env, iam_activities.deactivate_access_key, deactivate) == (
        f"user alice-admin: {why}: Quench does not change it on its own "
        "(iam:UpdateAccessKey not made)"
    )
    user = UserInput(user_name="alice-admin", protected_names=names)
    assert "(iam:PutUserPolicy not made)" in _refused(
        activity_env, iam_activities.deny_user_everything, user
    )
    assert "(iam:DeleteLoginProfile not made)" in _refused(
        activity_env, iam_activities.remove_login_profile, user
    )
    assert key_statuses(iam, "alice-admin") == {key: "Active"}
    assert iam.list_user_policies(UserName="alice-admin")["PolicyNames"] == []


def test_quenchs_own_role_never_gets_the_revocation_policy(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_role(iam, "Q")
    revoke = RevokeRoleSessionsInput(account_id=ACCOUNT, role_name="Q", cutoff=CUTOFF)
    message = _refused(activity_env, iam_activities.revoke_role_sessions, revoke)
    assert message.startswith(f"role Q: role Q is Quench's own in account {ACCOUNT}")
    assert REVOKE_SESSIONS_POLICY_NAME not in iam.list_role_policies(RoleName="Q")["PolicyNames"]


def test_a_protected_instance_is_never_stopped(
    ec2: Any,
    quench: AwsClients,
    evidence: EvidenceStore,
    launch_instance: Callable[..., str],
    activity_env: ActivityEnvironment,
) -> None:
    instance_id = launch_instance()
    ec2.create_tags(Resources=[instance_id], Tags=PROTECTED_TAG)
    activities = Ec2Activities(quench, evidence, poll_seconds=0)
    message = _refused(
        activity_env, activities.stop_instance, InstanceInput(instance_id=instance_id)
    )
    assert "(ec2:StopInstances not made)" in message
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "running"


def test_eradication_skips_quenchs_own_user_whatever_the_records_say(
    iam: Any, quench: AwsClients, evidence: EvidenceStore, activity_env: ActivityEnvironment
) -> None:
    create_user(iam, "moto")
    eradication = EradicationActivities(quench, evidence)
    result = activity_env.run(
        eradication.remove_resource,
        RemoveResourceInput(account_id=ACCOUNT, case_id="c", operation="delete_user", name="moto"),
    )
    assert result.outcome == "skipped"
    assert result.detail == "user moto is Quench's own (the worker's credentials)"
    assert iam.get_user(UserName="moto")["User"]["UserName"] == "moto"


# release_change: undoing the case's own changes after a false positive


def _change(**fields: Any) -> CaseChange:
    return CaseChange(made_at=CUTOFF, **fields)


def test_a_release_reactivates_the_key_the_case_deactivated(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_user(iam, "alice")
    key = create_key(iam, "alice")["id"]
    iam.update_access_key(UserName="alice", AccessKeyId=key, Status="Inactive")
    change = _change(kind="key_deactivated", user_name="alice", access_key_id=key)
    first = activity_env.run(iam_activities.release_change, ReleaseChangeInput(change=change))
    again = activity_env.run(iam_activities.release_change, ReleaseChangeInput(change=change))
    assert (first.outcome, again.outcome) == ("released", "already_released")
    assert key_statuses(iam, "alice") == {key: "Active"}


def test_a_release_deletes_only_the_policy_the_case_wrote(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    create_role(iam, "web")
    create_role(iam, "api")
    for role, cutoff in (("web", CUTOFF), ("api", CUTOFF.replace(hour=13))):
        iam.put_role_policy(
            RoleName=role,
            PolicyName=REVOKE_SESSIONS_POLICY_NAME,
            PolicyDocument=json.dumps(revoke_sessions_policy(cutoff)),
        )

    def release(role: str) -> str:
        change = _change(
            kind="policy_put",
            role_name=role,
            policy_name=REVOKE_SESSIONS_POLICY_NAME,
            cutoff=CUTOFF,
        )
        return activity_env.run(
            iam_activities.release_change, ReleaseChangeInput(change=change)
        ).outcome

    # Its own, by name and cut-off, goes; a later cut-off someone else wrote stays.
    assert (release("web"), release("web"), release("api")) == (
        "released",
        "already_released",
        "kept",
    )
    assert iam.list_role_policies(RoleName="web")["PolicyNames"] == []
    assert iam.list_role_policies(RoleName="api")["PolicyNames"] == [REVOKE_SESSIONS_POLICY_NAME]


def test_a_release_puts_back_the_earlier_cut_off_it_replaced(
    iam: Any, iam_activities: IamActivities, activity_env: ActivityEnvironment
) -> None:
    """Another case's (or a console's) earlier revocation was there: releasing this
    case's later one writes the earlier back, so the sessions it denied stay denied."""
    create_role(iam, "web")
    earlier = CUTOFF.replace(hour=9)
    iam.put_role_policy(
        RoleName="web",
        PolicyName=REVOKE_SESSIONS_POLICY_NAME,
        PolicyDocument=json.dumps(revoke_sessions_policy(earlier)),
    )
    revoked = activity_env.run(
        iam_activities.revoke_role_sessions,
        RevokeRoleSessionsInput(account_id=ACCOUNT, role_name="web", cutoff=CUTOFF),
    )
    assert (revoked.changed, revoked.replaced) == (True, earlier)
    change = _change(
        kind="policy_put",
        role_name="web",
        policy_name=REVOKE_SESSIONS_POLICY_NAME,
        cutoff=revoked.cutoff_in_effect,
        previous_cutoff=revoked.replaced,
    )
    released = activity_env.run(iam_activities.release_change, ReleaseChangeInput(change=change))
    assert released.outcome == "released"
    kept = iam.get_role_policy(RoleName="web", PolicyName=REVOKE_SESSIONS_POLICY_NAME)
    assert kept["PolicyDocument"] == revoke_sessions_policy(earlier)
