"""What a compromised credential did, in the playbook's groups (3.2), and everything it
made or changed (3.3), read from CloudTrail records. Pure: no AWS, no clock."""

from collections import Counter
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class Group(StrEnum):
    IDENTITY_AND_PERSISTENCE = "identity_and_persistence"
    RESOURCE_CREATION = "resource_creation"
    DATA_ACCESS = "data_access"
    COVERING_TRACKS = "covering_tracks"
    OTHER = "other"


# The playbook's event lists, with the names CloudTrail really records (Lambda's carry
# their API version) and the federation token, which mints a credential.
IDENTITY_AND_PERSISTENCE = frozenset(
    {
        "CreateUser",
        "CreateRole",
        "CreateGroup",
        "CreateAccessKey",
        "CreateLoginProfile",
        "UpdateLoginProfile",
        "AttachUserPolicy",
        "AttachRolePolicy",
        "AttachGroupPolicy",
        "PutUserPolicy",
        "PutRolePolicy",
        "PutGroupPolicy",
        "UpdateAssumeRolePolicy",
        "CreateInstanceProfile",
        "AddRoleToInstanceProfile",
        "AddUserToGroup",
        "CreatePolicy",
        "CreatePolicyVersion",
        "SetDefaultPolicyVersion",
        "DeleteUserPolicy",
        "DeleteRolePolicy",
        "DetachUserPolicy",
        "DetachRolePolicy",
        "GetFederationToken",
    }
)
RESOURCE_CREATION = frozenset(
    {
        "RunInstances",
        "CreateFunction20150331",
        "UpdateFunctionCode20150331v2",
        "AddPermission20150331v2",
        "CreateBucket",
        "CreateDBInstance",
        "CreateCluster",
    }
)
DATA_ACCESS = frozenset(
    {"GetObject", "GetSecretValue", "GetParameter", "GetParameters", "Decrypt", "GenerateDataKey"}
)
COVERING_TRACKS = frozenset(
    {
        "DeleteTrail",
        "StopLogging",
        "UpdateTrail",
        "PutEventSelectors",
        "DeleteFlowLogs",
        "DeleteBucket",
        "DeleteDetector",
    }
)


def group_of(event_name: str) -> Group:
    if event_name in IDENTITY_AND_PERSISTENCE:
        return Group.IDENTITY_AND_PERSISTENCE
    if event_name in COVERING_TRACKS:
        return Group.COVERING_TRACKS
    if event_name in RESOURCE_CREATION or event_name.startswith("Create"):
        return Group.RESOURCE_CREATION
    if event_name in DATA_ACCESS:
        return Group.DATA_ACCESS
    return Group.OTHER


class ResourceKind(StrEnum):
    USER = "user"
    ACCESS_KEY = "access_key"
    LOGIN_PROFILE = "login_profile"
    USER_POLICY_ATTACHMENT = "user_policy_attachment"
    USER_INLINE_POLICY = "user_inline_policy"
    GROUP_MEMBERSHIP = "group_membership"
    ROLE = "role"
    ROLE_POLICY_ATTACHMENT = "role_policy_attachment"
    ROLE_INLINE_POLICY = "role_inline_policy"
    INSTANCE_PROFILE = "instance_profile"
    INSTANCE_PROFILE_ROLE = "instance_profile_role"
    INSTANCE = "instance"
    FUNCTION = "function"
    FUNCTION_PERMISSION = "function_permission"
    MANAGED_POLICY = "managed_policy"


class ChangeKind(StrEnum):
    """Changes to things the attacker did not make: restored in recovery, not removed."""

    TRUST_POLICY = "trust_policy"
    FUNCTION_CODE = "function_code"
    LOGGING_STOPPED = "logging_stopped"
    TRAIL_DELETED = "trail_deleted"
    TRAIL_UPDATED = "trail_updated"
    EVENT_SELECTORS = "event_selectors"
    # Permissions of a user or role the attacker did not make: an inline policy it
    # replaced or deleted (`detail` is the policy's name), a managed policy it detached
    # (`detail` is the policy's ARN); and a managed policy's default version it changed
    # (`target` is the policy's ARN, `detail` the version it made, if any).
    USER_POLICY = "user_policy"
    ROLE_POLICY = "role_policy"
    USER_POLICY_DETACHED = "user_policy_detached"
    ROLE_POLICY_DETACHED = "role_policy_detached"
    POLICY_VERSION = "policy_version"


# What an attacker's write of a policy onto a user or role becomes when that user or role
# is not its own and the policy was there before: a change to restore, not a removal.
REPLACED_POLICY_CHANGE = {
    ResourceKind.USER_INLINE_POLICY: ChangeKind.USER_POLICY,
    ResourceKind.ROLE_INLINE_POLICY: ChangeKind.ROLE_POLICY,
}
POLICY_PARTS = frozenset(
    {
        ResourceKind.USER_INLINE_POLICY,
        ResourceKind.ROLE_INLINE_POLICY,
        ResourceKind.USER_POLICY_ATTACHMENT,
        ResourceKind.ROLE_POLICY_ATTACHMENT,
    }
)


class AttackerResource(BaseModel):
    """Something an attacker's credential made. `owner` is the user, role or function it
    belongs to, for the pieces that exist only inside one."""

    kind: ResourceKind
    name: str
    owner: str | None = None
    made_by: str  # the access key id that made it
    event_id: str
    event_time: str

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.kind.value, self.name, self.owner)


class AttackerChange(BaseModel):
    kind: ChangeKind
    target: str
    detail: str = ""  # which policy or version, for the kinds that need one
    made_by: str
    event_id: str
    event_time: str


class NewCredential(BaseModel):
    """A credential the attacker minted: investigated in the same case, like the first."""

    access_key_id: str
    kind: str  # access_key, federation_token, role_session
    principal: str  # the user, or the role assumed
    made_by: str
    event_id: str
    event_time: str = ""


class ActivityReport(BaseModel):
    """Everything the classified records say, for the plan and the report."""

    counts: dict[Group, int]
    examples: dict[Group, list[str]]
    failed_calls: int
    resources: list[AttackerResource]
    changes: list[AttackerChange]
    new_credentials: list[NewCredential]


def _get(record: dict[str, Any], *path: str) -> Any:
    value: Any = record
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def classify(records: list[dict[str, Any]]) -> ActivityReport:
    """Group the calls, and find what the successful ones made or changed."""
    counts: Counter[Group] = Counter()
    examples: dict[Group, list[str]] = {}
    resources: dict[tuple[str, str, str | None], AttackerResource] = {}
    changes: list[AttackerChange] = []
    minted: dict[str, NewCredential] = {}
    failed = 0
    for record in sorted(records, key=lambda r: (r.get("eventTime", ""), r.get("eventID", ""))):
        name = str(record.get("eventName", ""))
        group = group_of(name)
        counts[group] += 1
        bucket = examples.setdefault(group, [])
        if name not in bucket and len(bucket) < 5:
            bucket.append(name)
        if record.get("errorCode"):
            failed += 1
            continue
        found, change, credential = _made_by(record)
        for resource in found:
            resources.setdefault(resource.key, resource)
        if change is not None:
            changes.append(change)
        if credential is not None:
            minted.setdefault(credential.access_key_id, credential)
    return ActivityReport(
        counts={g: counts.get(g, 0) for g in Group},
        examples=examples,
        failed_calls=failed,
        resources=list(resources.values()),
        changes=changes,
        new_credentials=list(minted.values()),
    )


def _made_by(
    record: dict[str, Any],
) -> tuple[list[AttackerResource], AttackerChange | None, NewCredential | None]:
    name = str(record.get("eventName", ""))
    request = record.get("requestParameters") or {}
    response = record.get("responseElements") or {}
    made_by = str(_get(record, "userIdentity", "accessKeyId") or "")
    common = {
        "made_by": made_by,
        "event_id": str(record.get("eventID", "")),
        "event_time": str(record.get("eventTime", "")),
    }

    def resource(kind: ResourceKind, name: str, owner: str | None = None) -> AttackerResource:
        return AttackerResource(kind=kind, name=name, owner=owner, **common)

    def change(kind: ChangeKind, target: str, detail: str = "") -> AttackerChange:
        return AttackerChange(kind=kind, target=target, detail=detail, **common)

    user, role = request.get("userName"), request.get("roleName")
    if name == "CreateUser" and user:
        return [resource(ResourceKind.USER, user)], None, None
    if name == "CreateAccessKey":
        key = response.get("accessKey") or {}
        key_id, owner = key.get("accessKeyId"), key.get("userName") or user
        if key_id and owner:
            credential = NewCredential(
                access_key_id=key_id,
                kind="access_key",
                principal=owner,
                made_by=made_by,
                event_id=common["event_id"],
                event_time=common["event_time"],
            )
            return [resource(ResourceKind.ACCESS_KEY, key_id, owner)], None, credential
    if name == "CreateLoginProfile" and user:
        return [resource(ResourceKind.LOGIN_PROFILE, user, user)], None, None
    if name == "AttachUserPolicy" and user:
        return (
            [resource(ResourceKind.USER_POLICY_ATTACHMENT, request["policyArn"], user)],
            None,
            None,
        )
    if name == "PutUserPolicy" and user:
        return [resource(ResourceKind.USER_INLINE_POLICY, request["policyName"], user)], None, None
    if name == "AddUserToGroup" and user:
        return [resource(ResourceKind.GROUP_MEMBERSHIP, request["groupName"], user)], None, None
    if name == "CreateRole" and role:
        return [resource(ResourceKind.ROLE, role)], None, None
    if name == "AttachRolePolicy" and role:
        return (
            [resource(ResourceKind.ROLE_POLICY_ATTACHMENT, request["policyArn"], role)],
            None,
            None,
        )
    if name == "PutRolePolicy" and role:
        return [resource(ResourceKind.ROLE_INLINE_POLICY, request["policyName"], role)], None, None
    if name == "UpdateAssumeRolePolicy" and role:
        return [], change(ChangeKind.TRUST_POLICY, role), None
    if name == "DeleteUserPolicy" and user:
        return [], change(ChangeKind.USER_POLICY, user, request["policyName"]), None
    if name == "DeleteRolePolicy" and role:
        return [], change(ChangeKind.ROLE_POLICY, role, request["policyName"]), None
    if name == "DetachUserPolicy" and user:
        return [], change(ChangeKind.USER_POLICY_DETACHED, user, request["policyArn"]), None
    if name == "DetachRolePolicy" and role:
        return [], change(ChangeKind.ROLE_POLICY_DETACHED, role, request["policyArn"]), None
    if name == "CreatePolicy":
        arn = _get(response, "policy", "arn")
        return ([resource(ResourceKind.MANAGED_POLICY, arn)] if arn else []), None, None
    if name == "CreatePolicyVersion":
        version = _get(response, "policyVersion", "versionId") or ""
        return [], change(ChangeKind.POLICY_VERSION, request["policyArn"], version), None
    if name == "SetDefaultPolicyVersion":
        return [], change(ChangeKind.POLICY_VERSION, request["policyArn"]), None
    if name == "CreateInstanceProfile":
        return [resource(ResourceKind.INSTANCE_PROFILE, request["instanceProfileName"])], None, None
    if name == "AddRoleToInstanceProfile":
        profile = request["instanceProfileName"]
        return [resource(ResourceKind.INSTANCE_PROFILE_ROLE, role or "", profile)], None, None
    if name == "RunInstances":
        items = _get(response, "instancesSet", "items") or []
        return [resource(ResourceKind.INSTANCE, i["instanceId"]) for i in items], None, None
    if name == "CreateFunction20150331":
        function = str(response.get("functionName") or request.get("functionName") or "")
        return [resource(ResourceKind.FUNCTION, function)], None, None
    if name == "AddPermission20150331v2":
        function = request.get("functionName", "")
        statement = request.get("statementId", "")
        return [resource(ResourceKind.FUNCTION_PERMISSION, statement, function)], None, None
    if name == "UpdateFunctionCode20150331v2":
        return [], change(ChangeKind.FUNCTION_CODE, request.get("functionName", "")), None
    if name in {"GetFederationToken", "AssumeRole"}:
        key_id = _get(response, "credentials", "accessKeyId")
        if key_id:
            principal = (
                request.get("roleArn", "")
                if name == "AssumeRole"
                else _get(response, "federatedUser", "arn") or request.get("name", "")
            )
            return (
                [],
                None,
                NewCredential(
                    access_key_id=key_id,
                    kind="role_session" if name == "AssumeRole" else "federation_token",
                    principal=principal,
                    made_by=made_by,
                    event_id=common["event_id"],
                    event_time=common["event_time"],
                ),
            )
    trail = request.get("name") or request.get("trailName") or ""
    if name == "StopLogging":
        return [], change(ChangeKind.LOGGING_STOPPED, trail), None
    if name == "DeleteTrail":
        return [], change(ChangeKind.TRAIL_DELETED, trail), None
    if name == "UpdateTrail":
        return [], change(ChangeKind.TRAIL_UPDATED, trail), None
    if name == "PutEventSelectors":
        return [], change(ChangeKind.EVENT_SELECTORS, trail), None
    return [], None, None
