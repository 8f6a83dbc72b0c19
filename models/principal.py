"""The compromised credential and the principal behind it."""

from enum import StrEnum

from pydantic import BaseModel


class CredentialKind(StrEnum):
    IAM_USER_KEY = "iam_user_key"  # long-term AKIA... key of an IAM user
    INSTANCE_ROLE_SESSION = "instance_role_session"  # ASIA... key from an instance profile
    ROLE_SESSION = "role_session"  # ASIA... key of a role assumed some other way
    ROOT = "root"
    UNKNOWN = "unknown"


class PrincipalType(StrEnum):
    IAM_USER = "IAMUser"
    ASSUMED_ROLE = "AssumedRole"
    ROOT = "Root"
    FEDERATED_USER = "FederatedUser"
    UNKNOWN = "Unknown"


class Principal(BaseModel):
    """Who a credential acts as. For a role session, also the role behind it."""

    type: PrincipalType
    account_id: str
    arn: str | None = None
    principal_id: str | None = None
    user_name: str | None = None
    role_name: str | None = None
    role_arn: str | None = None
    session_name: str | None = None
    instance_id: str | None = None
    instance_profile_arn: str | None = None


class Credential(BaseModel):
    """A credential under investigation in a case."""

    access_key_id: str
    kind: CredentialKind
    principal: Principal
