"""IAM: who a credential belongs to, what that principal may do, and revoking role sessions."""

import json
import re
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import ERROR_INVALID_REQUEST, AwsClients, aws_errors, error_code
from activities.evidence import EvidenceStore
from config.names import REVOKE_SESSIONS_POLICY_NAME
from models.activities import (
    CaptureRoleInput,
    ResolvePrincipalInput,
    ResolvePrincipalResult,
    RevokeRoleSessionsInput,
    RevokeRoleSessionsResult,
)
from models.case import EvidenceRecord
from models.principal import Credential, CredentialKind, Principal, PrincipalType

TOKEN_ISSUE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}")


def revoke_sessions_policy(cutoff: datetime) -> dict[str, Any]:
    """The policy IAM's "Revoke active sessions" writes: deny everything to older tokens."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {
                    "DateLessThan": {
                        "aws:TokenIssueTime": cutoff.astimezone(UTC).strftime(
                            TOKEN_ISSUE_TIME_FORMAT
                        )
                    }
                },
            }
        ],
    }


def policy_cutoff(document: dict[str, Any]) -> datetime | None:
    """The aws:TokenIssueTime cut-off of an AWSRevokeOlderSessions policy, if it has one."""
    cutoffs = []
    statements = document.get("Statement", [])
    # IAM accepts a single statement object as well as a list of them.
    for statement in [statements] if isinstance(statements, dict) else statements:
        condition = statement.get("Condition", {}).get("DateLessThan", {})
        value = condition.get("aws:TokenIssueTime")
        if statement.get("Effect") == "Deny" and value:
            cutoffs.append(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return max(cutoffs) if cutoffs else None


def validate_role_name(role_name: str) -> str:
    if not _ROLE_NAME.fullmatch(role_name):
        raise ApplicationError(
            f"not an IAM role name: {role_name!r}", type=ERROR_INVALID_REQUEST, non_retryable=True
        )
    return role_name


class IamActivities:
    def __init__(self, clients: AwsClients, evidence: EvidenceStore) -> None:
        self._clients = clients
        self._evidence = evidence

    @property
    def _iam(self) -> Any:
        return self._clients.client("iam")

    @activity.defn
    def resolve_principal(self, input: ResolvePrincipalInput) -> ResolvePrincipalResult:
        """Turn the finding's access key details into a principal, checked against IAM and EC2."""
        finding = input.finding
        keys = finding.access_key
        account = finding.account_id
        user_type = (keys.user_type or "").lower()

        if user_type == "assumedrole" and keys.access_key_id.startswith("ASIA"):
            role_name = validate_role_name(keys.user_name or "")
            with aws_errors(f"get role {role_name}"):
                role = self._iam.get_role(RoleName=role_name)["Role"]
            session = None
            if keys.principal_id and ":" in keys.principal_id:
                session = keys.principal_id.split(":", 1)[1]
            instance_id = finding.instance_id or (
                session if session and session.startswith("i-") else None
            )
            profile_arn = None
            kind = CredentialKind.ROLE_SESSION
            if instance_id:
                profile_arn = self._instance_profile_with_role(instance_id, role_name)
                kind = CredentialKind.INSTANCE_ROLE_SESSION
            principal = Principal(
                type=PrincipalType.ASSUMED_ROLE,
                account_id=account,
                arn=f"arn:aws:sts::{account}:assumed-role/{role_name}/{session or ''}".rstrip("/"),
                principal_id=keys.principal_id,
                role_name=role_name,
                role_arn=role["Arn"],
                session_name=session,
                instance_id=instance_id,
                instance_profile_arn=profile_arn,
            )
        elif user_type == "root":
            # Root keys are AKIA keys too: the user type decides, before the key prefix.
            kind = CredentialKind.ROOT
            principal = Principal(
                type=PrincipalType.ROOT, account_id=account, arn=f"arn:aws:iam::{account}:root"
            )
        elif user_type == "iamuser" or keys.access_key_id.startswith("AKIA"):
            user_name = keys.user_name
            if not user_name:
                with aws_errors(f"find the owner of {keys.access_key_id}"):
                    last_used = self._iam.get_access_key_last_used(AccessKeyId=keys.access_key_id)
                user_name = last_used["UserName"]
            # The real ARN carries the user's path (user/engineering/alice).
            with aws_errors(f"get user {user_name}"):
                user = self._iam.get_user(UserName=user_name)["User"]
            kind = CredentialKind.IAM_USER_KEY
            principal = Principal(
                type=PrincipalType.IAM_USER,
                account_id=account,
                arn=user["Arn"],
                principal_id=keys.principal_id or user["UserId"],
                user_name=user_name,
            )
        else:
            kind = CredentialKind.UNKNOWN
            principal = Principal(
                type=PrincipalType.UNKNOWN, account_id=account, principal_id=keys.principal_id
            )
        return ResolvePrincipalResult(
            credential=Credential(access_key_id=keys.access_key_id, kind=kind, principal=principal)
        )

    def _instance_profile_with_role(self, instance_id: str, role_name: str) -> str:
        ec2 = self._clients.client("ec2")
        with aws_errors(f"describe instance {instance_id}"):
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instance = reservations[0]["Instances"][0]
        profile_arn = instance.get("IamInstanceProfile", {}).get("Arn")
        if not profile_arn:
            raise ApplicationError(
                f"instance {instance_id} has no instance profile, yet the finding names role "
                f"{role_name}",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        profile_name = profile_arn.rsplit("/", 1)[-1]
        with aws_errors(f"get instance profile {profile_name}"):
            profile = self._iam.get_instance_profile(InstanceProfileName=profile_name)
        roles = {r["RoleName"] for r in profile["InstanceProfile"]["Roles"]}
        if role_name not in roles:
            raise ApplicationError(
                f"instance profile {profile_name} of {instance_id} does not carry role {role_name}",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        return str(profile_arn)

    @activity.defn
    def capture_role_state(self, input: CaptureRoleInput) -> EvidenceRecord:
        """Evidence: the role, its trust policy, inline and attached policies, profiles, tags."""
        role_name = validate_role_name(input.role_name)
        name = f"iam-role-{role_name.lower()}"
        found = self._evidence.existing(self._evidence.key_for(input.case_id, name))
        if found is not None:
            return found
        iam = self._iam
        with aws_errors(f"capture role {role_name}"):
            role = iam.get_role(RoleName=role_name)["Role"]
            inline = {}
            for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name):
                for policy_name in page["PolicyNames"]:
                    inline[policy_name] = iam.get_role_policy(
                        RoleName=role_name, PolicyName=policy_name
                    )["PolicyDocument"]
            attached = []
            for page in iam.get_paginator("list_attached_role_policies").paginate(
                RoleName=role_name
            ):
                for policy in page["AttachedPolicies"]:
                    attached.append(self._policy_with_document(policy["PolicyArn"]))
            profiles = [
                {"name": p["InstanceProfileName"], "arn": p["Arn"]}
                for page in iam.get_paginator("list_instance_profiles_for_role").paginate(
                    RoleName=role_name
                )
                for p in page["InstanceProfiles"]
            ]
        document = {
            "role": role,
            "trust_policy": role.get("AssumeRolePolicyDocument"),
            "inline_policies": inline,
            "attached_policies": attached,
            "instance_profiles": profiles,
        }
        return self._evidence.put_json(input.case_id, name, document)

    def _policy_with_document(self, policy_arn: str) -> dict[str, Any]:
        policy = self._iam.get_policy(PolicyArn=policy_arn)["Policy"]
        version = self._iam.get_policy_version(
            PolicyArn=policy_arn, VersionId=policy["DefaultVersionId"]
        )["PolicyVersion"]
        return {"policy": policy, "document": version["Document"]}

    @activity.defn
    def revoke_role_sessions(self, input: RevokeRoleSessionsInput) -> RevokeRoleSessionsResult:
        """Deny every session of the role issued before the cut-off (AWSRevokeOlderSessions).

        A policy already in place with the same or a later cut-off is left as it is: a later
        revocation by someone else is never weakened.
        """
        role_name = validate_role_name(input.role_name)
        cutoff = input.cutoff.astimezone(UTC).replace(microsecond=0)
        with aws_errors(f"revoke sessions of role {role_name}"):
            current = self._current_revocation(role_name)
            if current is not None and current >= cutoff:
                return RevokeRoleSessionsResult(
                    policy_name=REVOKE_SESSIONS_POLICY_NAME, cutoff_in_effect=current, changed=False
                )
            self._iam.put_role_policy(
                RoleName=role_name,
                PolicyName=REVOKE_SESSIONS_POLICY_NAME,
                PolicyDocument=_dumps(revoke_sessions_policy(cutoff)),
            )
        activity.logger.info("revoked sessions of %s issued before %s", role_name, cutoff)
        return RevokeRoleSessionsResult(
            policy_name=REVOKE_SESSIONS_POLICY_NAME, cutoff_in_effect=cutoff, changed=True
        )

    def _current_revocation(self, role_name: str) -> datetime | None:
        try:
            document = self._iam.get_role_policy(
                RoleName=role_name, PolicyName=REVOKE_SESSIONS_POLICY_NAME
            )["PolicyDocument"]
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            raise
        return policy_cutoff(document)


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))
