"""What Quench never changes on its own: its own identity (the worker's credentials and
the roles it assumes in each account), and the protected principals and instances (by
name, in the settings or the account's list, or tagged quench:protected=true).

Each activity that would change a principal or an instance asks here first, and refuses
with a HandsOff error naming why: the case then says so where it would have acted, and a
human decides. A tag the worker may not read (AccessDenied) does not hold up containment,
the worse risk being a stolen key left working: the names still hold, the read is logged,
and the worker's policy grants it (docs/worker-iam-policy.json). A throttled or failed
read is retried, never taken as "not protected".
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import (
    ERROR_THROTTLED,
    ERROR_UNAVAILABLE,
    AwsClients,
    at_once,
    classify,
    error_code,
    to_application_error,
)
from config.names import PROTECTED_TAG_KEY
from models.activities import ChangesInAccount

ERROR_HANDS_OFF = "HandsOff"
_GONE = {"NoSuchEntity", "NoSuchEntityException", "InvalidInstanceID.NotFound"}


@dataclass(frozen=True)
class QuenchIdentity:
    """Who Quench is: the worker's own principal (sts:GetCallerIdentity, once at start),
    its access key, and the roles it assumes in the accounts it manages."""

    arn: str
    access_key_id: str | None = None
    # Role ARNs Quench assumes: in each member account, and in the organisation's.
    assumed_roles: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def learn(cls, clients: AwsClients, assumed_roles: list[str]) -> "QuenchIdentity":
        """Ask AWS who the worker's credentials are (raises a boto error when it cannot)."""
        arn = str(clients.client("sts").get_caller_identity()["Arn"])
        return cls(
            arn=arn, access_key_id=clients.access_key_id(), assumed_roles=tuple(assumed_roles)
        )

    @property
    def account_id(self) -> str:
        return _account_of(self.arn)

    def roles(self) -> set[tuple[str, str]]:
        """(account, role name) of every role that is Quench: a role's ARN carries its path,
        an assumed role's session ARN does not, so the name decides."""
        roles = {(_account_of(arn), arn.rsplit("/", 1)[-1]) for arn in self.assumed_roles}
        own = self.arn.split(":", 5)[-1]
        if own.startswith("assumed-role/"):
            roles.add((self.account_id, own.split("/")[1]))
        return roles

    def user(self) -> tuple[str, str] | None:
        """(account, user name) when the worker runs as an IAM user."""
        own = self.arn.split(":", 5)[-1]
        return (self.account_id, own.rsplit("/", 1)[-1]) if own.startswith("user/") else None

    def owns(
        self,
        account_id: str,
        *,
        user_name: str | None = None,
        role_name: str | None = None,
        access_key_id: str | None = None,
    ) -> str | None:
        """Why this principal is Quench itself, or None when it is not."""
        if access_key_id and access_key_id == self.access_key_id:
            return f"access key {access_key_id} is Quench's own (the worker's credentials)"
        if role_name and (account_id, role_name) in self.roles():
            return f"role {role_name} is Quench's own in account {account_id}"
        if user_name and (account_id, user_name) == self.user():
            return f"user {user_name} is Quench's own (the worker's credentials)"
        return None


@dataclass(frozen=True)
class Target:
    """What an activity is about to change: a principal, an instance, a key."""

    account_id: str
    user_name: str | None = None
    role_name: str | None = None
    instance_id: str | None = None
    access_key_id: str | None = None

    def named(self) -> str:
        parts = [
            f"user {self.user_name}" if self.user_name else "",
            f"role {self.role_name}" if self.role_name else "",
            f"instance {self.instance_id}" if self.instance_id else "",
        ]
        return ", ".join(p for p in parts if p) or f"key {self.access_key_id}"


def why_hands_off(
    clients: AwsClients,
    target: Target,
    protected_names: list[str],
    approved: list[str] | tuple[str, ...] = (),
) -> str | None:
    """Why Quench must not change this target on its own, or None when it may: never
    Quench itself; a protected one only once two people approved (`approved` names it)."""
    identity = clients.identity
    if identity is not None:
        own = identity.owns(
            target.account_id,
            user_name=target.user_name,
            role_name=target.role_name,
            access_key_id=target.access_key_id,
        )
        if own:
            return own
    kinds = {"user": target.user_name, "role": target.role_name, "instance": target.instance_id}
    named = {kind: name for kind, name in kinds.items() if name}
    if any(f"{kind}:{name}" in approved for kind, name in named.items()):
        return None
    for name in named.values():
        if name in protected_names:
            return f"{name} is on the protected list"
    return _tagged(clients, target)


def refuse_if_hands_off(
    clients: AwsClients, input: ChangesInAccount, call: str, **names: str | None
) -> None:
    """Raise the HandsOff error, naming the call not made, when what the activity would
    change (`names`: user_name, role_name, instance_id, access_key_id) is Quench's own or
    protected."""
    # An input without an account is of a case that acted with the worker's credentials.
    home = clients.identity.account_id if clients.identity is not None else ""
    target = Target(account_id=input.account_id or home, **names)
    why = why_hands_off(clients, target, input.protected_names, input.approved_protected)
    if why is not None:
        raise ApplicationError(
            f"{target.named()}: {why}: Quench does not change it on its own ({call} not made)",
            {"why": why, "call": call, "target": target.named()},
            type=ERROR_HANDS_OFF,
            non_retryable=True,
        )


def _tagged(clients: AwsClients, target: Target) -> str | None:
    """The target (or the principal behind it) carrying quench:protected=true."""
    iam = clients.client("iam")
    checks: list[tuple[str, Any]] = []
    if target.user_name:
        checks.append(
            (f"user {target.user_name}", lambda: iam.list_user_tags(UserName=target.user_name))
        )
    if target.role_name:
        checks.append(
            (f"role {target.role_name}", lambda: iam.list_role_tags(RoleName=target.role_name))
        )
    if target.instance_id:
        checks.append((f"instance {target.instance_id}", lambda: _instance_tags(clients, target)))
    # Read at once; the first protected in the order above is named.
    for what, tags in zip(
        (what for what, _ in checks), at_once(*(_tags_read(w, r) for w, r in checks)), strict=True
    ):
        if tags is not None and is_protected(tags.get("Tags", [])):
            return f"{what} carries the {PROTECTED_TAG_KEY} tag"
    return None


def _tags_read(what: str, read: Callable[[], Any]) -> Callable[[], Any]:
    """A read of `what`'s tags: None when it is gone or the worker may not read it."""

    def tags() -> Any:
        try:
            return read()
        except ClientError as exc:
            code = error_code(exc)
            if code in _GONE:
                return None
            if classify(code) in (ERROR_THROTTLED, ERROR_UNAVAILABLE):
                # Only a read the worker may not make is passed over; a busy AWS is asked
                # again (Temporal retries the activity), never taken as "not protected".
                raise to_application_error(exc, f"read whether {what} is protected") from exc
            activity.logger.warning("whether %s is protected is unknown: %s", what, exc)
            return None
        except BotoCoreError as exc:
            raise ApplicationError(
                f"read whether {what} is protected: {exc}", type=ERROR_UNAVAILABLE
            ) from exc

    return tags


def _instance_tags(clients: AwsClients, target: Target) -> dict[str, Any]:
    reservations = clients.client("ec2").describe_instances(InstanceIds=[target.instance_id])
    tags = [
        tag
        for reservation in reservations["Reservations"]
        for instance in reservation["Instances"]
        for tag in instance.get("Tags", [])
    ]
    return {"Tags": tags}


def is_protected(tags: list[dict[str, str]]) -> bool:
    return any(t.get("Key") == PROTECTED_TAG_KEY and t.get("Value") == "true" for t in tags)


def _account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""
