"""What a lab scenario's attack left standing in the lab's AWS now, read from that AWS.

When `up` resumes a stack, the attack's own report is hours old and the case may have
removed or undone what it names; this says, for each thing, whether it is still so.
"""

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from config.names import REVOKE_SESSIONS_POLICY_NAME, REVOKE_USER_TOKENS_POLICY_NAME
from lab.organization import CrossAccountAttackReport, in_account
from lab.scenario import AnyLabCase
from lab.user_key_attack import UserKeyAttackReport
from lab.world import TRAIL_NAME, admin_session, client

NOT_FOUND = {"NoSuchEntity", "ResourceNotFoundException", "TrailNotFoundException"}


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in NOT_FOUND:
            return False
        raise
    return True


def _instance(ec2: Any, instance_id: str) -> tuple[str, bool]:
    """An instance counts as there until it is terminated (a stopped one can start)."""
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "InvalidInstanceID.NotFound":
            return f"instance {instance_id}", False
        raise
    states = [i["State"]["Name"] for r in reservations for i in r["Instances"]]
    return f"instance {instance_id}", any(s not in {"terminated", "shutting-down"} for s in states)


def _made(things: list[tuple[str, bool]]) -> str:
    """`users a, b still there; role c removed`, from (name, still there) pairs."""
    there = [name for name, exists in things if exists]
    gone = [name for name, exists in things if not exists]
    parts = []
    if there:
        parts.append(f"{', '.join(there)} still there")
    if gone:
        parts.append(f"{', '.join(gone)} removed")
    return "what the attacker made: " + "; ".join(parts)


def standing(aws_url: str, case: AnyLabCase) -> str:
    """One line on the attack's credential and what it made, as the lab's AWS has them now."""
    session = admin_session()
    iam = client(session, "iam", aws_url)
    attack = case.attack
    if isinstance(attack, CrossAccountAttackReport):
        return _member_standing(aws_url, attack)

    def user(name: str) -> tuple[str, bool]:
        return f"user {name}", _exists(lambda: iam.get_user(UserName=name))

    def role(name: str) -> tuple[str, bool]:
        return f"role {name}", _exists(lambda: iam.get_role(RoleName=name))

    def inline_policy(policy: str, **owner: str) -> bool:
        read = iam.get_role_policy if "RoleName" in owner else iam.get_user_policy
        return _exists(lambda: read(PolicyName=policy, **owner))

    if isinstance(attack, UserKeyAttackReport):
        keys = iam.list_access_keys(UserName=attack.user_name)["AccessKeyMetadata"]
        state = next(
            (k["Status"].lower() for k in keys if k["AccessKeyId"] == attack.leaked_access_key_id),
            "not found",
        )
        tokens = inline_policy(REVOKE_USER_TOKENS_POLICY_NAME, UserName=attack.user_name)
        trust = str(iam.get_role(RoleName=attack.trust_changed_role)["Role"])
        trusts = "still trusts" if attack.outside_account in trust else "no longer trusts"
        credential = f"leaked key {attack.leaked_access_key_id} of {attack.user_name} {state}" + (
            f", {attack.user_name}'s older tokens denied" if tokens else ""
        )
        made = _made(
            [
                user(attack.second_generation_user),
                user(attack.third_generation_user),
                _instance(client(session, "ec2", aws_url), attack.attacker_instance_id),
            ]
        )
        return (
            f"{credential}; {made}; {attack.trust_changed_role} {trusts} {attack.outside_account}"
        )

    world = case.world
    revoked = inline_policy(REVOKE_SESSIONS_POLICY_NAME, RoleName=world.role_name)
    credential = f"stolen key {attack.stolen_access_key_id}: sessions of {world.role_name} " + (
        "revoked" if revoked else "not revoked yet"
    )
    lambdas = client(session, "lambda", aws_url)
    function = (
        f"function {attack.backdoor_function}",
        _exists(lambda: lambdas.get_function(FunctionName=attack.backdoor_function)),
    )
    made = _made(
        [
            user(attack.backdoor_user),
            user(attack.second_generation_user),
            role(attack.backdoor_role),
            function,
        ]
    )
    trail = client(session, "cloudtrail", aws_url).get_trail_status(Name=TRAIL_NAME)
    logging = "logging" if trail["IsLogging"] else "not logging"
    return f"{credential}; {made}; trail {TRAIL_NAME} {logging}"


def _member_standing(aws_url: str, attack: CrossAccountAttackReport) -> str:
    """The cross-account scenario's line, read in the member account."""
    iam = in_account(attack.account_id, "iam", aws_url)
    revoked = _exists(
        lambda: iam.get_role_policy(
            RoleName=attack.role_name, PolicyName=REVOKE_SESSIONS_POLICY_NAME
        )
    )
    backdoor = _exists(lambda: iam.get_user(UserName=attack.backdoor_user))
    return (
        f"in account {attack.account_id} ({attack.account_name}): stolen key "
        f"{attack.stolen_access_key_id}: sessions of {attack.role_name} "
        + ("revoked" if revoked else "not revoked yet")
        + "; "
        + _made([(f"user {attack.backdoor_user}", backdoor)])
    )
