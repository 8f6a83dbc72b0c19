"""Eradication: removing what the attacker made, one planned step at a time (playbook 3.4).

Every removal checks first: a resource already gone is done (NoSuchEntity means done), and
a protected one, by name or by the quench:protected tag, is never touched. A user or role
is written to evidence before it is deleted, and deleted with every part it still has; an
instance or function the attacker launched is captured before its removal too.
"""

import hashlib
import json
from collections.abc import Callable
from functools import partial
from typing import Any

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import (
    ERROR_INVALID_REQUEST,
    AwsClients,
    aws_errors,
    error_code,
    to_application_error,
)
from activities.evidence import EvidenceStore
from activities.hands_off import is_protected
from activities.iam import inline_policies
from activities.liveness import heartbeating
from activities.redaction import REDACTED
from config.names import PROTECTED_TAG_KEY
from models.activities import (
    CaptureLaunchedInput,
    CaptureLaunchedResult,
    RemoveResourceInput,
    RemoveResourceResult,
)
from models.case import EvidenceRecord

_GONE = {"NoSuchEntity", "ResourceNotFoundException", "InvalidInstanceID.NotFound"}


class EradicationActivities:
    def __init__(self, clients: AwsClients, evidence: EvidenceStore) -> None:
        self._clients = clients
        self._evidence = evidence
        self._operations: dict[str, Callable[[RemoveResourceInput], str]] = {
            "remove_function_permission": self._remove_function_permission,
            "delete_function": self._delete_function,
            "terminate_instance": self._terminate_instance,
            "delete_access_key": self._delete_access_key,
            "delete_login_profile": self._delete_login_profile,
            "detach_user_policy": self._detach_user_policy,
            "delete_user_policy": self._delete_user_policy,
            "remove_user_from_group": self._remove_user_from_group,
            "delete_user": self._delete_user,
            "remove_role_from_instance_profile": self._remove_role_from_instance_profile,
            "delete_instance_profile": self._delete_instance_profile,
            "detach_role_policy": self._detach_role_policy,
            "delete_role_policy": self._delete_role_policy,
            "delete_role": self._delete_role,
            "delete_managed_policy": self._delete_managed_policy,
        }

    @property
    def _iam(self) -> Any:
        return self._clients.client("iam")

    @activity.defn
    @heartbeating
    def remove_resource(self, input: RemoveResourceInput) -> RemoveResourceResult:
        operation = self._operations.get(input.operation)
        if operation is None:
            raise ApplicationError(
                f"no such removal: {input.operation}",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        subject = f"{input.operation} {input.name}" + (f" of {input.owner}" if input.owner else "")
        with aws_errors(subject):
            protected = self._protection(input)
            if protected:
                return RemoveResourceResult(outcome="skipped", detail=protected)
            try:
                detail = operation(input)
            except ClientError as exc:
                if error_code(exc) not in _GONE:
                    raise
                # Gone on a retry: this step's own earlier attempt deleted it and its
                # answer was lost (a worker crashed, a timeout). The evidence that attempt
                # wrote still belongs to the case.
                if activity.info().attempt > 1:
                    return RemoveResourceResult(
                        outcome="removed",
                        detail=f"removed by this step's earlier attempt ({error_code(exc)} "
                        "now: its answer was lost)",
                        evidence=self._snapshot(input),
                    )
                return RemoveResourceResult(
                    outcome="already_gone",
                    detail=error_code(exc),
                    evidence=self._snapshot(input),
                )
        activity.logger.info("eradication: %s", subject)
        return RemoveResourceResult(
            outcome="removed", detail=detail, evidence=self._snapshot(input)
        )

    @activity.defn
    @heartbeating
    def capture_launched_resource(self, input: CaptureLaunchedInput) -> CaptureLaunchedResult:
        """Evidence of an instance or function the attacker launched, before its removal:
        the instance's description (its user data by hash only: it may hold secrets), or
        the function's configuration (environment values redacted: they may hold secrets)
        and resource policy. Written once: a retry returns what the first attempt kept."""
        name = f"launched-{input.kind}-{_slug(input.name)}"
        found = self._evidence.existing(self._evidence.key_for(input.case_id, name))
        if found is not None:
            # What the first attempt could not read is said again: its result may be lost.
            return _launched_result(input.kind, found, self._evidence.read_json(found.key))
        capture = self._describe_instance if input.kind == "instance" else self._describe_function
        with aws_errors(f"capture {input.kind} {input.name} before its removal"):
            try:
                document = capture(input.name)
            except ClientError as exc:
                if error_code(exc) not in _GONE:
                    raise
                return CaptureLaunchedResult(
                    evidence=None, detail=f"already gone ({error_code(exc)}): nothing to keep"
                )
        if document is None:
            return CaptureLaunchedResult(evidence=None, detail="already gone: nothing to keep")
        evidence = self._evidence.put_json(input.case_id, name, document)
        return _launched_result(input.kind, evidence, document)

    def _describe_instance(self, instance_id: str) -> dict[str, Any] | None:
        ec2 = self._clients.client("ec2")
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instances = [i for r in reservations for i in r["Instances"]]
        if not instances:
            return None
        # What one read cannot give is said in the evidence; the rest is still kept, so a
        # denied read never keeps an attacker's instance running.
        not_read: dict[str, str] = {}
        try:
            user_data = ec2.describe_instance_attribute(
                InstanceId=instance_id, Attribute="userData"
            )
        except ClientError as exc:
            not_read["user data"] = _unread(exc)
            user_data = {}
        encoded = (user_data.get("UserData") or {}).get("Value") or ""
        document: dict[str, Any] = {
            "instance": instances[0],
            "user_data": {
                "sha256_of_base64": hashlib.sha256(encoded.encode()).hexdigest()
                if encoded
                else None,
                "base64_length": len(encoded),
            },
        }
        return {**document, "not_read": not_read} if not_read else document

    def _describe_function(self, function: str) -> dict[str, Any]:
        lam = self._clients.client("lambda")
        described = lam.get_function(FunctionName=function)
        described.pop("ResponseMetadata", None)
        configuration = described.get("Configuration") or {}
        variables = (configuration.get("Environment") or {}).get("Variables")
        if variables:
            configuration["Environment"]["Variables"] = {k: REDACTED for k in variables}
        code = described.get("Code") or {}
        if code.get("Location"):
            # A presigned URL to the code: it carries a signature, and it expires.
            code["Location"] = REDACTED
        try:
            policy = json.loads(lam.get_policy(FunctionName=function)["Policy"])
        except ClientError as exc:
            policy = None  # a function with no resource policy answers NotFound
            if error_code(exc) != "ResourceNotFoundException":
                unread = {"resource policy": _unread(exc)}
                return {**described, "resource_policy": None, "not_read": unread}
        return {**described, "resource_policy": policy}

    def _snapshot(self, input: RemoveResourceInput) -> EvidenceRecord | None:
        """The evidence a deletion wrote first: a user or role whole, an inline policy's
        document, a managed policy's versions."""
        name = _evidence_name(input)
        if name is None:
            return None
        return self._evidence.existing(self._evidence.key_for(input.case_id, name))

    # -- protection --------------------------------------------------------------------

    def _protection(self, input: RemoveResourceInput) -> str | None:
        identity = self._clients.identity
        for name in (input.name, input.owner):
            # Quench's own user, role or key, whatever the records say the attacker did.
            own = identity and identity.owns(
                input.account_id or identity.account_id,
                user_name=name,
                role_name=name,
                access_key_id=name,
            )
            if own:
                return own
        for name in (input.name, input.owner):
            if name and name in input.protected_names:
                return f"{name} is on the protected list"
        tagged = self._tagged_protected(input)
        return f"{tagged} carries the {PROTECTED_TAG_KEY} tag" if tagged else None

    def _tagged_protected(self, input: RemoveResourceInput) -> str | None:
        op = input.operation
        try:
            if op == "delete_user" or op in _USER_PARTS:
                # A login profile may be named by its user alone.
                user = input.name if op == "delete_user" else input.owner or input.name
                tags = self._iam.list_user_tags(UserName=user)["Tags"]
                return user if is_protected(tags) else None
            if op in {"delete_role", "remove_role_from_instance_profile"} or (
                input.owner and op in _ROLE_PARTS
            ):
                role = input.owner if op in _ROLE_PARTS else input.name
                tags = self._iam.list_role_tags(RoleName=role)["Tags"]
                return role if is_protected(tags) else None
            if op == "delete_instance_profile":
                # GetInstanceProfile carries the tags (moto lacks ListInstanceProfileTags).
                profile = self._iam.get_instance_profile(InstanceProfileName=input.name)
                tags = profile["InstanceProfile"].get("Tags", [])
                return input.name if is_protected(tags) else None
            if op == "terminate_instance":
                reservations = self._clients.client("ec2").describe_instances(
                    InstanceIds=[input.name]
                )["Reservations"]
                tags = [t for r in reservations for i in r["Instances"] for t in i.get("Tags", [])]
                return input.name if is_protected(tags) else None
            if op == "delete_managed_policy":
                tags = self._iam.list_policy_tags(PolicyArn=input.name)["Tags"]
                return input.name if is_protected(tags) else None
            if op in {"delete_function", "remove_function_permission"}:
                function = input.name if op == "delete_function" else input.owner or ""
                lam = self._clients.client("lambda")
                arn = lam.get_function(FunctionName=function)["Configuration"]["FunctionArn"]
                tags = lam.list_tags(Resource=arn).get("Tags", {})
                return function if tags.get(PROTECTED_TAG_KEY) == "true" else None
        except ClientError as exc:
            if error_code(exc) in _GONE:
                return None
            raise
        return None

    # -- Lambda and EC2 ---------------------------------------------------------------

    def _remove_function_permission(self, input: RemoveResourceInput) -> str:
        self._clients.client("lambda").remove_permission(
            FunctionName=input.owner, StatementId=input.name
        )
        return "permission removed"

    def _delete_function(self, input: RemoveResourceInput) -> str:
        self._clients.client("lambda").delete_function(FunctionName=input.name)
        return "function deleted"

    def _terminate_instance(self, input: RemoveResourceInput) -> str:
        ec2 = self._clients.client("ec2")
        reservations = ec2.describe_instances(InstanceIds=[input.name])["Reservations"]
        state = reservations[0]["Instances"][0]["State"]["Name"]
        if state in {"terminated", "shutting-down"}:
            return f"already {state}"
        protection = ec2.describe_instance_attribute(
            InstanceId=input.name, Attribute="disableApiTermination"
        )["DisableApiTermination"]["Value"]
        if protection:
            # The attacker's own safeguard on the attacker's own instance: lifted, said so.
            ec2.modify_instance_attribute(
                InstanceId=input.name, DisableApiTermination={"Value": False}
            )
        ec2.terminate_instances(InstanceIds=[input.name])
        return (
            "termination protection lifted, instance terminated"
            if protection
            else ("instance terminated")
        )

    # -- users ------------------------------------------------------------------------

    def _delete_access_key(self, input: RemoveResourceInput) -> str:
        self._iam.delete_access_key(UserName=input.owner, AccessKeyId=input.name)
        return "access key deleted"

    def _delete_login_profile(self, input: RemoveResourceInput) -> str:
        self._iam.delete_login_profile(UserName=input.owner or input.name)
        return "login profile deleted"

    def _detach_user_policy(self, input: RemoveResourceInput) -> str:
        self._iam.detach_user_policy(UserName=input.owner, PolicyArn=input.name)
        return "policy detached"

    def _delete_user_policy(self, input: RemoveResourceInput) -> str:
        """The document first: the attacker's policy is evidence of what it wanted."""
        document = self._iam.get_user_policy(UserName=input.owner, PolicyName=input.name)
        self._keep_inline_policy(input, document["PolicyDocument"])
        self._iam.delete_user_policy(UserName=input.owner, PolicyName=input.name)
        return "inline policy deleted"

    def _keep_inline_policy(self, input: RemoveResourceInput, document: Any) -> None:
        name = _evidence_name(input)
        assert name is not None
        self._evidence.put_json(
            input.case_id,
            name,
            {"owner": input.owner, "policy": input.name, "document": document},
        )

    def _remove_user_from_group(self, input: RemoveResourceInput) -> str:
        self._iam.remove_user_from_group(UserName=input.owner, GroupName=input.name)
        return "removed from group"

    def _delete_user(self, input: RemoveResourceInput) -> str:
        """Evidence first, then every part IAM requires gone, then the user."""
        iam, user = self._iam, input.name
        snapshot = {
            "user": iam.get_user(UserName=user)["User"],
            "access_keys": iam.list_access_keys(UserName=user)["AccessKeyMetadata"],
            "attached_policies": iam.list_attached_user_policies(UserName=user)["AttachedPolicies"],
            "inline_policies": inline_policies(iam, "user", user),
            "groups": iam.list_groups_for_user(UserName=user)["Groups"],
            "service_specific_credentials": iam.list_service_specific_credentials(UserName=user)[
                "ServiceSpecificCredentials"
            ],
        }
        self._evidence.put_json(input.case_id, f"removed-user-{_slug(user)}", snapshot)
        for key_id in [k["AccessKeyId"] for k in snapshot["access_keys"]]:
            _ignore_gone(partial(iam.delete_access_key, UserName=user, AccessKeyId=key_id))
        _ignore_gone(partial(iam.delete_login_profile, UserName=user))
        for policy in snapshot["attached_policies"]:
            iam.detach_user_policy(UserName=user, PolicyArn=policy["PolicyArn"])
        for policy in snapshot["inline_policies"]:
            iam.delete_user_policy(UserName=user, PolicyName=policy["name"])
        for group in snapshot["groups"]:
            iam.remove_user_from_group(UserName=user, GroupName=group["GroupName"])
        for device in iam.list_mfa_devices(UserName=user)["MFADevices"]:
            iam.deactivate_mfa_device(UserName=user, SerialNumber=device["SerialNumber"])
        # DeleteUser also refuses while any of these remain.
        for credential in snapshot["service_specific_credentials"]:
            _ignore_gone(
                partial(
                    iam.delete_service_specific_credential,
                    UserName=user,
                    ServiceSpecificCredentialId=credential["ServiceSpecificCredentialId"],
                )
            )
        for ssh_key in iam.list_ssh_public_keys(UserName=user)["SSHPublicKeys"]:
            iam.delete_ssh_public_key(UserName=user, SSHPublicKeyId=ssh_key["SSHPublicKeyId"])
        for certificate in iam.list_signing_certificates(UserName=user)["Certificates"]:
            iam.delete_signing_certificate(
                UserName=user, CertificateId=certificate["CertificateId"]
            )
        iam.delete_user(UserName=user)
        return (
            "user and its keys, console access, policies, groups, service credentials and "
            "certificates deleted"
        )

    # -- roles and instance profiles --------------------------------------------------

    def _remove_role_from_instance_profile(self, input: RemoveResourceInput) -> str:
        self._iam.remove_role_from_instance_profile(
            InstanceProfileName=input.owner, RoleName=input.name
        )
        return "role removed from instance profile"

    def _delete_instance_profile(self, input: RemoveResourceInput) -> str:
        iam = self._iam
        profile = iam.get_instance_profile(InstanceProfileName=input.name)["InstanceProfile"]
        for role in profile["Roles"]:
            iam.remove_role_from_instance_profile(
                InstanceProfileName=input.name, RoleName=role["RoleName"]
            )
        iam.delete_instance_profile(InstanceProfileName=input.name)
        return "instance profile deleted"

    def _detach_role_policy(self, input: RemoveResourceInput) -> str:
        self._iam.detach_role_policy(RoleName=input.owner, PolicyArn=input.name)
        return "policy detached"

    def _delete_role_policy(self, input: RemoveResourceInput) -> str:
        """The document first: the attacker's policy is evidence of what it wanted."""
        document = self._iam.get_role_policy(RoleName=input.owner, PolicyName=input.name)
        self._keep_inline_policy(input, document["PolicyDocument"])
        self._iam.delete_role_policy(RoleName=input.owner, PolicyName=input.name)
        return "inline policy deleted"

    def _delete_role(self, input: RemoveResourceInput) -> str:
        """Evidence first, then its profiles and policies, then the role."""
        iam, role = self._iam, input.name
        snapshot = {
            "role": iam.get_role(RoleName=role)["Role"],
            "attached_policies": iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"],
            "inline_policies": inline_policies(iam, "role", role),
            "instance_profiles": iam.list_instance_profiles_for_role(RoleName=role)[
                "InstanceProfiles"
            ],
        }
        self._evidence.put_json(input.case_id, f"removed-role-{_slug(role)}", snapshot)
        for profile in snapshot["instance_profiles"]:
            iam.remove_role_from_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"], RoleName=role
            )
        for policy in snapshot["attached_policies"]:
            iam.detach_role_policy(RoleName=role, PolicyArn=policy["PolicyArn"])
        for policy in snapshot["inline_policies"]:
            iam.delete_role_policy(RoleName=role, PolicyName=policy["name"])
        iam.delete_role(RoleName=role)
        return "role and its policies deleted"

    # -- managed policies -------------------------------------------------------------

    def _delete_managed_policy(self, input: RemoveResourceInput) -> str:
        """A policy the attacker made: its versions to evidence, then detached from every
        user, role and group, its other versions deleted, then the policy."""
        iam, arn = self._iam, input.name
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        documents = [
            iam.get_policy_version(PolicyArn=arn, VersionId=v["VersionId"])["PolicyVersion"]
            for v in versions
        ]
        name = _evidence_name(input)
        assert name is not None
        self._evidence.put_json(input.case_id, name, {"policy": arn, "versions": documents})
        entities = iam.list_entities_for_policy(PolicyArn=arn)
        for user in entities["PolicyUsers"]:
            iam.detach_user_policy(UserName=user["UserName"], PolicyArn=arn)
        for role in entities["PolicyRoles"]:
            iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=arn)
        for group in entities["PolicyGroups"]:
            iam.detach_group_policy(GroupName=group["GroupName"], PolicyArn=arn)
        for version in versions:
            if not version["IsDefaultVersion"]:
                iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
        iam.delete_policy(PolicyArn=arn)
        return "managed policy detached everywhere and deleted"


def _evidence_name(input: RemoveResourceInput) -> str | None:
    """Where a removal keeps what it deleted, if it keeps anything."""
    if input.operation in {"delete_user", "delete_role"}:
        return f"removed-{input.operation.removeprefix('delete_')}-{_slug(input.name)}"
    if input.operation in {"delete_user_policy", "delete_role_policy"}:
        return f"removed-policy-{_slug(input.owner or '')}-{_slug(input.name)}"
    if input.operation == "delete_managed_policy":
        return f"removed-managed-policy-{_slug(input.name.rsplit('/', 1)[-1])}"
    return None


_USER_PARTS = {
    "delete_access_key",
    "delete_login_profile",
    "detach_user_policy",
    "delete_user_policy",
    "remove_user_from_group",
}
_ROLE_PARTS = {"detach_role_policy", "delete_role_policy"}


def _ignore_gone(call: Callable[[], object]) -> None:
    try:
        call()
    except ClientError as exc:
        if error_code(exc) not in _GONE:
            raise


def _launched_result(
    kind: str, evidence: EvidenceRecord, document: dict[str, Any]
) -> CaptureLaunchedResult:
    """A launched resource kept, saying what of it could not be read."""
    missing = document.get("not_read") or {}
    if not missing:
        return CaptureLaunchedResult(evidence=evidence, detail=f"{kind} kept as evidence")
    said = "; ".join(f"its {part} was not read: {why}" for part, why in missing.items())
    return CaptureLaunchedResult(
        evidence=evidence, detail=f"{kind} kept as evidence, but {said}", missing=said
    )


def _unread(exc: ClientError) -> str:
    """Why a read for evidence failed for good, naming its call; a failure that a retry
    may cure (throttling, an outage) is raised for Temporal to retry instead."""
    error = to_application_error(exc, "read")
    if not error.non_retryable:
        raise error from exc
    return error.message.removeprefix("read: ")


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in value.lower())[:100]
