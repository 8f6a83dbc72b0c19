"""The principal a finding names, as GuardDuty says it, before IAM confirms it: what the
case acts on when resolving the principal fails (a call denied, an API missing), so
containment never waits behind that failure."""

import re

from models.finding import Finding
from models.principal import Credential, CredentialKind, Principal, PrincipalType

# IAM's names: a role or user name is 1-64 of these characters.
IAM_NAME = re.compile(r"[\w+=,.@-]{1,64}")


def session_name(principal_id: str | None) -> str | None:
    """The session part of an assumed role's principal id (AROA...:session)."""
    if principal_id and ":" in principal_id:
        return principal_id.split(":", 1)[1]
    return None


def named_by_finding(finding: Finding) -> Credential:
    """The credential's principal from the finding alone. A role session is a plain role
    session here, even from an instance: that the instance holds the role is not checked,
    so its containment revokes the role's sessions and leaves the instance alone."""
    keys = finding.access_key
    account = finding.account_id
    user_type = (keys.user_type or "").lower()
    name = keys.user_name if keys.user_name and IAM_NAME.fullmatch(keys.user_name) else None
    kind = CredentialKind.UNKNOWN
    principal = Principal(
        type=PrincipalType.UNKNOWN, account_id=account, principal_id=keys.principal_id
    )
    if user_type == "assumedrole" and name:
        session = session_name(keys.principal_id)
        kind = CredentialKind.ROLE_SESSION
        principal = Principal(
            type=PrincipalType.ASSUMED_ROLE,
            account_id=account,
            arn=f"arn:aws:sts::{account}:assumed-role/{name}/{session or ''}".rstrip("/"),
            principal_id=keys.principal_id,
            role_name=name,
            role_arn=f"arn:aws:iam::{account}:role/{name}",
            session_name=session,
        )
    elif user_type == "root":
        kind = CredentialKind.ROOT
        principal = Principal(
            type=PrincipalType.ROOT, account_id=account, arn=f"arn:aws:iam::{account}:root"
        )
    elif user_type == "iamuser" and name:
        kind = CredentialKind.IAM_USER_KEY
        principal = Principal(
            type=PrincipalType.IAM_USER,
            account_id=account,
            # The user's path is not in the finding; IAM acts on the name alone.
            arn=f"arn:aws:iam::{account}:user/{name}",
            principal_id=keys.principal_id,
            user_name=name,
        )
    return Credential(access_key_id=keys.access_key_id, kind=kind, principal=principal)
