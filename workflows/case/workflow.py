"""The case workflow: one compromised credential, from finding to closed case.

The conductor: `run` reads as the playbook's table of contents (triage and evidence,
containment, the watch, eradication, recovery, the report), and each phase lives in its
own module. Every AWS change is an activity; the case only decides and records.
"""

from collections.abc import Sequence
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from config import names
    from models.case import (
        ApprovalInput,
        CaseInput,
        CaseResume,
        CaseStatus,
        Decision,
        DecisionResult,
        EradicationPlan,
        EradicationProgress,
        FalsePositiveInput,
        FalsePositiveResult,
        Note,
        NoteInput,
        NoteResult,
        NotificationKind,
        Phase,
        PhaseChange,
        TimelineEntry,
    )
    from models.finding import Finding
    from models.intake import SubmitFindingInput, SubmitFindingResult
    from models.principal import CredentialKind
    from playbook.undone import closing_outcome
    from workflows.case.approvals import Approvals, CaseAbandoned
    from workflows.case.containment import Containment
    from workflows.case.details import closing_message
    from workflows.case.eradication import Eradication
    from workflows.case.evidence import CollectedEvidence, Evidence
    from workflows.case.findings import FindingIntake
    from workflows.case.going_live import GoingLive
    from workflows.case.inputs import InvalidInput, payload_as_sent, read_input, sent_as_text
    from workflows.case.investigation import Investigation
    from workflows.case.ledger import ApprovalLedger
    from workflows.case.minted import MintedCredentials
    from workflows.case.notifications import Notifications
    from workflows.case.patches import (
        ACTION_IDS_BY_KIND_PATCH,
        CUT_OFF_FIRST_PATCH,
        EVIDENCE_FOLDER_PATCH,
        INVESTIGATION_PATCH,
        PLAN_PATCH,
        RECOVERY_PATCH,
        REPORT_PATCH,
        WATCH_PATCH,
    )
    from workflows.case.quarantine import OrganizationQuarantine
    from workflows.case.record import CaseRecord
    from workflows.case.recovery import Recovery
    from workflows.case.release import Release
    from workflows.case.report import write_report
    from workflows.case.watch import ContainmentWatch


M = TypeVar("M", bound=BaseModel)
_SIGNALS = (
    names.SIGNAL_APPROVE,
    names.SIGNAL_REJECT,
    names.SIGNAL_ADD_NOTE,
    names.SIGNAL_ADD_FINDING,
    names.SIGNAL_FALSE_POSITIVE,
)


@workflow.defn
class CaseWorkflow:
    @workflow.init
    def __init__(self, input: CaseInput) -> None:
        resume = input.resume
        status = resume.status if resume is not None else _opened(input)
        record = CaseRecord(status, input.policy)
        ledger = ApprovalLedger(
            status, input.policy, workflow.now, resume.action_seq if resume is not None else 0
        )
        self._record = record
        self._notifications = Notifications(record)
        self._approvals = Approvals(record, ledger, self._notifications)
        self._findings = FindingIntake(record, self._approvals, answered=resume is not None)
        self._evidence = Evidence(record, self._approvals)
        self._containment = Containment(record, self._approvals)
        self._quarantine = OrganizationQuarantine(record, self._approvals)
        self._watch = ContainmentWatch(record, self._approvals, self._containment, self._quarantine)
        minted = MintedCredentials(record, self._approvals, self._containment, self._watch)
        self._eradication = Eradication(record, self._approvals, minted, self._continue_as_new)
        self._recovery = Recovery(record, self._approvals)
        self._investigation = Investigation(record)
        self._going_live = GoingLive(record, self._approvals)
        self._release = Release(record, self._approvals)
        # What the evidence phase learned, for containment when a dry run goes live.
        self._collected: CollectedEvidence | None = None

    # -- the playbook ----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: CaseInput) -> CaseStatus:
        record = self._record
        self._approvals.ledger.number_by_kind = workflow.patched(ACTION_IDS_BY_KIND_PATCH)
        try:
            if input.resume is not None:
                record.note(f"continued as new after round {input.resume.eradication.rounds_done}")
                await self._eradicate_and_recover(input.resume.eradication)
            else:
                await self._respond(input.finding)
        except CaseAbandoned as abandoned:
            await self._approvals.offers_decided("closing")
            self._approvals.ledger.fail_unfinished(str(abandoned))
            record.close(str(abandoned))
        await record.background_done()
        await self._investigation.every_credential()
        if workflow.patched(REPORT_PATCH):
            await write_report(record, self._approvals)
        await self._notifications.send(NotificationKind.CLOSED, *closing_message(record.status))
        await record.background_done()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return record.status

    async def _respond(self, finding: Finding) -> None:
        """From triage: evidence, containment, the watch, eradication and recovery."""
        record = self._record
        record.upsert_finding_attributes(finding)
        record.set_phase(Phase.TRIAGE, "resolving the principal")
        if workflow.patched(CUT_OFF_FIRST_PATCH):
            # Only what containment changes is kept before the cut-off.
            credential, evidence = await self._evidence.triage_cut_off_first(finding)
        else:
            credential = await self._evidence.resolve_principal(finding)
            record.status.credential = credential
            record.upsert_principal_attributes(credential)
            record.set_phase(Phase.EVIDENCE, "preserving evidence before any change")
            evidence = await self._evidence.collect(credential)
        investigating = workflow.patched(INVESTIGATION_PATCH)

        def investigate() -> None:
            # Beside the rest of the case: a long look-back must not hold up containment.
            if investigating:
                record.beside(
                    self._investigation.investigate(credential, [credential.access_key_id])
                )

        if evidence.cut_off_first:
            # Nor compete with other cases' cut-offs: it starts once containment is done, or
            # waits on a person.
            evidence.after_containment.append(investigate)
        else:
            investigate()
        self._collected = evidence
        try:
            outcome = await self._containment.contain(credential, evidence)
        except CaseAbandoned:
            # The evidence still to keep is kept before the case closes.
            evidence.start_all()
            raise
        evidence.start_all()
        if outcome is None:
            return
        await self._containment.logging_after_cut_off()
        if workflow.patched(WATCH_PATCH):
            await self._watch.until_clean(credential, evidence)
        if workflow.patched(PLAN_PATCH):
            await self._eradicate_and_recover(self._eradication.begin(credential, outcome))
        else:
            record.close(outcome)

    async def _eradicate_and_recover(self, progress: EradicationProgress) -> None:
        await self._eradication.run(progress)
        if workflow.patched(RECOVERY_PATCH):
            await self._recovery.recover()
        # Only cases opened in an organisation Quench may quarantine in can have one.
        await self._quarantine.lift()
        if self._record.dry_run:
            await self._after_dry_run(progress)
            return
        await self._approvals.offers_decided("closing")
        marked = self._record.status.false_positive
        self._record.close(
            f"false positive, marked by {marked.author}: {marked.text}"
            if marked is not None
            else closing_outcome(self._record.status, progress.outcome)
        )

    async def _after_dry_run(self, progress: EradicationProgress) -> None:
        """A dry run decided everything: a person makes it real (then containment runs
        for real from the current state, and the watch, eradication and recovery after
        it), or it closes having changed nothing."""
        record = self._record
        credential = record.status.credential
        went_live = None if record.status.false_positive else await self._going_live.decided()
        if not went_live or credential is None:
            await self._approvals.offers_decided("closing")
            record.close("dry run: nothing was changed in AWS")
            return
        # The instance's state when the case opened may not be its state now: it is
        # stopped and started whatever it was.
        known = self._collected
        evidence = CollectedEvidence(
            instance_running=None,
            user_key=known.user_key if known else credential.kind is CredentialKind.IAM_USER_KEY,
            user=known.user if known else None,
        )
        await self._evidence.before_going_live(credential)
        await self._containment.go_live(went_live, credential, evidence)
        await self._watch.until_clean(credential, evidence)
        await self._eradicate_and_recover(self._eradication.begin(credential, "contained"))

    async def _continue_as_new(self, progress: EradicationProgress) -> None:
        """A fresh run for the next rounds, carrying everything the case knows."""
        record = self._record
        await self._approvals.offers_decided("continuing as new")
        await record.background_done()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            CaseInput(
                case_id=record.status.case_id,
                finding=record.finding,
                policy=record.policy,
                resume=CaseResume(
                    status=record.status,
                    action_seq=self._approvals.ledger.proposed,
                    eradication=progress,
                ),
            )
        )

    # -- findings, decisions and notes from outside ----------------------------------------
    # Each handler takes any payload and reads it itself (workflows/case/inputs.py): a bad
    # signal is kept in `refused` with its reason, a bad update refused with the field at
    # fault; neither can fail the workflow task and wedge the case.

    @workflow.signal(name=names.SIGNAL_ADD_FINDING)
    def add_finding(self, *args: Any) -> None:
        """Another delivery of a finding on this credential joins the case."""
        finding = self._signalled(names.SIGNAL_ADD_FINDING, Finding, args)
        if finding is not None:
            self._findings.add(finding)

    @workflow.update(name=names.UPDATE_SUBMIT_FINDING)
    def submit_finding(self, *args: Any) -> SubmitFindingResult:
        return self._findings.submit(SubmitFindingInput.model_validate(args[0]))

    @submit_finding.validator
    def _validate_submitted_finding(self, *args: Any) -> None:
        self._findings.validate(_update_input(SubmitFindingInput, args))

    @workflow.signal(name=names.SIGNAL_APPROVE)
    def approve(self, *args: Any) -> None:
        decision = self._signalled(names.SIGNAL_APPROVE, ApprovalInput, args)
        if decision is not None:
            self._approvals.decide(decision, Decision.APPROVED)

    @workflow.signal(name=names.SIGNAL_REJECT)
    def reject(self, *args: Any) -> None:
        decision = self._signalled(names.SIGNAL_REJECT, ApprovalInput, args)
        if decision is not None:
            self._approvals.decide(decision, Decision.REJECTED)

    @workflow.signal(name=names.SIGNAL_ADD_NOTE)
    def add_note(self, *args: Any) -> None:
        note = self._signalled(names.SIGNAL_ADD_NOTE, NoteInput, args)
        if note is not None:
            self._add_note(note)

    @workflow.signal(name=names.SIGNAL_FALSE_POSITIVE)
    def mark_false_positive(self, *args: Any) -> None:
        """A person says the case is a false positive: its response stops, and what its
        containment changed is offered back (workflows/case/release.py)."""
        marked = self._signalled(names.SIGNAL_FALSE_POSITIVE, FalsePositiveInput, args)
        if marked is None:
            return
        refusal = self._release.refusal(marked)
        if refusal is not None:
            self._approvals.refuse(names.SIGNAL_FALSE_POSITIVE, None, marked.by, refusal)
            return
        self._release.mark(marked)

    @workflow.update(name=names.UPDATE_FALSE_POSITIVE)
    def mark_false_positive_now(self, *args: Any) -> FalsePositiveResult:
        return FalsePositiveResult(
            released=self._release.mark(FalsePositiveInput.model_validate(args[0]))
        )

    @mark_false_positive_now.validator
    def _validate_false_positive(self, *args: Any) -> None:
        refusal = self._release.refusal(_update_input(FalsePositiveInput, args))
        if refusal is not None:
            raise ApplicationError(refusal, type=names.DECISION_REFUSED_ERROR, non_retryable=True)

    @workflow.signal(dynamic=True)
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """A signal the case does not take (a typo, an update's name sent as a signal) is
        kept in `refused`, never silently dropped."""
        self._approvals.refuse(
            name[:100],
            None,
            "unknown sender",
            f"no such signal: {name[:100]}; the case takes {', '.join(_SIGNALS)}",
            sent=sent_as_text([payload_as_sent(raw.payload.data) for raw in args]),
        )

    # The decisions and notes again as updates, for callers that want the answer: a
    # refused decision is refused by the validator, so the caller is told why and the
    # history keeps nothing of it (a refused signal is kept in `refused` instead).

    @workflow.update(name=names.UPDATE_APPROVE)
    def approve_action(self, *args: Any) -> DecisionResult:
        return self._decided(ApprovalInput.model_validate(args[0]), Decision.APPROVED)

    @approve_action.validator
    def _validate_approval(self, *args: Any) -> None:
        self._raise_if_refused(_update_input(ApprovalInput, args), Decision.APPROVED)

    @workflow.update(name=names.UPDATE_REJECT)
    def reject_action(self, *args: Any) -> DecisionResult:
        return self._decided(ApprovalInput.model_validate(args[0]), Decision.REJECTED)

    @reject_action.validator
    def _validate_rejection(self, *args: Any) -> None:
        self._raise_if_refused(_update_input(ApprovalInput, args), Decision.REJECTED)

    @workflow.update(name=names.UPDATE_ADD_NOTE)
    def add_note_now(self, *args: Any) -> NoteResult:
        self._add_note(NoteInput.model_validate(args[0]))
        return NoteResult(notes=len(self._record.status.notes))

    @add_note_now.validator
    def _validate_note(self, *args: Any) -> None:
        _update_input(NoteInput, args)

    def _signalled(self, signal: str, model: type[M], args: Sequence[Any]) -> M | None:
        """A signal's input, or None when it is malformed: then kept in `refused`."""
        try:
            return read_input(model, args)
        except InvalidInput as bad:
            # Who sent it and about which action, as far as the payload says.
            sender = args[0] if args and isinstance(args[0], dict) else {}
            by = str(
                sender.get("approver") or sender.get("author") or sender.get("by") or ""
            ).strip()
            action_id = sender.get("action_id")
            self._approvals.refuse(
                signal,
                action_id[:100] if isinstance(action_id, str) else None,
                by[:200] or "unknown sender",
                f"malformed input: {bad.reason}",
                sent=bad.sent,
            )
            return None

    def _add_note(self, note: NoteInput) -> None:
        self._record.status.notes.append(
            Note(author=note.author, text=note.text, at=workflow.now())
        )

    def _decided(self, input: ApprovalInput, decision: Decision) -> DecisionResult:
        """A decision the validator let through, and where it leaves the action."""
        action = self._approvals.decide(input, decision)
        assert action is not None  # the validator refused what the ledger would refuse
        return self._approvals.ledger.result(action)

    def _raise_if_refused(self, input: ApprovalInput, decision: Decision) -> None:
        refusal = self._approvals.ledger.refusal(input, decision)
        if refusal is not None:
            raise ApplicationError(
                f"{'approve' if decision is Decision.APPROVED else 'reject'} "
                f"{input.action_id} by {input.approver}: {refusal}",
                type=names.DECISION_REFUSED_ERROR,
                non_retryable=True,
            )

    # Queries take no input; one sent anyway is ignored rather than failing the query.

    @workflow.query(name=names.QUERY_STATUS)
    def status(self, *_: Any) -> CaseStatus:
        return self._record.status

    @workflow.query(name=names.QUERY_PLAN)
    def plan(self, *_: Any) -> EradicationPlan | None:
        """The latest eradication round's plan."""
        eradication = self._record.status.eradication
        return eradication[-1] if eradication else None


def _update_input(model: type[M], args: Sequence[Any]) -> M:
    """An update's input, or a refusal the caller reads: the field at fault, not retried."""
    try:
        return read_input(model, args)
    except InvalidInput as bad:
        raise ApplicationError(
            f"malformed input: {bad.reason}", type=names.INVALID_INPUT_ERROR, non_retryable=True
        ) from None


def _opened(input: CaseInput) -> CaseStatus:
    """A new case's status, from the finding that opened it."""
    now = workflow.now()
    finding = input.finding
    return CaseStatus(
        case_id=input.case_id,
        phase=Phase.TRIAGE,
        account_id=finding.account_id,
        findings=[finding],
        phases=[PhaseChange(phase=Phase.TRIAGE, at=now, note="case opened")],
        actions=[],
        approvals=[],
        evidence=[],
        timeline=[TimelineEntry(at=now, what=f"case opened from finding {finding.id}")],
        dry_run=input.policy.dry_run,
        signed_decisions=bool(input.policy.approver_keys),
        evidence_folder=(
            f"{input.case_id}/{now:%Y-%m-%dT%H-%M-%S}Z-{workflow.info().run_id[:8]}"
            if workflow.patched(EVIDENCE_FOLDER_PATCH)
            else None
        ),
    )
