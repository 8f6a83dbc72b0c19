"""Undo after a false positive. A person marks the case a false positive: its response
stops (what waits for a decision to change AWS is rejected with that reason, and no
further round or recovery runs), and each change its containment made is offered back on
its own, as release-N: a key it deactivated made active again, an inline policy it put
deleted while it is still the one it wrote. Each after approval, each recorded. A key the
case found in the attacker's hands is never offered; the quarantine SCP is lifted, after
approval, as at the end of every case."""

from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.iam import IamActivities
    from models.activities import ReleaseChangeInput
    from models.case import (
        CONTAINMENT_KINDS,
        Action,
        ActionKind,
        ActionStatus,
        Approval,
        CaseChange,
        Decision,
        FalsePositiveInput,
        Note,
        Phase,
    )
    from playbook.signing import FALSE_POSITIVE_SUBJECT
    from workflows.case.approvals import Approvals
    from workflows.case.ledger import Signed
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT

# What a false positive stops while it waits for a decision: every change to AWS but a
# retry (of a change already made, which its own decision settles) and a release.
_STOPPED = CONTAINMENT_KINDS | {
    ActionKind.REMOVE_CONSOLE_ACCESS,
    ActionKind.ERADICATE,
    ActionKind.RECOVER,
    ActionKind.GO_LIVE,
}


class Release:
    def __init__(self, record: CaseRecord, approvals: Approvals) -> None:
        self._record = record
        self._approvals = approvals

    def refusal(self, input: FalsePositiveInput) -> str | None:
        """Why this mark is not taken: marked already, closed, or by someone the policy
        does not let decide containment again (its approvers, or release's), or unsigned
        where the policy asks for signed decisions."""
        status = self._record.status
        marked = status.false_positive
        if marked is not None:
            return f"marked a false positive already, by {marked.author}"
        if status.phase is Phase.CLOSED:
            # Nothing would wait for the releases: undo what it changed by hand.
            return "the case is closed: undo what it changed by hand (its report lists it)"
        approvers = self._record.policy.approvers
        allowed = approvers.get(ActionKind.RELEASE, approvers.get(ActionKind.RECONTAIN))
        if allowed is not None and input.by not in allowed:
            return f"{input.by} may not mark a case a false positive"
        what = Signed(
            FALSE_POSITIVE_SUBJECT, status.phases[0].at, FALSE_POSITIVE_SUBJECT, input.reason
        )
        _, unsigned = self._approvals.ledger.verify(input.by, what, input.signature)
        return unsigned

    def mark(self, input: FalsePositiveInput) -> list[str]:
        """The case marked a false positive: its response stops, and each change it made
        is offered back. Returns the release actions' ids."""
        record = self._record
        status = record.status
        now = workflow.now()
        status.false_positive = Note(author=input.by, text=input.reason, at=now)
        record.note(f"marked a false positive by {input.by}: {input.reason}")
        why = f"false positive: {input.reason}"
        for action in status.pending_actions():
            if action.kind in _STOPPED:
                self._approvals.ledger.settle(
                    action,
                    Approval(
                        action_id=action.id,
                        decision=Decision.REJECTED,
                        approver=input.by,
                        reason=why,
                        decided_at=now,
                    ),
                )
        offered = [self._offer(change, input).id for change in status.made]
        if not offered:
            record.note("nothing the case changed is left to release")
        record.refresh()
        return offered

    def _offer(self, change: CaseChange, marked: FalsePositiveInput) -> Action:
        record = self._record
        ledger = self._approvals.ledger

        async def then(action: Action, decision: Approval) -> None:
            if decision.decision is Decision.REJECTED:
                ledger.finish(action, ActionStatus.REJECTED, decision.reason)
                record.note(f"kept: {change.describe()} ({decision.approver}: {decision.reason})")
                return
            ledger.start(action)
            result, failure = await self._approvals.attempt_or_fail(
                change.describe(),
                lambda: workflow.execute_activity_method(
                    IamActivities.release_change,
                    record.in_account(ReleaseChangeInput(change=change)),
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"Release: {change.describe()}"[:200],
                ),
            )
            if result is None:
                ledger.finish(action, ActionStatus.FAILED, str(failure))
                record.needs_human(f"{change.describe()}: the release failed: {failure}")
                return
            if result.outcome == "kept":
                record.needs_human(f"{change.describe()}: not done: {result.detail}")
            else:
                change.released_by = action.id
            ledger.finish(action, ActionStatus.DONE, f"{result.outcome}: {result.detail}")
            record.note(f"{change.describe()}: {result.detail}")

        return self._approvals.offer_beside(
            ActionKind.RELEASE,
            f"Release: {change.describe()}",
            [
                f"{marked.by} marked the case a false positive: {marked.reason}",
                f"{change.describe()[0].upper()}{change.describe()[1:]} (made "
                f"{change.made_at.isoformat()} by containment)",
            ],
            then,
        )


def record_change(
    record: CaseRecord,
    kind: Literal["key_deactivated", "policy_put"],
    *,
    cutoff: datetime | None = None,
    previous: datetime | None = None,
    **names_: str,
) -> None:
    """A change containment made that a release may undo after a false positive (the
    case's credential's key and the policies it put; never a key the attacker minted). A
    policy written again (a later cut-off) is one change, whose earlier state is the
    first's."""
    status = record.status
    change = CaseChange(kind=kind, cutoff=cutoff, made_at=workflow.now(), **names_)
    same = next(
        (
            c
            for c in status.made
            if c.released_by is None
            and (c.kind, c.user_name, c.role_name, c.policy_name, c.access_key_id)
            == (kind, change.user_name, change.role_name, change.policy_name, change.access_key_id)
        ),
        None,
    )
    if same is not None:
        same.cutoff = cutoff
    else:
        status.made.append(change.model_copy(update={"previous_cutoff": previous}))
    if status.false_positive is not None:
        # Made after the mark (a step already under way): its release is a human's.
        record.needs_human(f"{change.describe()}: made after the case was marked a false positive")
