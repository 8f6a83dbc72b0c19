"""What a compromised credential did, in the playbook's groups (3.2), and everything it
made or changed (3.3), read from CloudTrail records. Pure: no AWS, no clock."""

from collections import Counter
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


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


class FailedCall(BaseModel):
    """Calls of one API that failed with one error: what the attacker tried and could not
    do (AccessDenied and its kin), or tried on something that was not there."""

    api: str  # "secretsmanager.amazonaws.com:GetSecretValue"
    error_code: str
    calls: int
    first_at: str


class DataRead(BaseModel):
    """What a data-access call that worked read: the parameter, secret, object or key it
    named, not only the API."""

    api: str  # "ssm.amazonaws.com:GetParameter"
    target: str  # /orders/db-host, s3://bucket/key, a secret's id, a KMS key
    calls: int


class OtherChange(BaseModel):
    """A change in the case's window made with a credential the case did not find to be
    the attacker's: left alone, shown so that a human can confirm it (it may be another
    case's attacker)."""

    event_name: str
    target: str
    who: str  # the caller's ARN (or its identity type)
    access_key_id: str
    source_ip: str
    event_time: str
    event_id: str


class ActivityReport(BaseModel):
    """Everything the classified records say, for the plan and the report."""

    counts: dict[Group, int]
    examples: dict[Group, list[str]]
    failed_calls: int
    resources: list[AttackerResource]
    changes: list[AttackerChange]
    new_credentials: list[NewCredential]
    # Added later: reports recorded before them decode with none.
    failures: list[FailedCall] = Field(default_factory=list)
    data_reads: list[DataRead] = Field(default_factory=list)
    others_changes: list[OtherChange] = Field(default_factory=list)
    others_read: bool = False  # whether others' changes were looked for at all


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
    failures: dict[tuple[str, str], FailedCall] = {}
    reads: dict[tuple[str, str], DataRead] = {}
    for record in sorted(records, key=lambda r: (r.get("eventTime", ""), r.get("eventID", ""))):
        name = str(record.get("eventName", ""))
        group = group_of(name)
        counts[group] += 1
        bucket = examples.setdefault(group, [])
        if name not in bucket and len(bucket) < 5:
            bucket.append(name)
        api = f"{record.get('eventSource', '')}:{name}"
        error = record.get("errorCode")
        if error:
            failed += 1
            seen = failures.setdefault(
                (api, str(error)),
                FailedCall(
                    api=api, error_code=str(error), calls=0, first_at=str(record.get("eventTime"))
                ),
            )
            seen.calls += 1
            continue
        if group is Group.DATA_ACCESS:
            for target in data_targets(record):
                reads.setdefault(
                    (api, target), DataRead(api=api, target=target, calls=0)
                ).calls += 1
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
        failures=list(failures.values()),
        data_reads=list(reads.values()),
    )


def data_targets(record: dict[str, Any]) -> list[str]:
    """What a data-access call named: parameters, a secret, an object, a KMS key. A KMS
    Decrypt names its key only in the ciphertext: CloudTrail lists it among the record's
    resources."""
    request = record.get("requestParameters") or {}
    name = str(record.get("eventName", ""))
    if name == "GetObject" and request.get("bucketName"):
        return [f"s3://{request['bucketName']}/{request.get('key', '')}"]
    if name == "GetParameters":
        return [str(n) for n in request.get("names") or []]
    for field in ("name", "secretId", "keyId"):
        if request.get(field):
            return [str(request[field])]
    arns = [str(r["ARN"]) for r in record.get("resources") or [] if r.get("ARN")]
    return arns or ["(not named in the record)"]


# Calls that change an account: the playbook's lists, and what else the classifier knows
# to make or change something. Another principal's calls of these in the case's window are
# shown for a human to confirm; its reads are not.
CHANGE_EVENTS = (
    (IDENTITY_AND_PERSISTENCE - {"GetFederationToken"})
    | RESOURCE_CREATION
    | COVERING_TRACKS
    | {"StartLogging", "DeleteUser", "DeleteRole"}
)

# Request parameters that name what a change acted on, in the order they are looked for.
_TARGET_PARAMETERS = (
    "userName",
    "roleName",
    "groupName",
    "instanceProfileName",
    "functionName",
    "policyArn",
    "name",
    "trailName",
    "bucketName",
    "detectorId",
)


def changes_by_others(
    records: list[dict[str, Any]], attacker_keys: frozenset[str]
) -> list[OtherChange]:
    """The changes that worked, made with none of the attacker's keys, in time order."""
    found = []
    for record in sorted(records, key=lambda r: (r.get("eventTime", ""), r.get("eventID", ""))):
        name = str(record.get("eventName", ""))
        identity = record.get("userIdentity") or {}
        key = str(identity.get("accessKeyId") or "")
        if name not in CHANGE_EVENTS or record.get("errorCode") or key in attacker_keys:
            continue
        request = record.get("requestParameters") or {}
        target = next((str(request[p]) for p in _TARGET_PARAMETERS if request.get(p)), "")
        if name == "RunInstances":
            items = _get(record, "responseElements", "instancesSet", "items") or []
            target = ", ".join(str(i.get("instanceId")) for i in items) or target
        found.append(
            OtherChange(
                event_name=name,
                target=target,
                who=str(identity.get("arn") or identity.get("type") or "unknown"),
                access_key_id=key,
                source_ip=str(record.get("sourceIPAddress", "")),
                event_time=str(record.get("eventTime", "")),
                event_id=str(record.get("eventID", "")),
            )
        )
    return found


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
