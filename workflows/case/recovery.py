"""Recovery (playbook 4): undo, after approval, what the attacker changed in things it did
not make, from evidence and CloudTrail; what Quench cannot restore itself becomes an open
item saying what a human must do. Logging gaps are recorded for the report."""

from collections import Counter
from datetime import datetime, timedelta

from temporalio import workflow

from playbook.words import counted

with workflow.unsafe.imports_passed_through():
    from activities.recovery import TRAILS_EVIDENCE_NAME, RecoveryActivities, trail_name
    from models.activities import PlanRecoveryInput, RestoreChangeInput
    from models.case import (
        DRY_RUN,
        DRY_RUN_DONE,
        Action,
        ActionKind,
        ActionStatus,
        Approval,
        Decision,
        LoggingGap,
        Phase,
        RecoveryStep,
    )
    from playbook.classify import AttackerChange, ChangeKind, ResourceKind
    from workflows.case.approvals import Approvals
    from workflows.case.eradication import attacker_keys, attacker_made, owner_kind
    from workflows.case.patches import PERMISSIONS_PATCH, RECOVERY_RETRY_PATCH
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT

# Which principal (or policy) a change is made to, by the change's kind.
_CHANGED_PRINCIPAL = {
    ChangeKind.TRUST_POLICY: ResourceKind.ROLE,
    ChangeKind.USER_POLICY: ResourceKind.USER,
    ChangeKind.ROLE_POLICY: ResourceKind.ROLE,
    ChangeKind.USER_POLICY_DETACHED: ResourceKind.USER,
    ChangeKind.ROLE_POLICY_DETACHED: ResourceKind.ROLE,
    ChangeKind.POLICY_VERSION: ResourceKind.MANAGED_POLICY,
}
_DETACHED = {
    ChangeKind.USER_POLICY_DETACHED: ResourceKind.USER,
    ChangeKind.ROLE_POLICY_DETACHED: ResourceKind.ROLE,
}


class Recovery:
    def __init__(self, record: CaseRecord, approvals: Approvals) -> None:
        self._record = record
        self._approvals = approvals

    async def recover(self) -> None:
        """Undo, after approval, what the attacker changed in things it did not make; what
        Quench cannot restore itself goes to the open items with what a human must do."""
        record = self._record
        status = record.status
        if status.false_positive:
            record.note("no recovery: the case was marked a false positive")
            return
        changes = [c for plan in status.eradication for c in plan.changes]
        self._explain_stopped_trails(changes)
        keys: list[str] = []
        if workflow.patched(PERMISSIONS_PATCH):
            changes = self._changes_to_undo(changes)
            keys = attacker_keys(status)
        if not changes:
            return
        record.set_phase(Phase.RECOVERY, f"planning how to undo {counted(len(changes), 'change')}")
        request = PlanRecoveryInput(
            case_id=status.folder,
            account_id=status.account_id,
            changes=changes,
            trail_evidence=next(
                (e for e in status.evidence if e.name == TRAILS_EVIDENCE_NAME), None
            ),
            lookback_seconds=record.policy.restore_lookback_seconds,
            attacker_keys=keys,
        )
        planned = await self._approvals.attempt(
            "plan the recovery",
            lambda: workflow.execute_activity_method(
                RecoveryActivities.plan_recovery,
                request,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary="Recovery: how each change is undone, from evidence and CloudTrail",
            ),
        )
        steps = planned.steps
        status.recovery = steps
        for step in steps:
            if step.manual:
                record.needs_human(step.manual)
        automatic = [s for s in steps if s.operation is not None]
        if workflow.patched(RECOVERY_RETRY_PATCH):
            automatic = [s for s in automatic if not self._done_by_containment(s)]
        if automatic:
            await self._restore(automatic)
        for step in steps:
            if step.change.kind is ChangeKind.LOGGING_STOPPED:
                self._record_logging_gap(step.change, step)
        record.refresh()

    def _done_by_containment(self, step: RecoveryStep) -> bool:
        """A trail the attacker stopped that containment started again needs no restore,
        nor anyone's approval for one."""
        if step.change.kind is not ChangeKind.LOGGING_STOPPED:
            return False
        restarted = self._record.status.trails_restarted.get(trail_name(step.change.target))
        if restarted is None:
            return False
        step.outcome, step.done_at = "already_restored", restarted
        step.detail = f"containment started logging on it again at {restarted.isoformat()}"
        self._record.note(f"{step.description}: {step.detail}")
        return True

    def _explain_stopped_trails(self, changes: list[AttackerChange]) -> None:
        """A trail found stopped that no change of the attacker's explains: who stopped it
        is for a human to find out."""
        status = self._record.status
        explained = {
            trail_name(c.target)
            for c in changes
            if c.kind in {ChangeKind.LOGGING_STOPPED, ChangeKind.TRAIL_DELETED}
        }
        for name in status.trails_found_stopped:
            if name not in explained:
                self._record.needs_human(
                    f"trail {name} was not logging when the case opened, and not by the "
                    "attacker's credentials: find out who stopped it and when"
                    + (
                        " (containment started it again)"
                        if name in status.trails_restarted
                        else ", and start it"
                    )
                )

    def _changes_to_undo(self, changes: list[AttackerChange]) -> list[AttackerChange]:
        """Changes to things the attacker did not make: a change to its own user, role or
        policy went with it, and detaching a policy it had attached itself undid its own
        work."""
        status = self._record.status
        made = attacker_made(status)
        own_attachments = {
            (owner_kind(s.resource.kind), s.resource.owner, s.resource.name)
            for plan in status.eradication
            for s in plan.steps
            if s.resource.kind
            in {ResourceKind.USER_POLICY_ATTACHMENT, ResourceKind.ROLE_POLICY_ATTACHMENT}
        }
        kept = []
        for change in changes:
            principal = _CHANGED_PRINCIPAL.get(change.kind)
            if principal is not None and (principal, change.target) in made:
                continue
            if (
                change.kind in _DETACHED
                and (_DETACHED[change.kind], change.target, change.detail) in own_attachments
            ):
                continue
            kept.append(change)
        return kept

    async def _restore(self, steps: list[RecoveryStep]) -> None:
        record = self._record
        ledger = self._approvals.ledger
        action = self._approvals.propose(
            ActionKind.RECOVER,
            f"Restore {counted(len(steps), 'change')} the attacker made",
            [s.description + (f" (from {s.source})" if s.source else "") for s in steps],
        )
        decision = await self._approvals.decision(action)
        if decision.decision is Decision.REJECTED:
            ledger.finish(action, ActionStatus.REJECTED, decision.reason)
            for step in steps:
                step.outcome = "declined"
                record.status.open_items.append(f"restore by hand: {step.description}")
            return
        record.set_phase(Phase.RECOVERY, f"restore approved by {decision.approver}")
        if record.dry_run:
            record.would(action.id, action.steps)
            for step in steps:
                step.outcome = DRY_RUN
            ledger.finish(action, ActionStatus.DONE, DRY_RUN_DONE)
            return
        ledger.start(action)
        failed = await self._carry_out(steps)
        outcomes = Counter(step.outcome for step in steps)
        ledger.finish(
            action, ActionStatus.DONE, ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        )
        if failed and workflow.patched(RECOVERY_RETRY_PATCH):
            self._offer_retry(failed)

    async def _carry_out(self, steps: list[RecoveryStep]) -> list[RecoveryStep]:
        """Each restore in turn; one that fails for good is left to a human and the rest
        go on. Returns the failed ones."""
        record = self._record
        failed = []
        for step in steps:
            request = record.in_account(RestoreChangeInput(step=step))
            result, failure = await self._approvals.attempt_or_fail(
                step.description,
                lambda request=request: workflow.execute_activity_method(  # type: ignore[misc]
                    RecoveryActivities.restore_change,
                    request,
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=AWS_RETRY,
                    summary=f"Recover: {request.step.description}"[:200],
                ),
            )
            if result is None:
                # The rest of the recovery goes on; this change is left to a human.
                step.outcome, step.detail = "failed", failure
                record.needs_human(_undone(step))
                failed.append(step)
                record.refresh()
                continue
            step.outcome, step.detail, step.done_at = result.outcome, result.detail, workflow.now()
            if result.evidence is not None:
                record.record_evidence(result.evidence)
            record.note(f"{step.description}: {result.detail}")
            record.refresh()
        return failed

    def _offer_retry(self, failed: list[RecoveryStep]) -> None:
        """The failed restores offered again, decided while the case goes on."""

        async def then(action: Action, decision: Approval) -> None:
            ledger = self._approvals.ledger
            if decision.decision is Decision.REJECTED:
                ledger.finish(action, ActionStatus.REJECTED, decision.reason)
                return
            ledger.start(action)
            for step in failed:
                self._record.status.open_items.remove(_undone(step))
            still = await self._carry_out(failed)
            ledger.finish(
                action,
                ActionStatus.FAILED if still else ActionStatus.DONE,
                f"{len(failed) - len(still)} restored, {len(still)} failed again",
            )
            if still:
                self._offer_retry(still)

        self._approvals.offer_beside(
            ActionKind.RETRY,
            f"Retry {len(failed)} failed " + ("restore" if len(failed) == 1 else "restores"),
            [f"{step.description}: {step.detail}" for step in failed],
            then,
        )

    def _record_logging_gap(self, change: AttackerChange, step: RecoveryStep) -> None:
        record = self._record
        restarted = record.status.trails_restarted.get(trail_name(change.target))
        if restarted is None and step.outcome in {"restored", "already_restored"}:
            restarted = step.done_at
        gap = LoggingGap(
            trail=change.target,
            stopped_at=datetime.fromisoformat(change.event_time.replace("Z", "+00:00")),
            stopped_by=change.made_by,
            restarted_at=restarted,
        )
        record.status.logging_gaps.append(gap)
        record.note(
            f"logging gap on {gap.trail} from {gap.stopped_at.isoformat()} to "
            f"{restarted.isoformat() if restarted else 'now (not restarted)'}: no CloudTrail "
            "record of that time exists"
        )


def _undone(step: RecoveryStep) -> str:
    """The open item of a restore that failed for good."""
    return f"restore by hand: {step.description} (it failed: {step.detail})"
