"""IAM: who a credential belongs to, what that principal may do, and revoking role sessions."""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import (
    ERROR_ACCESS_DENIED,
    ERROR_INVALID_REQUEST,
    AwsClients,
    at_once,
    aws_errors,
    error_code,
    is_denied,
    to_application_error,
)
from activities.evidence import EvidenceStore
from activities.hands_off import Target, refuse_if_hands_off, why_hands_off
from activities.liveness import heartbeating
from config.names import (
    AWS_QUARANTINE_POLICY_PREFIX,
    DENY_ALL_POLICY_NAME,
    REVOKE_SESSIONS_POLICY_NAME,
    REVOKE_USER_TOKENS_POLICY_NAME,
)
from models.activities import (
    AccessKeyInput,
    AccessKeyResult,
    CaptureRoleInput,
    CaptureUserInput,
    CaptureUserResult,
    ChangeResult,
    ContainmentInPlaceInput,
    ContainmentInPlaceResult,
    DenyUserTokensInput,
    ReleaseChangeInput,
    ReleaseChangeResult,
    ResolvePrincipalInput,
    ResolvePrincipalResult,
    RevokeRoleSessionsInput,
    RevokeRoleSessionsResult,
    RoleTrustInput,
    RoleTrustResult,
    TrustedPrincipal,
    UserInput,
)
from models.case import CaseChange, EvidenceRecord
from models.principal import Credential, CredentialKind, Principal, PrincipalType
from playbook.principal import IAM_NAME, session_name

TOKEN_ISSUE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def inline_policies(iam: Any, kind: Literal["user", "role"], name: str) -> list[dict[str, Any]]:
    """Every inline policy of a user or role, each as its name and document."""
    noun = kind.capitalize()
    get = getattr(iam, f"get_{kind}_policy")
    return [
        {
            "name": policy_name,
            "document": get(**{f"{noun}Name": name, "PolicyName": policy_name})["PolicyDocument"],
        }
        for page in iam.get_paginator(f"list_{kind}_policies").paginate(**{f"{noun}Name": name})
        for policy_name in page["PolicyNames"]
    ]


DENY_ALL_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Deny", "Action": ["*"], "Resource": ["*"]}],
}


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
    """The cut-off of a revocation policy: a statement denying every action on every
    resource to tokens issued before a time, and nothing more. Anything else under the
    policy's name is no revocation, and is replaced."""
    cutoffs = []
    statements = document.get("Statement", [])
    # IAM accepts a single statement object, and single strings for Action and Resource.
    for statement in [statements] if isinstance(statements, dict) else statements:
        condition = statement.get("Condition", {})
        value = condition.get("DateLessThan", {}).get("aws:TokenIssueTime")
        if (
            statement.get("Effect") == "Deny"
            and _as_list(statement.get("Action")) == ["*"]
            and _as_list(statement.get("Resource")) == ["*"]
            and list(condition) == ["DateLessThan"]
            and list(condition["DateLessThan"]) == ["aws:TokenIssueTime"]
            and isinstance(value, str)
        ):
            try:
                cutoffs.append(datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                raise ApplicationError(
                    f"a revocation policy's cut-off {value!r} is not a time Quench reads; "
                    "review it by hand",
                    type=ERROR_INVALID_REQUEST,
                    non_retryable=True,
                ) from None
    return max(cutoffs) if cutoffs else None


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value or [])


def trusted_principals(document: dict[str, Any], account_id: str) -> list[TrustedPrincipal]:
    """The principals an assume-role (trust) policy allows, in the order written."""
    if isinstance(document, str):
        document = json.loads(document)
    statements = document.get("Statement", [])
    found: list[TrustedPrincipal] = []
    for statement in [statements] if isinstance(statements, dict) else statements:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") != "Allow" or not any(
            a == "*" or a.startswith("sts:AssumeRole") for a in actions
        ):
            continue
        principal = statement.get("Principal", {})
        if principal == "*":
            principal = {"*": ["*"]}
        for kind, values in principal.items():
            for value in [values] if isinstance(values, str) else values:
                outside = (
                    value == "*"
                    or (kind == "AWS" and not _in_account(value, account_id))
                    or kind == "Federated"
                )
                found.append(TrustedPrincipal(kind=kind, value=value, outside_account=outside))
    return found


def _in_account(principal: str, account_id: str) -> bool:
    if principal == account_id:
        return True
    parts = principal.split(":")
    return len(parts) > 4 and parts[4] == account_id


def validate_role_name(role_name: str) -> str:
    if not IAM_NAME.fullmatch(role_name):
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
    @heartbeating
    def resolve_principal(self, input: ResolvePrincipalInput) -> ResolvePrincipalResult:
        """Turn the finding's access key details into a principal, checked against IAM and EC2."""
        finding = input.finding
        keys = finding.access_key
        account = finding.account_id
        user_type = (keys.user_type or "").lower()
        own = self._quench_own(input)
        if own is not None:
            # Quench itself: nothing to look up, and nothing it will do to itself.
            return own

        # Whether the principal is Quench's to change: read beside it when its names are
        # known first (a role session's), else once it is known.
        hands_off: str | None = None
        hands_off_read = False
        if user_type == "assumedrole" and keys.access_key_id.startswith("ASIA"):
            role_name = validate_role_name(keys.user_name or "")
            session = session_name(keys.principal_id)
            instance_id = finding.instance_id or (
                session if session and session.startswith("i-") else None
            )
            # The role, its instance's profile and whether either is protected, read at once.
            protected = self._hands_off_of(
                input, Target(account_id=account, role_name=role_name, instance_id=instance_id)
            )

            def profile() -> str | None:
                if not instance_id:
                    return None
                return self._instance_profile_with_role(instance_id, role_name)

            role, profile_arn, hands_off = at_once(
                partial(self._get_role, role_name), profile, protected
            )
            hands_off_read = True
            kind = CredentialKind.ROLE_SESSION
            if instance_id:
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
        target = Target(
            account_id=account,
            user_name=principal.user_name,
            role_name=principal.role_name,
            instance_id=principal.instance_id,
            access_key_id=keys.access_key_id,
        )
        if not hands_off_read:
            hands_off = self._hands_off_of(input, target)()
        return ResolvePrincipalResult(
            credential=Credential(access_key_id=keys.access_key_id, kind=kind, principal=principal),
            hands_off=hands_off,
        )

    def _hands_off_of(
        self, input: ResolvePrincipalInput, target: Target
    ) -> Callable[[], str | None]:
        """Why the target is not Quench's to change on its own, read when called. The
        access key is the finding's: Quench's own key is never contained by itself."""
        keyed = Target(
            account_id=target.account_id,
            user_name=target.user_name,
            role_name=target.role_name,
            instance_id=target.instance_id,
            access_key_id=input.finding.access_key.access_key_id,
        )
        return lambda: why_hands_off(self._clients, keyed, input.protected_names)

    def _quench_own(self, input: ResolvePrincipalInput) -> ResolvePrincipalResult | None:
        """The finding's credential, when it is Quench's own: its key, the worker's user,
        or a role Quench assumes."""
        identity = self._clients.identity
        keys = input.finding.access_key
        if identity is None:
            return None
        assumed = (keys.user_type or "").lower() == "assumedrole"
        account = input.finding.account_id
        why = identity.owns(
            account,
            user_name=None if assumed else keys.user_name,
            role_name=keys.user_name if assumed else None,
            access_key_id=keys.access_key_id,
        )
        if why is None:
            return None
        principal = Principal(
            type=PrincipalType.ASSUMED_ROLE if assumed else PrincipalType.IAM_USER,
            account_id=account,
            principal_id=keys.principal_id,
            user_name=None if assumed else keys.user_name,
            role_name=keys.user_name if assumed else None,
        )
        kind = CredentialKind.ROLE_SESSION if assumed else CredentialKind.IAM_USER_KEY
        return ResolvePrincipalResult(
            credential=Credential(access_key_id=keys.access_key_id, kind=kind, principal=principal),
            hands_off=why,
            quench_own=True,
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
    @heartbeating
    def list_role_trust(self, input: RoleTrustInput) -> RoleTrustResult:
        """Who the role's trust policy lets assume it, each flagged when it is outside the
        account: the way an attacker may come back for a new session."""
        role_name = validate_role_name(input.role_name)
        with aws_errors(f"read the trust policy of {role_name}"):
            document = self._iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
        return RoleTrustResult(
            role_name=role_name, principals=trusted_principals(document, input.account_id)
        )

    @activity.defn
    @heartbeating
    def capture_role_state(self, input: CaptureRoleInput) -> EvidenceRecord:
        """Evidence: the role, its trust policy, inline and attached policies, profiles, tags."""
        role_name = validate_role_name(input.role_name)
        name = f"iam-role-{role_name.lower()}"
        iam = self._iam
        # A retry finds the evidence kept and returns it, whatever IAM answers now.
        found = self._evidence.existing(self._evidence.key_for(input.case_id, name))
        if found is not None:
            return found
        with aws_errors(f"capture role {role_name}"):
            # Every read at once (containment waits for them).
            role, inline, attached_policies, instance_profiles = at_once(
                lambda: iam.get_role(RoleName=role_name)["Role"],
                # A list, not a dict keyed by name: a policy named like a secret field
                # ("...Password") must not be redacted out of the evidence.
                lambda: inline_policies(iam, "role", role_name),
                partial(self._attached_role_policies, role_name),
                partial(self._role_profiles, role_name),
            )
        document = {
            "role": role,
            "trust_policy": role.get("AssumeRolePolicyDocument"),
            "inline_policies": inline,
            "attached_policies": attached_policies,
            "instance_profiles": instance_profiles,
        }
        return self._evidence.put_json(input.case_id, name, document)

    def _get_role(self, role_name: str) -> dict[str, Any]:
        with aws_errors(f"get role {role_name}"):
            return dict(self._iam.get_role(RoleName=role_name)["Role"])

    def _attached_role_policies(self, role_name: str) -> list[dict[str, Any]]:
        return [
            self._policy_with_document(policy["PolicyArn"])
            for page in self._iam.get_paginator("list_attached_role_policies").paginate(
                RoleName=role_name
            )
            for policy in page["AttachedPolicies"]
        ]

    def _role_profiles(self, role_name: str) -> list[dict[str, Any]]:
        return [
            {"name": p["InstanceProfileName"], "arn": p["Arn"]}
            for page in self._iam.get_paginator("list_instance_profiles_for_role").paginate(
                RoleName=role_name
            )
            for p in page["InstanceProfiles"]
        ]

    def _login_profile(self, user_name: str) -> dict[str, Any] | None:
        try:
            return dict(self._iam.get_login_profile(UserName=user_name)["LoginProfile"])
        except ClientError as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            return None

    def _attached_user_policies(self, user_name: str) -> list[dict[str, Any]]:
        return [
            p
            for page in self._iam.get_paginator("list_attached_user_policies").paginate(
                UserName=user_name
            )
            for p in page["AttachedPolicies"]
        ]

    def _keys_with_last_use(self, user_name: str) -> list[dict[str, Any]]:
        iam = self._iam
        return [
            {
                **key,
                "last_used": iam.get_access_key_last_used(AccessKeyId=key["AccessKeyId"]).get(
                    "AccessKeyLastUsed"
                ),
            }
            for key in iam.list_access_keys(UserName=user_name)["AccessKeyMetadata"]
        ]

    def _policy_with_document(self, policy_arn: str) -> dict[str, Any]:
        policy = self._iam.get_policy(PolicyArn=policy_arn)["Policy"]
        version = self._iam.get_policy_version(
            PolicyArn=policy_arn, VersionId=policy["DefaultVersionId"]
        )["PolicyVersion"]
        return {"policy": policy, "document": version["Document"]}

    @activity.defn
    @heartbeating
    def revoke_role_sessions(self, input: RevokeRoleSessionsInput) -> RevokeRoleSessionsResult:
        """Deny every session of the role issued before the cut-off (AWSRevokeOlderSessions)."""
        role_name = validate_role_name(input.role_name)
        return self._deny_tokens_before(
            f"role {role_name}",
            REVOKE_SESSIONS_POLICY_NAME,
            input.cutoff,
            refuse=lambda: refuse_if_hands_off(
                self._clients, input, "iam:PutRolePolicy", role_name=role_name
            ),
            get=lambda: self._iam.get_role_policy(
                RoleName=role_name, PolicyName=REVOKE_SESSIONS_POLICY_NAME
            ),
            put=lambda document: self._iam.put_role_policy(
                RoleName=role_name, PolicyName=REVOKE_SESSIONS_POLICY_NAME, PolicyDocument=document
            ),
        )

    @activity.defn
    @heartbeating
    def deny_user_tokens_before(self, input: DenyUserTokensInput) -> RevokeRoleSessionsResult:
        """Deny the user's session tokens issued before the cut-off: GetSessionToken and
        GetFederationToken sessions survive the deactivation of the key that made them."""
        user = input.user_name
        return self._deny_tokens_before(
            f"user {user}",
            REVOKE_USER_TOKENS_POLICY_NAME,
            input.cutoff,
            refuse=lambda: refuse_if_hands_off(
                self._clients, input, "iam:PutUserPolicy", user_name=user
            ),
            get=lambda: self._iam.get_user_policy(
                UserName=user, PolicyName=REVOKE_USER_TOKENS_POLICY_NAME
            ),
            put=lambda document: self._iam.put_user_policy(
                UserName=user, PolicyName=REVOKE_USER_TOKENS_POLICY_NAME, PolicyDocument=document
            ),
        )

    def _deny_tokens_before(
        self,
        whose: str,
        policy_name: str,
        cutoff: datetime,
        refuse: Callable[[], None],
        get: Callable[[], dict[str, Any]],
        put: Callable[[str], object],
    ) -> RevokeRoleSessionsResult:
        """A policy already in place with the same or a later cut-off is left as it is: a
        later revocation by someone else is never weakened. If it cannot be read (a denied
        read), the deny is written anyway and the result says so: denying the attacker's
        tokens matters more than keeping a later cut-off. `refuse` raises when the
        principal is not Quench's to change; it is read at the same time as the policy."""
        cutoff = cutoff.astimezone(UTC).replace(microsecond=0)
        doing = f"deny tokens of {whose} issued before {cutoff.isoformat()}"
        unread = ""

        with aws_errors(doing):
            try:
                _, in_place = at_once(refuse, get)
                current = policy_cutoff(in_place["PolicyDocument"])
            except ClientError as exc:
                if error_code(exc) == "NoSuchEntity":
                    current = None
                elif is_denied(exc):
                    current = None
                    unread = to_application_error(exc, f"read {policy_name}").message
                else:
                    raise
            if current is not None and current >= cutoff:
                return RevokeRoleSessionsResult(
                    policy_name=policy_name, cutoff_in_effect=current, changed=False
                )
            if unread:
                # Unread, the policy may hold a later cut-off (a console "Revoke active
                # sessions" since the approval): now is at least as late as any.
                cutoff = max(cutoff, datetime.now(UTC).replace(microsecond=0))
            put(_dumps(revoke_sessions_policy(cutoff)))
        activity.logger.info("denied tokens of %s issued before %s", whose, cutoff)
        return RevokeRoleSessionsResult(
            policy_name=policy_name,
            cutoff_in_effect=cutoff,
            changed=True,
            unread=unread,
            replaced=current,
        )

    @activity.defn
    @heartbeating
    def capture_user_state(self, input: CaptureUserInput) -> CaptureUserResult:
        """Evidence: the user, its keys with their last use, policies, groups, console
        access and MFA devices."""
        user_name = input.user_name
        name = f"iam-user-{_slug(user_name)}"
        iam = self._iam

        with aws_errors(f"capture user {user_name}"):
            # Every read at once (containment waits for them).
            found, profile, attached_policies, access_keys, inline, user, groups, mfa = at_once(
                lambda: self._evidence.existing(self._evidence.key_for(input.case_id, name)),
                partial(self._login_profile, user_name),
                partial(self._attached_user_policies, user_name),
                partial(self._keys_with_last_use, user_name),
                lambda: inline_policies(iam, "user", user_name),
                lambda: iam.get_user(UserName=user_name)["User"],
                lambda: iam.list_groups_for_user(UserName=user_name)["Groups"],
                lambda: iam.list_mfa_devices(UserName=user_name)["MFADevices"],
            )
            quarantine = [
                p["PolicyName"]
                for p in attached_policies
                if p["PolicyName"].startswith(AWS_QUARANTINE_POLICY_PREFIX)
            ]
            if found is not None:
                return CaptureUserResult(
                    evidence=found,
                    has_login_profile=profile is not None,
                    quarantine_policies=quarantine,
                )
            document = {
                "user": user,
                "access_keys": access_keys,
                "attached_policies": at_once(
                    *(
                        partial(self._policy_with_document, p["PolicyArn"])
                        for p in attached_policies
                    )
                ),
                "inline_policies": inline,
                "groups": groups,
                "login_profile": profile,
                "mfa_devices": mfa,
            }
        return CaptureUserResult(
            evidence=self._evidence.put_json(input.case_id, name, document),
            has_login_profile=profile is not None,
            quarantine_policies=quarantine,
        )

    @activity.defn
    @heartbeating
    def deactivate_access_key(self, input: AccessKeyInput) -> AccessKeyResult:
        """Make the key inactive. Never delete it: the key is evidence, and AWS's record of
        its last use goes with it."""
        refuse_if_hands_off(
            self._clients,
            input,
            "iam:UpdateAccessKey",
            user_name=input.user_name,
            access_key_id=input.access_key_id,
        )
        with aws_errors(f"deactivate {input.access_key_id}"):
            try:
                keys = self._iam.list_access_keys(UserName=input.user_name)["AccessKeyMetadata"]
            except ClientError as exc:
                if not is_denied(exc):
                    raise
                return self._deactivate_unlisted(input, exc)
            key = next((k for k in keys if k["AccessKeyId"] == input.access_key_id), None)
            if key is None:
                raise ApplicationError(
                    f"{input.access_key_id} is not a key of {input.user_name}",
                    type=ERROR_INVALID_REQUEST,
                    non_retryable=True,
                )
            if key["Status"] == "Inactive":
                return AccessKeyResult(
                    access_key_id=input.access_key_id, status="Inactive", changed=False
                )
            self._iam.update_access_key(
                UserName=input.user_name, AccessKeyId=input.access_key_id, Status="Inactive"
            )
        return AccessKeyResult(access_key_id=input.access_key_id, status="Inactive", changed=True)

    def _deactivate_unlisted(self, input: AccessKeyInput, listing: ClientError) -> AccessKeyResult:
        """The user's keys may not be listed: UpdateAccessKey names the user too, and IAM
        refuses a key that is not that user's. If it is denied as well, the listing's
        denial is what is said: nothing showed the key is the user's."""
        try:
            self._iam.update_access_key(
                UserName=input.user_name, AccessKeyId=input.access_key_id, Status="Inactive"
            )
        except ClientError as exc:
            if not is_denied(exc):
                raise
            raise ApplicationError(
                f"deactivate {input.access_key_id}: {error_code(listing)} (call "
                f"iam:ListAccessKeys), and {error_code(exc)} (call iam:UpdateAccessKey)",
                {"aws_error_code": error_code(listing), "call": "iam:ListAccessKeys"},
                type=ERROR_ACCESS_DENIED,
                non_retryable=True,
            ) from exc
        return AccessKeyResult(access_key_id=input.access_key_id, status="Inactive", changed=True)

    @activity.defn
    @heartbeating
    def check_containment_in_place(
        self, input: ContainmentInPlaceInput
    ) -> ContainmentInPlaceResult:
        """Whether what containment put in place is still there: an attacker with IAM
        write can delete or edit a revocation policy, or make a key active again."""
        iam = self._iam
        undone: list[str] = []
        with aws_errors("read whether the containment is still in place"):
            if input.role_name:
                undone += _revocation_undone(
                    lambda: iam.get_role_policy(
                        RoleName=input.role_name, PolicyName=REVOKE_SESSIONS_POLICY_NAME
                    ),
                    f"the {REVOKE_SESSIONS_POLICY_NAME} policy of role {input.role_name}",
                    input.cutoff,
                )
            if input.user_name:
                undone += _revocation_undone(
                    lambda: iam.get_user_policy(
                        UserName=input.user_name, PolicyName=REVOKE_USER_TOKENS_POLICY_NAME
                    ),
                    f"the {REVOKE_USER_TOKENS_POLICY_NAME} policy of user {input.user_name}",
                    input.cutoff,
                )
            if input.user_name and input.access_key_id:
                keys = iam.list_access_keys(UserName=input.user_name)["AccessKeyMetadata"]
                if any(
                    k["AccessKeyId"] == input.access_key_id and k["Status"] == "Active"
                    for k in keys
                ):
                    undone.append(
                        f"{input.access_key_id} of user {input.user_name} is active again"
                    )
        return ContainmentInPlaceResult(undone=undone)

    @activity.defn
    @heartbeating
    def deny_user_everything(self, input: UserInput) -> ChangeResult:
        """Deny the user every action (an inline policy, like AWS's AWSDenyAll): its key
        then does nothing even while it cannot be deactivated. Putting it again writes the
        same document."""
        refuse_if_hands_off(self._clients, input, "iam:PutUserPolicy", user_name=input.user_name)
        with aws_errors(f"deny {input.user_name} everything"):
            try:
                current = self._iam.get_user_policy(
                    UserName=input.user_name, PolicyName=DENY_ALL_POLICY_NAME
                )["PolicyDocument"]
            except ClientError as exc:
                if error_code(exc) != "NoSuchEntity" and not is_denied(exc):
                    raise
                current = None
            if current == DENY_ALL_POLICY:
                # In place already (an earlier run's, or someone's): not this one's change.
                return ChangeResult(changed=False, detail=f"{DENY_ALL_POLICY_NAME} was in place")
            self._iam.put_user_policy(
                UserName=input.user_name,
                PolicyName=DENY_ALL_POLICY_NAME,
                PolicyDocument=_dumps(DENY_ALL_POLICY),
            )
        activity.logger.info("denied %s everything", input.user_name)
        return ChangeResult(changed=True, detail=f"{DENY_ALL_POLICY_NAME} put on {input.user_name}")

    @activity.defn
    @heartbeating
    def release_change(self, input: ReleaseChangeInput) -> ReleaseChangeResult:
        """Undo one change the case made, after a false positive: a key it deactivated is
        made active; an inline policy it put is deleted only while it is still the one it
        wrote (by name and content), never one someone has since changed."""
        change = input.change
        iam = self._iam
        with aws_errors(change.describe()):
            if change.kind == "key_deactivated":
                keys = iam.list_access_keys(UserName=change.user_name)["AccessKeyMetadata"]
                key = next((k for k in keys if k["AccessKeyId"] == change.access_key_id), None)
                if key is None:
                    return ReleaseChangeResult(outcome="kept", detail="the key no longer exists")
                if key["Status"] == "Active":
                    return ReleaseChangeResult(outcome="already_released", detail="already active")
                iam.update_access_key(
                    UserName=change.user_name, AccessKeyId=change.access_key_id, Status="Active"
                )
                return ReleaseChangeResult(outcome="released", detail="active again")
            named = {"PolicyName": change.policy_name}
            if change.user_name:
                named["UserName"] = change.user_name
                get, delete = iam.get_user_policy, iam.delete_user_policy
            else:
                named["RoleName"] = change.role_name
                get, delete = iam.get_role_policy, iam.delete_role_policy
            try:
                document = get(**named)["PolicyDocument"]
            except ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                return ReleaseChangeResult(outcome="already_released", detail="already gone")
            if not _ours(document, change):
                return ReleaseChangeResult(
                    outcome="kept",
                    detail="changed since the case wrote it (another cut-off or statement): "
                    "left in place for a human",
                )
            if change.previous_cutoff is not None:
                # The policy denied older tokens before the case: that deny stays.
                earlier = _dumps(revoke_sessions_policy(change.previous_cutoff))
                if change.user_name:
                    iam.put_user_policy(PolicyDocument=earlier, **named)
                else:
                    iam.put_role_policy(PolicyDocument=earlier, **named)
                return ReleaseChangeResult(
                    outcome="released",
                    detail=f"the earlier cut-off {change.previous_cutoff.isoformat()} is back",
                )
            delete(**named)
        return ReleaseChangeResult(outcome="released", detail="deleted")

    @activity.defn
    @heartbeating
    def remove_login_profile(self, input: UserInput) -> ChangeResult:
        """Remove console access. No login profile means it is already gone."""
        refuse_if_hands_off(
            self._clients, input, "iam:DeleteLoginProfile", user_name=input.user_name
        )
        with aws_errors(f"remove console access of {input.user_name}"):
            try:
                self._iam.delete_login_profile(UserName=input.user_name)
            except ClientError as exc:
                if error_code(exc) == "NoSuchEntity":
                    return ChangeResult(changed=False, detail="no console access")
                raise
        return ChangeResult(changed=True, detail="login profile deleted")


def _ours(document: dict[str, Any], change: CaseChange) -> bool:
    """Whether an inline policy is still the one the case wrote: its deny-everything
    document, or a revocation with the very cut-off the case wrote."""
    if change.cutoff is None:
        return document == DENY_ALL_POLICY
    written = change.cutoff.astimezone(UTC).replace(microsecond=0)
    return document == revoke_sessions_policy(written)


def _revocation_undone(
    get: Callable[[], dict[str, Any]], policy: str, cutoff: datetime
) -> list[str]:
    """Why a revocation policy no longer denies what containment denied, if it does not."""
    try:
        in_effect = policy_cutoff(get()["PolicyDocument"])
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        return [f"{policy} was deleted"]
    if in_effect is None or in_effect < cutoff.astimezone(UTC).replace(microsecond=0):
        return [
            f"{policy} was edited: it no longer denies what was issued before {cutoff.isoformat()}"
        ]
    return []


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in value.lower())[:100]


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))
