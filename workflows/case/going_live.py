"""A dry run made real: once the dry run has decided everything, a person approves going
live (go-live-N), and the case contains for real from the current state, then watches,
eradicates and recovers again, each after approval. A rejection closes it having changed
nothing."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models.case import Action, ActionKind, ActionStatus, Decision, Phase
    from workflows.case.approvals import Approvals
    from workflows.case.record import CaseRecord


class GoingLive:
    def __init__(self, record: CaseRecord, approvals: Approvals) -> None:
        self._record = record
        self._approvals = approvals

    async def decided(self) -> Action | None:
        """The go-live action once approved (the case is then no longer a dry run), or
        None when a person kept it a dry run."""
        record = self._record
        status = record.status
        key = status.credential.access_key_id if status.credential else status.findings[0].id
        action = self._approvals.propose(
            ActionKind.GO_LIVE,
            f"Go live: contain {key} for real",
            [
                f"The dry run changed nothing; it would have made {len(status.would)} "
                "change(s), listed in order in the case and its report",
                f"Approve to contain {key} now, for real, from the current state; the watch, "
                "eradication and recovery then run again, each after approval",
                "Reject to close the case as a dry run: nothing is changed",
            ],
            protected=None if status.quench_own else status.hands_off,
        )
        decision = await self._approvals.decision(action)
        ledger = self._approvals.ledger
        if decision.decision is Decision.REJECTED:
            ledger.finish(action, ActionStatus.REJECTED, decision.reason)
            record.note(f"kept a dry run by {decision.approver}: {decision.reason}")
            return None
        status.dry_run = False
        status.went_live_at = workflow.now()
        # The dry run's plans stay on the case, apart from the real ones that follow.
        status.dry_run_eradication, status.eradication = status.eradication, []
        status.dry_run_recovery, status.recovery = status.recovery, []
        # What the dry run could not contain, the real rounds find again.
        status.uncontained = []
        record.set_phase(
            Phase.CONTAINMENT, f"went live: {action.id} approved by {decision.approver}"
        )
        return action
