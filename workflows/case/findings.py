"""Findings delivered to an open case: another sighting of its credential joins the case,
a redelivery is recognised, and the sender is told which it was."""

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from config import names
    from models.case import TimelineEntry
    from models.finding import Finding
    from models.intake import FindingOutcome, SubmitFindingInput, SubmitFindingResult
    from workflows.case.approvals import Approvals
    from workflows.case.record import CaseRecord


class FindingIntake:
    def __init__(self, record: CaseRecord, approvals: Approvals, answered: bool) -> None:
        self._record = record
        self._approvals = approvals
        # Whether the sender of the opening finding has been answered: until then a
        # submit_finding of it is the new case, afterwards a duplicate. A case continued
        # as new was answered in an earlier run.
        self._opening_acknowledged = answered

    def add(self, finding: Finding) -> None:
        """Another delivery of a finding on this credential joins the case."""
        record = self._record
        now = workflow.now()
        opening = record.finding
        if finding.access_key.access_key_id != opening.access_key.access_key_id:
            self._approvals.refuse(
                names.SIGNAL_ADD_FINDING, None, "guardduty", "finding is about another key"
            )
            return
        if finding.dedupe_key == opening.dedupe_key:
            # Signal-with-start delivers the opening finding again: its sender was answered.
            self._opening_acknowledged = True
        if any(f.dedupe_key == finding.dedupe_key for f in record.status.findings):
            return
        record.status.findings.append(finding)
        record.status.timeline.append(
            TimelineEntry(at=now, what=f"finding {finding.id} ({finding.type}) joined the case")
        )

    def submit(self, input: SubmitFindingInput) -> SubmitFindingResult:
        """A delivered finding, answered with what the case made of it. Issues no
        commands, so histories recorded before it existed replay unchanged."""
        status = self._record.status
        finding = input.finding
        outcome = self._outcome_of(finding)
        if outcome is FindingOutcome.NEW_CASE:
            self._opening_acknowledged = True
        elif outcome is not FindingOutcome.DUPLICATE:
            status.findings.append(finding)
            what = (
                f"finding {finding.id} ({finding.type}) joined the case"
                if outcome is FindingOutcome.JOINED
                else f"finding {finding.id} seen again: count {finding.count}, "
                f"updated {finding.updated_at.isoformat()}"
            )
            status.timeline.append(TimelineEntry(at=workflow.now(), what=what))
        return SubmitFindingResult(
            outcome=outcome,
            case_id=status.case_id,
            run_id=workflow.info().run_id,
            findings=len(status.findings),
        )

    def validate(self, input: SubmitFindingInput) -> None:
        """Refused updates leave no trace in the history: a finding on another credential,
        and a redelivery that changes nothing (so a storm of retries costs no history)."""
        finding = input.finding
        key = finding.access_key.access_key_id
        if key != self._record.finding.access_key.access_key_id:
            raise ApplicationError(
                f"finding is about {key}, not this case's credential",
                type=names.ANOTHER_CREDENTIAL_ERROR,
                non_retryable=True,
            )
        times = (finding.created_at, finding.updated_at, finding.first_seen, finding.last_seen)
        if any(t.tzinfo is None for t in times):
            # Such a time could not be ordered against the case's others.
            raise ApplicationError(
                "finding times must carry their time zone",
                type=names.INVALID_FINDING_ERROR,
                non_retryable=True,
            )
        if self._outcome_of(finding) is FindingOutcome.DUPLICATE:
            raise ApplicationError(
                f"finding {finding.id} is already on the case",
                workflow.info().run_id,
                type=names.DUPLICATE_FINDING_ERROR,
                non_retryable=True,
            )

    def _outcome_of(self, finding: Finding) -> FindingOutcome:
        opening = self._record.finding
        known = [f for f in self._record.status.findings if f.id == finding.id]
        if not known:
            return FindingOutcome.JOINED
        if any(f.dedupe_key == finding.dedupe_key for f in known):
            if finding.dedupe_key == opening.dedupe_key and not self._opening_acknowledged:
                return FindingOutcome.NEW_CASE
            return FindingOutcome.DUPLICATE
        latest = max(known, key=lambda f: f.updated_at)
        if finding.updated_at > latest.updated_at or finding.count > latest.count:
            return FindingOutcome.UPDATED
        # An older delivery arriving late (EventBridge does not keep order) adds nothing.
        return FindingOutcome.DUPLICATE
