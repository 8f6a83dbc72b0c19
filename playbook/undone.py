"""What a case leaves undone, and whether its credentials are contained: read from the
case's own record, so `status`, the Web UI, the report and the closing notification can
never say "none" while something is not done."""

from models.case import DRY_RUN, DRY_RUN_DONE, ActionKind, ActionStatus, CaseStatus

# The actions that contain the case's own credential the first time.
_FIRST_CONTAINMENT = frozenset(
    {
        ActionKind.CONTAIN_INSTANCE_ROLE,
        ActionKind.CONTAIN_USER_KEY,
        ActionKind.CONTAIN_ROLE_SESSION,
        ActionKind.MANUAL_CONTAINMENT,
        # A dry run made real: its approval is the real containment's.
        ActionKind.GO_LIVE,
    }
)

CONTAINED = "contained"
PARTLY_CONTAINED = "partly contained"
NOT_CONTAINED = "not contained"


def own_credential_contained(status: CaseStatus) -> tuple[bool, str]:
    """Whether the case's own credential is contained, and if not, why: its last
    containment (the first, or one after the watch saw it work) must be done."""
    credential = status.credential
    if credential is None:
        return False, "its principal was never resolved"
    released = [c for c in status.made if c.released_by]
    if status.false_positive is not None and released and len(released) == len(status.made):
        return False, "a false positive: what contained it was released"
    key = credential.access_key_id
    tried = [
        (a.finished_at is None, a.finished_at or a.requested_at, n, a)
        for n, a in enumerate(status.actions)
        if a.status is not ActionStatus.WITHDRAWN
        and (
            a.kind in _FIRST_CONTAINMENT
            or (a.kind is ActionKind.RECONTAIN and a.title.startswith(f"Contain {key} again"))
        )
    ]
    if not tried:
        return False, "no containment was carried out"
    # The one settled last decides (a protected credential's containment by hand and by
    # Quench may be decided in either order); one still undecided is the latest.
    last = max(tried)[-1]
    if last.status is ActionStatus.DONE and last.outcome == DRY_RUN_DONE:
        return False, f"{last.id} was approved in a dry run, which changes nothing"
    if last.status is ActionStatus.DONE:
        return True, ""
    if last.approval is None:
        return False, f"{last.id} is {last.status.value}"
    who = f"{last.approval.approver}: {last.approval.reason}"
    if last.status is ActionStatus.REJECTED:
        return False, f"{last.id} was rejected by {who}"
    return False, f"{last.id} is {last.status.value} (approved by {who})"


def containment_verdict(status: CaseStatus) -> str:
    """contained, partly contained (the case's credential is, some it found are not), or
    not contained."""
    contained, _ = own_credential_contained(status)
    if not contained:
        return NOT_CONTAINED
    return PARTLY_CONTAINED if status.uncontained else CONTAINED


FALSE_POSITIVE = "false positive"
DRY_RUN_ONLY = "dry run"


def outcome_word(status: CaseStatus) -> str:
    """How a closed case came out, for lists: a false positive, a dry run that never went
    live, or how contained its credentials are."""
    if status.false_positive is not None:
        return FALSE_POSITIVE
    if status.dry_run and status.went_live_at is None:
        return DRY_RUN_ONLY
    return containment_verdict(status)


def closing_outcome(status: CaseStatus, outcome: str) -> str:
    """The outcome a case closes with once its rounds are done: `outcome` (contained, or
    contained by a human), unless credentials it found are still not contained."""
    if not status.uncontained:
        return outcome
    return f"partly contained: {outcome}, but not {', '.join(status.uncontained)}"


def undone(status: CaseStatus) -> list[str]:
    """Open items for what the case did not do and no open item names yet: its credential
    not contained, removals and restores never carried out."""
    items: list[str] = []
    known = " ".join(status.open_items)
    contained, why = own_credential_contained(status)
    if not contained:
        key = status.credential.access_key_id if status.credential else status.findings[0].id
        items.append(f"{key} is not contained ({why}): contain it by hand")
    for plan in status.eradication:
        for step in plan.steps:
            if step.outcome == DRY_RUN:
                items.append(f"{step.describe()}: not carried out (dry run); it is still in AWS")
            elif step.outcome is None and not step.skipped_reason and step.describe() not in known:
                items.append(f"{step.describe()}: not carried out; it is still in AWS")
    for restore in status.recovery:
        if restore.outcome == DRY_RUN:
            items.append(f"restore by hand: {restore.description} (not carried out: dry run)")
        elif restore.outcome is None and restore.description not in known:
            items.append(f"restore by hand: {restore.description} (not carried out)")
    quarantine = status.quarantine
    if quarantine is not None and quarantine.lifted_at is None:
        name, account = quarantine.policy_name, quarantine.account_id
        still = f"the quarantine SCP {name} is still attached"
        item = f"{still} to account {account}: detach it in Organizations when it may go"
        if quarantine.attached_at is None:
            still = f"the quarantine SCP {name} may still exist"
            item = f"{still} (its attachment to account {account} failed): delete it"
        if still not in known:
            items.append(item)
    return items
