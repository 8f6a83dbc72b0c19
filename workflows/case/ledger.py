"""The approvals ledger: the actions a case proposes, who may decide them, the decisions
taken and refused, deadlines and escalation. Plain bookkeeping on the case's status, with
the clock handed in, so it is tested without a Temporal server."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from config import names
    from models.case import (
        CONTAINMENT_KINDS,
        ORGANIZATION_KINDS,
        Action,
        ActionKind,
        ActionStatus,
        Approval,
        ApprovalInput,
        CasePolicy,
        CaseStatus,
        Decision,
        DecisionResult,
        DecisionSignature,
        RejectedSignal,
        TimelineEntry,
    )
    from playbook.signing import CLOCK_SKEW, signed_message, verified_by
    from workflows.case.details import duration


@dataclass(frozen=True)
class Signed:
    """What a signature is of: the action (or `false-positive`), since when it could be
    decided (so a signature for an earlier case of the same id never verifies), the
    decision and its reason."""

    subject: str
    since: datetime
    decision: str
    reason: str


class ApprovalLedger:
    """Every action of a case and its decision, kept in the case's status."""

    def __init__(
        self,
        status: CaseStatus,
        policy: CasePolicy,
        clock: Callable[[], datetime],
        proposed: int = 0,
    ) -> None:
        self._status = status
        self._policy = policy
        self._now = clock
        # Actions proposed so far, in every run of the case: the next id's number.
        self.proposed = proposed
        # Set by the workflow from ACTION_IDS_BY_KIND_PATCH: how ids are numbered.
        self.number_by_kind = True

    # -- proposing -------------------------------------------------------------------------

    def propose(
        self, kind: ActionKind, title: str, steps: list[str], protected: str | None = None
    ) -> Action:
        """A new action waiting for its decision, with an id unique in the case; one that
        acts on something `protected` needs two people, whatever the policy."""
        self.proposed += 1
        action = Action(
            id=self._next_id(kind),
            kind=kind,
            title=title,
            steps=steps,
            status=ActionStatus.PENDING_APPROVAL,
            requested_at=self._now(),
            approvals_needed=2 if protected else self.approvals_needed(kind),
            account_id=self._status.account_id,
            protected=protected,
        )
        self._status.actions.append(action)
        return action

    def _next_id(self, kind: ActionKind) -> str:
        """`eradicate-2` for the second removal the case proposes; an id taken by an
        action numbered case-wide before (a case continued as new from an older version)
        is skipped. Before ACTION_IDS_BY_KIND_PATCH, every kind shared one count."""
        if not self.number_by_kind:
            return f"{kind.value}-{self.proposed}"
        taken = {a.id for a in self._status.actions}
        number = 1 + sum(1 for a in self._status.actions if a.kind is kind)
        while f"{kind.value}-{number}" in taken:
            number += 1
        return f"{kind.value}-{number}"

    def action(self, action_id: str) -> Action | None:
        return next((a for a in self._status.actions if a.id == action_id), None)

    def approvals_needed(self, kind: ActionKind) -> int:
        return 2 if kind in self._policy.two_person else 1

    # -- deciding --------------------------------------------------------------------------

    def refusal(self, input: ApprovalInput, decision: Decision) -> str | None:
        """Why this decision may not be taken, if it may not: unknown action, decided
        already, an approver the policy does not allow for its kind, the same person twice
        under the two-person rule."""
        action = self.action(input.action_id)
        if action is None:
            return "no such action"
        if action.status is not ActionStatus.PENDING_APPROVAL:
            return f"action is {action.status}"
        approvers = self._policy.approvers
        allowed = approvers.get(action.kind)
        if allowed is None and action.kind in (
            *ORGANIZATION_KINDS,
            ActionKind.GO_LIVE,
            ActionKind.RELEASE,
        ):
            # Changes as weighty as containing again: decided by its approvers unless
            # the policy names their own.
            allowed = approvers.get(ActionKind.RECONTAIN)
        if allowed is not None and input.approver not in allowed:
            return f"{input.approver} may not decide {action.kind.value} actions"
        _, unsigned = self.signed_with(input, decision, action)
        if unsigned is not None:
            return unsigned
        if decision is Decision.APPROVED and any(
            e.approver == input.approver for e in action.endorsements
        ):
            return f"{input.approver} approved it already: it needs a second person"
        return None

    def signed_with(
        self, input: ApprovalInput, decision: Decision, action: Action
    ) -> tuple[str | None, str | None]:
        """Where the policy asks for signed decisions: the fingerprint of the approver's
        key the signature verifies with, or why the decision is refused. (None, None)
        when the policy asks for none."""
        return self.verify(
            input.approver,
            Signed(action.id, action.requested_at, decision.value, input.reason),
            input.signature,
        )

    def verify(
        self, approver: str, what: "Signed", signature: DecisionSignature | None
    ) -> tuple[str | None, str | None]:
        """A signed decision (an action's, or the mark of a false positive) checked
        against the approver's keys in the policy: the key's fingerprint, or why not."""
        keys = self._policy.approver_keys
        if not keys:
            return None, None
        held = keys.get(approver)
        if not held:
            return None, f"{approver} holds no key in the approval policy: unsigned"
        if signature is None:
            return None, (
                "unsigned: the approval policy asks for decisions signed with the "
                "approver's key (quench ... --key)"
            )
        if not what.since - CLOCK_SKEW <= signature.signed_at <= self._now() + CLOCK_SKEW:
            return None, (
                f"signed at {signature.signed_at.isoformat()}, outside the time of "
                f"{what.subject}: a signature for another decision"
            )
        message = signed_message(
            self._status.case_id,
            what.subject,
            what.since,
            what.decision,
            approver,
            what.reason,
            signature.signed_at,
        )
        verified = verified_by(held, message, signature.signature)
        if verified is None:
            return None, f"the signature does not verify with a key the policy holds for {approver}"
        return verified, None

    def decide(self, input: ApprovalInput, decision: Decision, signal: str) -> Action | None:
        """A person's decision: refused (and kept in `refused`), one approval of two
        (an endorsement), or the one that settles the action. Returns the action it was
        taken on, None when refused."""
        refusal = self.refusal(input, decision)
        action = self.action(input.action_id)
        if refusal is not None or action is None:
            self.refuse(signal, input.action_id, input.approver, refusal or "no such action")
            return None
        signed_with, _ = self.signed_with(input, decision, action)
        approval = Approval(
            action_id=action.id,
            decision=decision,
            approver=input.approver,
            reason=input.reason,
            decided_at=self._now(),
            signature=input.signature if signed_with else None,
            signed_with=signed_with,
        )
        needed = action.approvals_needed
        if decision is Decision.APPROVED and len(action.endorsements) + 1 < needed:
            action.endorsements.append(approval)
            self._status.timeline.append(
                TimelineEntry(
                    at=approval.decided_at,
                    what=f"{action.id} approved by {input.approver} ({input.reason}): "
                    f"{len(action.endorsements)} of {needed} approvals, another person must "
                    "approve",
                )
            )
            return action
        self.settle(action, approval)
        return action

    def result(self, action: Action) -> DecisionResult:
        """Where a decision left the action: its status and the approvals it has."""
        approved = len(action.endorsements) + (action.status is ActionStatus.APPROVED)
        return DecisionResult(
            action_id=action.id,
            status=action.status,
            approvals=approved,
            needed=action.approvals_needed,
        )

    def refuse(
        self,
        signal: str,
        action_id: str | None,
        by: str,
        reason: str,
        sent: str | None = None,
    ) -> RejectedSignal:
        """Keep a refused decision, note or finding on the case, so nothing is silently
        ignored; `sent` is a malformed payload as it came."""
        refused = RejectedSignal(
            signal=signal, action_id=action_id, by=by, reason=reason, at=self._now(), sent=sent
        )
        self._status.refused.append(refused)
        return refused

    def settle(self, action: Action, approval: Approval) -> None:
        """The decision that settles an action: by people, or by the policy at the deadline."""
        action.approval = approval
        action.status = (
            ActionStatus.APPROVED
            if approval.decision is Decision.APPROVED
            else ActionStatus.REJECTED
        )
        self._status.approvals.append(approval)
        self._status.timeline.append(
            TimelineEntry(
                at=approval.decided_at,
                what=f"{action.id} {approval.decision.value} by {approval.approver}: "
                f"{approval.reason}",
            )
        )

    def approve_by_policy(self, action: Action, reason: str) -> None:
        """An approval nobody gave: the case's policy let the action go ahead."""
        self.settle(
            action,
            Approval(
                action_id=action.id,
                decision=Decision.APPROVED,
                approver=names.AUTO_APPROVER,
                reason=reason,
                decided_at=self._now(),
                automatic=True,
            ),
        )

    # -- deadlines and escalation ----------------------------------------------------------

    def runs_without_approval(self, action: Action) -> bool:
        return action.kind in self._policy.without_approval and not action.protected

    def open_deadline(self, action: Action) -> timedelta:
        """Set the action's deadline; returns how long each deadline gives people."""
        wait = timedelta(seconds=self._policy.deadline_of(action.kind))
        action.deadline = self._now() + wait
        return wait

    def severity(self) -> float:
        return max(f.severity for f in self._status.findings)

    def may_proceed(self, action: Action) -> bool:
        """Whether the policy lets this action go ahead once nobody decided in time."""
        threshold = self._policy.auto_contain_min_severity
        return (
            threshold is not None
            and not action.protected
            and action.kind in CONTAINMENT_KINDS
            and self.severity() >= threshold
        )

    def proceed_without_decision(self, action: Action, wait: timedelta) -> str:
        """Approve by the policy at the deadline; returns the reason recorded."""
        reason = (
            f"nobody decided within {duration(wait)}; the policy lets containment of "
            f"findings of severity {self._policy.auto_contain_min_severity} or more proceed "
            f"(this case: {self.severity()})"
        )
        self.approve_by_policy(action, reason)
        return reason

    def escalate(self, action: Action, wait: timedelta) -> str:
        """Nobody decided in time: count it and set the next deadline. Returns how long
        the action has waited, as people say it."""
        action.escalations += 1
        action.deadline = (action.deadline or self._now()) + wait
        waited = duration(self._now() - action.requested_at)
        self._status.timeline.append(
            TimelineEntry(
                at=self._now(),
                what=f"{action.id} escalated (time {action.escalations}): nobody decided in "
                f"{waited}",
            )
        )
        return waited

    def escalations(self) -> int:
        return sum(a.escalations for a in self._status.actions)

    # -- carrying out ----------------------------------------------------------------------

    def start(self, action: Action) -> datetime:
        """Mark the action running; returns the containment cut-off it writes into AWS,
        decided here once so every retry writes the same policy, and late enough that
        sessions issued in the second of the approval are still denied."""
        action.status = ActionStatus.RUNNING
        action.started_at = self._now()
        return (action.started_at + timedelta(seconds=1)).replace(microsecond=0)

    def fail_unfinished(self, why: str) -> None:
        """Every action still running when the case gives up is failed, saying why: none
        is left reading as under way in a closed case."""
        for action in self._status.actions:
            if action.status is ActionStatus.RUNNING:
                self.finish(action, ActionStatus.FAILED, f"not finished: {why}")

    def finish(self, action: Action, status: ActionStatus, outcome: str) -> None:
        action.status = status
        action.outcome = outcome
        action.finished_at = self._now()
        self._status.timeline.append(
            TimelineEntry(at=action.finished_at, what=f"{action.id} {status.value}: {outcome}")
        )
