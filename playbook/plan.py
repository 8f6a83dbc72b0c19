"""The removal plan (playbook 3.4): the attacker's resources in the order AWS lets them be
deleted. Pure: protection by tag is checked again by the activity that removes."""

from pydantic import BaseModel

from playbook.classify import AttackerResource, ResourceKind

# What removes each kind of resource, in dependency order: what hangs off a user or role
# first, then the user or role; functions and instances before the roles they run as.
_ORDER: list[tuple[ResourceKind, str]] = [
    (ResourceKind.FUNCTION_PERMISSION, "remove_function_permission"),
    (ResourceKind.FUNCTION, "delete_function"),
    (ResourceKind.INSTANCE, "terminate_instance"),
    (ResourceKind.ACCESS_KEY, "delete_access_key"),
    (ResourceKind.LOGIN_PROFILE, "delete_login_profile"),
    (ResourceKind.USER_POLICY_ATTACHMENT, "detach_user_policy"),
    (ResourceKind.USER_INLINE_POLICY, "delete_user_policy"),
    (ResourceKind.GROUP_MEMBERSHIP, "remove_user_from_group"),
    (ResourceKind.USER, "delete_user"),
    (ResourceKind.INSTANCE_PROFILE_ROLE, "remove_role_from_instance_profile"),
    (ResourceKind.INSTANCE_PROFILE, "delete_instance_profile"),
    (ResourceKind.ROLE_POLICY_ATTACHMENT, "detach_role_policy"),
    (ResourceKind.ROLE_INLINE_POLICY, "delete_role_policy"),
    (ResourceKind.ROLE, "delete_role"),
    (ResourceKind.MANAGED_POLICY, "delete_managed_policy"),
]
_RANK = {kind: index for index, (kind, _) in enumerate(_ORDER)}
_OPERATION = dict(_ORDER)


class RemovalStep(BaseModel):
    order: int
    operation: str
    resource: AttackerResource
    skipped_reason: str | None = None  # set when the resource is protected
    outcome: str | None = None  # removed, already_gone, skipped: once carried out
    detail: str | None = None
    # Carried out again by this retry action after failing: the failure it had first.
    retried_in: str | None = None
    failed_before: str | None = None

    def describe(self) -> str:
        where = f" of {self.resource.owner}" if self.resource.owner else ""
        text = f"{self.operation} {self.resource.name}{where}"
        return f"{text} (skipped: {self.skipped_reason})" if self.skipped_reason else text


def removal_plan(
    resources: list[AttackerResource], protected_names: frozenset[str] = frozenset()
) -> list[RemovalStep]:
    """Every resource once, in an order AWS accepts: a user's keys, console password,
    policies and groups before the user, and so on (the removal of a user or role still
    clears any part of it the records did not show)."""
    steps: list[RemovalStep] = []
    for resource in sorted(resources, key=lambda r: (_RANK[r.kind], r.owner or "", r.name)):
        protected = {resource.name, resource.owner} & protected_names
        steps.append(
            RemovalStep(
                order=len(steps) + 1,
                operation=_OPERATION[resource.kind],
                resource=resource,
                skipped_reason="protected" if protected else None,
            )
        )
    return steps
