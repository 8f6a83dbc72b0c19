"""The case workflow: one compromised credential, from finding to closed case.

Evidence first, then containment after a human approves, then proof that the credential
really changed. Every AWS change is an activity; this module only decides and records.
"""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.aws import NON_RETRYABLE_ERRORS
    from activities.cloudtrail import CloudTrailActivities
    from activities.ec2 import Ec2Activities
    from activities.eradication import EradicationActivities
    from activities.evidence import EvidenceActivities
    from activities.iam import IamActivities
    from activities.investigation import InvestigationActivities
    from activities.notify import ERROR_CHAT_REFUSED, Notifier
    from activities.recovery import TRAILS_EVIDENCE_NAME, RecoveryActivities, trail_name
    from activities.ssm import SsmActivities
    from config import names
    from models.activities import (
        AccessKeyInput,
        CaptureInstanceInput,
        CaptureRoleInput,
        CaptureTrailsInput,
        CaptureUserInput,
        CaptureUserResult,
        CheckActivityInput,
        CheckActivityResult,
        ClassifyActivityInput,
        CloudTrailSliceInput,
        CountBaselineInput,
        CountBaselineResult,
        DenyUserTokensInput,
        FindPriorStateInput,
        InstanceInput,
        InvestigateInput,
        NotifyInput,
        NotifyResult,
        PlanReadsInput,
        PlanRecoveryInput,
        ProbeInstanceCredentialsInput,
        ReadPlan,
        ReadScopeInput,
        ReadScopeResult,
        ReadUnit,
        RemoveResourceInput,
        ResolvePrincipalInput,
        RestoreChangeInput,
        RevokeRoleSessionsInput,
        RoleTrustInput,
        SnapshotVolumesInput,
        StartTrailsLoggingInput,
        StoreEvidenceInput,
        UserInput,
        WriteReportInput,
    )
    from models.case import (
        CONTAINMENT_KINDS,
        Action,
        ActionKind,
        ActionStatus,
        Approval,
        ApprovalInput,
        CaseInput,
        CaseReportRef,
        CaseResume,
        CaseStatus,
        Decision,
        DecisionResult,
        EradicationPlan,
        EradicationProgress,
        EvidenceRecord,
        LoggingGap,
        Note,
        NoteInput,
        NoteResult,
        NotificationKind,
        Phase,
        PhaseChange,
        RecoveryStep,
        RejectedSignal,
        TimelineEntry,
        WatchStatus,
    )
    from models.finding import Finding
    from models.intake import FindingOutcome, SubmitFindingInput, SubmitFindingResult
    from models.principal import Credential, CredentialKind
    from playbook.classify import (
        POLICY_PARTS,
        REPLACED_POLICY_CHANGE,
        AttackerChange,
        ChangeKind,
        NewCredential,
        ResourceKind,
    )
    from playbook.investigation import BASELINE_DAYS
    from playbook.plan import removal_plan

T = TypeVar("T")

# How far before GuardDuty's first sighting the evidence slice of CloudTrail reaches: the
# compromise can precede the first call GuardDuty flagged, and instance role sessions
# live up to 12 hours.
EVIDENCE_LOOKBACK = timedelta(hours=24)

# Patch markers: histories recorded before these steps existed replay without them.
WATCH_PATCH = "containment-watch"
USER_KEY_PATCH = "user-key-containment"
ROLE_SESSION_PATCH = "role-session-containment"
PLAN_PATCH = "eradication-plan"
ROUNDS_PATCH = "eradication-rounds"
ERADICATE_PATCH = "eradication"
TRAILS_PATCH = "trail-evidence"
RECOVERY_PATCH = "recovery"
REPORT_PATCH = "post-incident-report"
MINTED_PATCH = "minted-credential-containment"
PERMISSIONS_PATCH = "in-place-permissions"
MINTED_WATCH_PATCH = "minted-credential-watch"
DEADLINE_PATCH = "approval-deadlines"
NOTIFY_PATCH = "notifications"
INVESTIGATION_PATCH = "investigation"
# Containment starts logging again on trails found stopped, so the watch can see.
LOGGING_PATCH = "logging-before-watch"

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=8,
    non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
)
# Parts of the investigation's reads run at once (each a region's day of logs).
_READS_AT_ONCE = 8
# A notification is worth a few tries, never a stuck case: after these it is noted as failed.
_NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=[*NON_RETRYABLE_ERRORS, ERROR_CHAT_REFUSED],
)
_CONTAINMENT_KINDS = frozenset(
    {
        ActionKind.CONTAIN_INSTANCE_ROLE,
        ActionKind.CONTAIN_USER_KEY,
        ActionKind.CONTAIN_ROLE_SESSION,
    }
)
# The SSM agent needs a while after a start before it takes commands again.
_PROBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
)


class CaseAbandoned(Exception):
    """A human declined to retry a failed step; the case closes with that decision."""


@workflow.defn
class CaseWorkflow:
    @workflow.init
    def __init__(self, input: CaseInput) -> None:
        now = workflow.now()
        self._status = CaseStatus(
            case_id=input.case_id,
            phase=Phase.TRIAGE,
            account_id=input.finding.account_id,
            findings=[input.finding],
            phases=[PhaseChange(phase=Phase.TRIAGE, at=now, note="case opened")],
            actions=[],
            approvals=[],
            evidence=[],
            timeline=[TimelineEntry(at=now, what=f"case opened from finding {input.finding.id}")],
        )
        self._action_seq = 0
        self._notifications = 0
        # Work the case goes on beside: notifications on their way, the investigation.
        self._background: list[asyncio.Task[None]] = []
        self._policy = input.policy
        if input.resume is not None:
            self._status = input.resume.status
            self._action_seq = input.resume.action_seq
        # Whether the sender of the opening finding has been answered: until then a
        # submit_finding of it is the new case, afterwards a duplicate. A case continued
        # as new was answered in an earlier run.
        self._opening_acknowledged = input.resume is not None

    # -- signals and queries -------------------------------------------------------------

    @workflow.signal(name=names.SIGNAL_ADD_FINDING)
    def add_finding(self, finding: Finding) -> None:
        """Another delivery of a finding on this credential joins the case."""
        now = workflow.now()
        if finding.access_key.access_key_id != self._finding.access_key.access_key_id:
            self._refuse(
                names.SIGNAL_ADD_FINDING, None, "guardduty", "finding is about another key"
            )
            return
        if finding.dedupe_key == self._finding.dedupe_key:
            # Signal-with-start delivers the opening finding again: its sender was answered.
            self._opening_acknowledged = True
        if any(f.dedupe_key == finding.dedupe_key for f in self._status.findings):
            return
        self._status.findings.append(finding)
        self._status.timeline.append(
            TimelineEntry(at=now, what=f"finding {finding.id} ({finding.type}) joined the case")
        )

    @workflow.update(name=names.UPDATE_SUBMIT_FINDING)
    def submit_finding(self, input: SubmitFindingInput) -> SubmitFindingResult:
        """A delivered finding, answered with what the case made of it. Issues no
        commands, so histories recorded before it existed replay unchanged."""
        finding = input.finding
        outcome = self._outcome_of(finding)
        if outcome is FindingOutcome.NEW_CASE:
            self._opening_acknowledged = True
        elif outcome is not FindingOutcome.DUPLICATE:
            self._status.findings.append(finding)
            what = (
                f"finding {finding.id} ({finding.type}) joined the case"
                if outcome is FindingOutcome.JOINED
                else f"finding {finding.id} seen again: count {finding.count}, "
                f"updated {finding.updated_at.isoformat()}"
            )
            self._status.timeline.append(TimelineEntry(at=workflow.now(), what=what))
        return SubmitFindingResult(
            outcome=outcome,
            case_id=self._status.case_id,
            run_id=workflow.info().run_id,
            findings=len(self._status.findings),
        )

    @submit_finding.validator
    def _validate_submitted_finding(self, input: SubmitFindingInput) -> None:
        """Refused updates leave no trace in the history: a finding on another credential,
        and a redelivery that changes nothing (so a storm of retries costs no history)."""
        finding = input.finding
        key = finding.access_key.access_key_id
        if key != self._finding.access_key.access_key_id:
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
        known = [f for f in self._status.findings if f.id == finding.id]
        if not known:
            return FindingOutcome.JOINED
        if any(f.dedupe_key == finding.dedupe_key for f in known):
            if finding.dedupe_key == self._finding.dedupe_key and not self._opening_acknowledged:
                return FindingOutcome.NEW_CASE
            return FindingOutcome.DUPLICATE
        latest = max(known, key=lambda f: f.updated_at)
        if finding.updated_at > latest.updated_at or finding.count > latest.count:
            return FindingOutcome.UPDATED
        # An older delivery arriving late (EventBridge does not keep order) adds nothing.
        return FindingOutcome.DUPLICATE

    @workflow.signal(name=names.SIGNAL_APPROVE)
    def approve(self, input: ApprovalInput) -> None:
        self._decide(input, Decision.APPROVED)

    @workflow.signal(name=names.SIGNAL_REJECT)
    def reject(self, input: ApprovalInput) -> None:
        self._decide(input, Decision.REJECTED)

    @workflow.signal(name=names.SIGNAL_ADD_NOTE)
    def add_note(self, input: NoteInput) -> None:
        self._status.notes.append(Note(author=input.author, text=input.text, at=workflow.now()))

    # The decisions and notes again as updates, for callers that want the answer: a
    # refused decision is refused by the validator, so the caller is told why and the
    # history keeps nothing of it (a refused signal is kept in `refused` instead).

    @workflow.update(name=names.UPDATE_APPROVE)
    def approve_action(self, input: ApprovalInput) -> DecisionResult:
        return self._decided(input, Decision.APPROVED)

    @approve_action.validator
    def _validate_approval(self, input: ApprovalInput) -> None:
        self._raise_if_refused(input, Decision.APPROVED)

    @workflow.update(name=names.UPDATE_REJECT)
    def reject_action(self, input: ApprovalInput) -> DecisionResult:
        return self._decided(input, Decision.REJECTED)

    @reject_action.validator
    def _validate_rejection(self, input: ApprovalInput) -> None:
        self._raise_if_refused(input, Decision.REJECTED)

    @workflow.update(name=names.UPDATE_ADD_NOTE)
    def add_note_now(self, input: NoteInput) -> NoteResult:
        self.add_note(input)
        return NoteResult(notes=len(self._status.notes))

    def _decided(self, input: ApprovalInput, decision: Decision) -> DecisionResult:
        """A decision the validator let through, and where it leaves the action."""
        self._decide(input, decision)
        action = self._action(input.action_id)
        assert action is not None  # the validator refused unknown actions
        approved = len(action.endorsements) + (action.status is ActionStatus.APPROVED)
        return DecisionResult(
            action_id=action.id,
            status=action.status,
            approvals=approved,
            needed=self._approvals_needed(action),
        )

    def _raise_if_refused(self, input: ApprovalInput, decision: Decision) -> None:
        refusal = self._refusal(input, decision)
        if refusal is not None:
            raise ApplicationError(
                f"{'approve' if decision is Decision.APPROVED else 'reject'} "
                f"{input.action_id} by {input.approver}: {refusal}",
                type=names.DECISION_REFUSED_ERROR,
                non_retryable=True,
            )

    @workflow.query(name=names.QUERY_STATUS)
    def status(self) -> CaseStatus:
        return self._status

    @workflow.query(name=names.QUERY_PLAN)
    def plan(self) -> EradicationPlan | None:
        """The latest eradication round's plan."""
        return self._status.eradication[-1] if self._status.eradication else None

    # -- the playbook ------------------------------------------------------------------

    @workflow.run
    async def run(self, input: CaseInput) -> CaseStatus:
        try:
            if input.resume is not None:
                self._note(f"continued as new after round {input.resume.eradication.rounds_done}")
                await self._eradication_rounds(input.resume.eradication)
            else:
                await self._respond(input.finding)
        except CaseAbandoned as abandoned:
            self._close(str(abandoned))
        await self._background_done()
        await self._investigate_every_credential()
        if workflow.patched(REPORT_PATCH):
            await self._write_report()
        await self._notify(NotificationKind.CLOSED, *self._closing_message())
        await self._background_done()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    async def _investigate(
        self, credential: Credential, keys: list[str], name: str = "investigation"
    ) -> None:
        """The Detective-grade view of the credentials from CloudTrail: their sessions, the
        principal's call volume against its baseline, what is new. Kept as evidence; a
        failure is an open item, never a stuck case."""
        findings = self._status.findings
        scope_start = min(f.first_seen for f in findings) - timedelta(
            seconds=self._policy.compromise_margin_seconds
        )
        snapshot = next(
            (e for e in self._status.evidence if e.name.startswith(("iam-role-", "iam-user-"))),
            None,
        )
        try:
            scope_end = workflow.now()
            scope = await self._read_scope(
                scope_start,
                # The plan's end is not part of the window; now is.
                scope_end + timedelta(microseconds=1),
                keys,
                snapshot,
                credential,
                name,
            )
            earlier = self._status.investigation
            parts = (
                earlier.baseline_parts
                if earlier is not None and earlier.baseline_parts
                else await self._count_baseline(scope_start, snapshot, credential)
            )
            ref = await workflow.execute_activity_method(
                InvestigationActivities.investigate_credentials,
                InvestigateInput(
                    case_id=self._status.case_id,
                    account_id=self._status.account_id,
                    credentials=keys,
                    findings=findings,
                    scope_start=scope_start,
                    scope_end=scope_end,
                    principal_evidence=snapshot,
                    principal_arn=credential.principal.arn,
                    baseline_parts=parts,
                    scope_parts=scope,
                    name=name,
                ),
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary="Investigate from CloudTrail: the session, call volume against the "
                "principal's 45-day baseline, new behaviour",
            )
        except ActivityError as failure:
            cause = failure.cause
            reason = cause.message if isinstance(cause, FailureError) else failure.message
            self._status.open_items.append(f"the CloudTrail investigation failed: {reason}")
            self._refresh()
            return
        self._status.investigation = ref
        self._record_evidence(ref.investigation)
        self._record_evidence(ref.chart)
        self._note(
            f"investigation of {ref.principal_arn}: {ref.hours_above_baseline} hours above "
            f"baseline; new source IPs {', '.join(ref.new_source_ips) or 'none'}; "
            f"{len(ref.new_api_calls)} API calls never made before"
        )
        self._refresh()

    async def _investigate_every_credential(self) -> None:
        """Once the rounds found the credentials the attacker minted, the investigation
        again with all of them, so the report's session timeline has every one."""
        first = self._status.investigation
        credential = self._status.credential
        if first is None or credential is None:
            return
        keys = [credential.access_key_id]
        for plan in self._status.eradication:
            keys += [c.access_key_id for c in plan.new_credentials if c.access_key_id not in keys]
        if len(keys) == 1:
            return
        await self._investigate(credential, keys, name="investigation-all-credentials")

    async def _plan_reads(
        self,
        start: datetime,
        end: datetime,
        snapshot: EvidenceRecord | None,
        credential: Credential,
        what: str,
    ) -> ReadPlan:
        return await workflow.execute_activity_method(
            InvestigationActivities.plan_reads,
            PlanReadsInput(
                account_id=self._status.account_id,
                start=start,
                end=end,
                principal_evidence=snapshot,
                principal_arn=credential.principal.arn,
            ),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=_RETRY,
            summary=f"Split {what} by region and day",
        )

    async def _in_parts(
        self, units: list[ReadUnit], read: Callable[[ReadUnit], Awaitable[T]]
    ) -> list[T]:
        """A read of each part that any worker can take, a few at once, in order."""
        done: list[T] = []
        for first in range(0, len(units), _READS_AT_ONCE):
            batch = units[first : first + _READS_AT_ONCE]
            done += await asyncio.gather(*(read(unit) for unit in batch))
        return done

    async def _count_baseline(
        self, scope_start: datetime, snapshot: EvidenceRecord | None, credential: Credential
    ) -> list[EvidenceRecord]:
        """The principal's baseline counted in parts (a region's day each); each part is
        kept as evidence and only its reference comes back, so the history stays small
        however busy the principal."""
        plan = await self._plan_reads(
            scope_start - timedelta(days=BASELINE_DAYS),
            scope_start,
            snapshot,
            credential,
            f"the {BASELINE_DAYS}-day baseline",
        )

        def count(unit: ReadUnit) -> Awaitable[CountBaselineResult]:
            return workflow.execute_activity_method(
                InvestigationActivities.count_baseline,
                CountBaselineInput(
                    case_id=self._status.case_id,
                    account_id=self._status.account_id,
                    principal_arn=plan.principal_arn,
                    unit=unit,
                ),
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Baseline: the principal's calls in {unit.region} on "
                f"{unit.start:%Y-%m-%d}",
            )

        return [c.counts for c in await self._in_parts(plan.units, count)]

    async def _read_scope(
        self,
        scope_start: datetime,
        scope_end: datetime,
        keys: list[str],
        snapshot: EvidenceRecord | None,
        credential: Credential,
        name: str,
    ) -> list[EvidenceRecord]:
        """The scope's records read in parts (a region's day each), each kept as evidence."""
        plan = await self._plan_reads(
            scope_start, scope_end, snapshot, credential, "the investigation's window"
        )

        def read(unit: ReadUnit) -> Awaitable[ReadScopeResult]:
            return workflow.execute_activity_method(
                InvestigationActivities.read_scope,
                ReadScopeInput(
                    case_id=self._status.case_id,
                    account_id=self._status.account_id,
                    credentials=keys,
                    principal_arn=plan.principal_arn,
                    unit=unit,
                    name=f"{name}-scope",
                ),
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Investigation: calls in {unit.region} on {unit.start:%Y-%m-%d}",
            )

        return [r.records for r in await self._in_parts(plan.units, read)]

    def _closing_message(self) -> tuple[str, str]:
        status = self._status
        lines = [f"Case {status.case_id} is closed: {status.outcome}"]
        decided = [a for a in status.actions if a.approval is not None]
        lines += [
            f"- {a.id}: {a.status.value} by {a.approval.approver}" for a in decided if a.approval
        ]
        if status.open_items:
            lines += ["", f"Open items for a human ({len(status.open_items)}):"]
            lines += [f"- {item}" for item in status.open_items]
        if status.report is not None:
            lines += ["", f"Post-incident report: {status.report.markdown_report.uri}"]
        return f"{status.case_id} closed", "\n".join(lines)

    async def _respond(self, finding: Finding) -> None:
        """The playbook from triage: evidence, containment, the watch, eradication."""
        self._upsert_static_attributes(finding)
        self._set_phase(Phase.TRIAGE, "resolving the principal")
        resolved = await self._attempt(
            "resolve the principal",
            lambda: workflow.execute_activity_method(
                IamActivities.resolve_principal,
                ResolvePrincipalInput(finding=finding),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary="Resolve the principal behind the access key",
            ),
        )
        credential = resolved.credential
        self._status.credential = credential
        self._upsert_principal_attributes(credential)

        self._set_phase(Phase.EVIDENCE, "preserving evidence before any change")
        evidence = await self._collect_evidence(credential)
        if workflow.patched(INVESTIGATION_PATCH):
            # Beside the rest of the case: a long look-back must not hold up containment.
            self._background.append(
                asyncio.create_task(self._investigate(credential, [credential.access_key_id]))
            )

        if credential.kind is CredentialKind.INSTANCE_ROLE_SESSION:
            outcome = await self._contain_instance_role(credential, evidence.instance_running)
        elif evidence.user is not None:
            outcome = await self._contain_user_key(credential, evidence.user)
        elif credential.kind is CredentialKind.ROLE_SESSION and workflow.patched(
            ROLE_SESSION_PATCH
        ):
            outcome = await self._contain_role_session(credential)
        else:
            outcome = await self._hand_to_human(credential)
        if outcome is None:
            return
        if workflow.patched(WATCH_PATCH):
            await self._watch_until_clean(credential, evidence)
        if workflow.patched(PLAN_PATCH):
            await self._plan_eradication(credential, outcome)
        else:
            self._close(outcome)

    async def _collect_evidence(self, credential: Credential) -> "_Evidence":
        """Evidence before any change."""
        case_id = self._status.case_id
        finding = self._finding
        principal = credential.principal
        collected = _Evidence()
        self._record_evidence(
            await self._attempt(
                "store the finding",
                lambda: workflow.execute_activity_method(
                    EvidenceActivities.store_evidence,
                    StoreEvidenceInput(
                        case_id=case_id,
                        name=f"finding-{_slug(finding.id)}",
                        document=finding.raw or finding.model_dump(mode="json"),
                    ),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=_RETRY,
                    summary="Store the GuardDuty finding",
                ),
            )
        )
        if principal.role_name:
            role_name = principal.role_name
            self._record_evidence(
                await self._attempt(
                    "capture the role's IAM state",
                    lambda: workflow.execute_activity_method(
                        IamActivities.capture_role_state,
                        CaptureRoleInput(case_id=case_id, role_name=role_name),
                        start_to_close_timeout=timedelta(minutes=5),
                        retry_policy=_RETRY,
                        summary=f"Capture role {role_name}: policies, trust policy, profiles",
                    ),
                )
            )
        if (
            credential.kind is CredentialKind.IAM_USER_KEY
            and principal.user_name
            and workflow.patched(USER_KEY_PATCH)
        ):
            user_name = principal.user_name
            collected.user = await self._attempt(
                "capture the user's IAM state",
                lambda: workflow.execute_activity_method(
                    IamActivities.capture_user_state,
                    CaptureUserInput(case_id=case_id, user_name=user_name),
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=_RETRY,
                    summary=f"Capture user {user_name}: keys, policies, groups, console access",
                ),
            )
            self._record_evidence(collected.user.evidence)
            for policy in collected.user.quarantine_policies:
                self._note(f"AWS quarantined the key with {policy}; it stays attached")
        if principal.instance_id:
            instance_id = principal.instance_id
            instance = await self._attempt(
                "capture the instance",
                lambda: workflow.execute_activity_method(
                    Ec2Activities.capture_instance_state,
                    CaptureInstanceInput(case_id=case_id, instance_id=instance_id),
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=_RETRY,
                    summary=f"Capture instance {instance_id}",
                ),
            )
            self._record_evidence(instance.evidence)
            snapshots = await self._attempt(
                "snapshot the instance's volumes",
                lambda: workflow.execute_activity_method(
                    Ec2Activities.snapshot_volumes,
                    SnapshotVolumesInput(
                        case_id=case_id, instance_id=instance_id, volume_ids=instance.volume_ids
                    ),
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=timedelta(minutes=2),
                    retry_policy=_RETRY,
                    summary=f"Snapshot the EBS volumes of {instance_id} before the stop",
                ),
            )
            self._record_evidence(snapshots.evidence)
            collected.instance_running = instance.state == "running"
        window_end = workflow.now()
        window_start = min(finding.first_seen, window_end) - EVIDENCE_LOOKBACK
        trail = await self._attempt(
            "capture the CloudTrail slice",
            lambda: workflow.execute_activity_method(
                CloudTrailActivities.capture_cloudtrail_slice,
                CloudTrailSliceInput(
                    case_id=case_id,
                    account_id=finding.account_id,
                    access_key_id=credential.access_key_id,
                    start=window_start,
                    end=window_end,
                ),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"CloudTrail records of {credential.access_key_id}",
            ),
        )
        self._record_evidence(trail.evidence)
        self._note(f"{trail.event_count} CloudTrail records of {credential.access_key_id}")
        if workflow.patched(TRAILS_PATCH):
            trails = await self._attempt(
                "capture the account's trails",
                lambda: workflow.execute_activity_method(
                    RecoveryActivities.capture_trails,
                    CaptureTrailsInput(case_id=case_id),
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=_RETRY,
                    summary="Capture every trail's settings, status and event selectors",
                ),
            )
            self._record_evidence(trails.evidence)
            self._status.trails_found_stopped = trails.not_logging
            for name in trails.not_logging:
                self._note(f"trail {name} was not logging when the case opened")
        return collected

    # -- containment: EC2 instance role ----------------------------------------------------

    async def _contain_instance_role(
        self, credential: Credential, instance_running: bool
    ) -> str | None:
        """Playbook 2.2 for an instance role: revoke older sessions, stop+start, verify."""
        principal = credential.principal
        role_name = principal.role_name or ""
        instance_id = principal.instance_id or ""
        steps = [
            f"Deny all sessions of role {role_name} issued before the approval "
            f"(inline policy {names.REVOKE_SESSIONS_POLICY_NAME} on aws:TokenIssueTime)",
            f"Stop instance {instance_id} and start it again so it receives new credentials",
            f"Verify through SSM and the instance metadata that the key is no longer "
            f"{credential.access_key_id}",
        ]
        if not instance_running:
            steps[1] = f"Instance {instance_id} is not running: it gets new credentials at start"
        action = self._propose(
            ActionKind.CONTAIN_INSTANCE_ROLE,
            f"Contain {credential.access_key_id}: revoke sessions of {role_name}, "
            f"rotate {instance_id}",
            steps,
        )
        if not await self._containment_approved(action):
            return None
        await self._apply_instance_role_containment(action, credential, instance_running)
        return "contained"

    async def _containment_approved(self, action: Action) -> bool:
        """Wait for the decision on a containment; a rejection closes the case. Once it is
        approved, logging starts again first on trails found stopped (one of its steps)."""
        approval = await self._await_decision(action)
        if approval.decision is Decision.REJECTED:
            self._finish_action(action, ActionStatus.REJECTED, approval.reason)
            self._close(f"containment rejected by {approval.approver}: {approval.reason}")
            return False
        self._set_phase(Phase.CONTAINMENT, f"approved by {approval.approver}")
        trails = self._stopped_trails()
        if trails:
            await self._start_trails_logging(trails)
        return True

    def _stopped_trails(self) -> list[str]:
        """Trails found stopped when the case opened that containment has not started."""
        stopped = [
            t for t in self._status.trails_found_stopped if t not in self._status.trails_restarted
        ]
        if not stopped or not workflow.patched(LOGGING_PATCH):
            return []
        return stopped

    async def _start_trails_logging(self, trails: list[str]) -> None:
        """Logging on again before the credential is contained, so the watch that follows
        reads complete files from its first second."""
        result = await self._attempt(
            "start logging on the trails found stopped",
            lambda: workflow.execute_activity_method(
                RecoveryActivities.start_trails_logging,
                StartTrailsLoggingInput(trail_names=trails),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Start logging on {', '.join(trails)} before the watch",
            ),
        )
        now = workflow.now()
        for name in result.started:
            self._status.trails_restarted[name] = now
            self._note(f"trail {name} is logging again, so the containment watch can see")
        for name in result.already_logging:
            self._note(f"trail {name} was logging again already: someone else started it")
        for name in result.missing:
            self._note(f"trail {name} no longer exists: recovery recreates it from evidence")

    async def _apply_instance_role_containment(
        self, action: Action, credential: Credential, instance_running: bool
    ) -> None:
        principal = credential.principal
        role_name = principal.role_name or ""
        instance_id = principal.instance_id or ""
        await self._revoke_role_sessions(role_name, self._start_action(action))
        while True:
            if not instance_running:
                self._note(f"instance {instance_id} was not running; no stop+start needed")
                self._finish_action(action, ActionStatus.DONE, "sessions revoked")
                self._set_phase(Phase.CONTAINED, "role sessions revoked")
                return
            await self._rotate_instance(instance_id)
            self._set_phase(Phase.VERIFICATION, "reading the instance's credentials over SSM")
            probe = await self._attempt(
                "verify the instance's new credentials",
                lambda: workflow.execute_activity_method(
                    SsmActivities.probe_instance_credentials,
                    ProbeInstanceCredentialsInput(instance_id=instance_id, role_name=role_name),
                    start_to_close_timeout=timedelta(minutes=3),
                    heartbeat_timeout=timedelta(minutes=1),
                    retry_policy=_PROBE_RETRY,
                    summary=f"Read {role_name}'s credentials from {instance_id}'s metadata",
                ),
            )
            if probe.access_key_id != credential.access_key_id:
                self._status.verified_access_key_id = probe.access_key_id
                self._note(
                    f"instance {instance_id} now holds {probe.access_key_id}, "
                    f"not {credential.access_key_id}: rotation verified"
                )
                self._finish_action(action, ActionStatus.DONE, "sessions revoked, key rotated")
                self._set_phase(Phase.CONTAINED, "credential rotated and verified")
                return
            self._set_phase(
                Phase.CONTAINMENT_FAILED,
                f"instance {instance_id} still holds {credential.access_key_id}",
            )
            retry = self._propose(
                ActionKind.RETRY,
                f"Stop and start {instance_id} again, then verify the key changed",
                [f"The metadata service still serves {credential.access_key_id} after stop+start"],
            )
            decision = await self._await_decision(retry)
            if decision.decision is Decision.REJECTED:
                self._finish_action(retry, ActionStatus.REJECTED, decision.reason)
                self._finish_action(action, ActionStatus.FAILED, "rotation not verified")
                raise CaseAbandoned(
                    f"rotation not verified; {decision.approver} takes over: {decision.reason}"
                )
            self._finish_action(retry, ActionStatus.DONE, "retrying")
            self._set_phase(Phase.CONTAINMENT, f"retry approved by {decision.approver}")

    async def _revoke_role_sessions(
        self, role_name: str, cutoff: datetime, record_cutoff: bool = True
    ) -> None:
        """Deny the role's sessions issued before `cutoff`; the case's own containment
        records the cut-off in effect (a minted session's does not replace it)."""
        revoked = await self._attempt(
            "revoke the role's sessions",
            lambda: workflow.execute_activity_method(
                IamActivities.revoke_role_sessions,
                RevokeRoleSessionsInput(role_name=role_name, cutoff=cutoff),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Revoke sessions of {role_name} issued before {cutoff.isoformat()}",
            ),
        )
        if record_cutoff:
            self._status.containment_cutoff = revoked.cutoff_in_effect
        self._note(
            f"sessions of {role_name} issued before {revoked.cutoff_in_effect.isoformat()} "
            f"are denied" + ("" if revoked.changed else " (policy was already in place)")
        )

    async def _rotate_instance(self, instance_id: str) -> None:
        request = InstanceInput(instance_id=instance_id)
        await self._attempt(
            "stop the instance",
            lambda: workflow.execute_activity_method(
                Ec2Activities.stop_instance,
                request,
                start_to_close_timeout=timedelta(minutes=15),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=_RETRY,
                summary=f"Stop {instance_id} (a reboot would keep the old credentials)",
            ),
        )
        self._note(f"instance {instance_id} stopped")
        await self._attempt(
            "start the instance",
            lambda: workflow.execute_activity_method(
                Ec2Activities.start_instance,
                request,
                start_to_close_timeout=timedelta(minutes=15),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=_RETRY,
                summary=f"Start {instance_id} so it receives new role credentials",
            ),
        )
        self._note(f"instance {instance_id} started")

    # -- containment: a role session not from an instance ---------------------------------

    async def _contain_role_session(self, credential: Credential) -> str | None:
        """Playbook 2.2, option A, for a session of a role assumed by a user, a federated
        identity or another account; who may assume the role is recorded and flagged."""
        role_name = credential.principal.role_name or ""
        account_id = self._status.account_id
        trust = await self._attempt(
            "read the role's trust policy",
            lambda: workflow.execute_activity_method(
                IamActivities.list_role_trust,
                RoleTrustInput(role_name=role_name, account_id=account_id),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Who may assume {role_name}",
            ),
        )
        trusted = [f"{p.kind} {p.value}" for p in trust.principals]
        flagged = [f"{p.kind} {p.value}" for p in trust.principals if p.outside_account]
        self._note(f"{role_name} may be assumed by: {', '.join(trusted) or 'nobody'}")
        steps = [
            f"Deny all sessions of role {role_name} issued before the approval (inline policy "
            f"{names.REVOKE_SESSIONS_POLICY_NAME}); its legitimate users must assume it again",
        ]
        if flagged:
            self._note(f"flagged: {role_name} trusts principals outside the account: {flagged}")
            steps.append(
                f"Review the trust policy: it lets {', '.join(flagged)} assume the role, a way "
                "back in for the attacker (playbook 2.2, option B)"
            )
        action = self._propose(
            ActionKind.CONTAIN_ROLE_SESSION,
            f"Contain {credential.access_key_id}: revoke sessions of {role_name}",
            steps,
        )
        if not await self._containment_approved(action):
            return None
        await self._apply_role_session_containment(action, credential)
        return "contained"

    async def _apply_role_session_containment(self, action: Action, credential: Credential) -> None:
        role_name = credential.principal.role_name or ""
        await self._revoke_role_sessions(role_name, self._start_action(action))
        self._finish_action(action, ActionStatus.DONE, "sessions revoked")
        self._set_phase(Phase.CONTAINED, f"sessions of {role_name} revoked")

    # -- containment: long-term user key ------------------------------------------------

    async def _contain_user_key(
        self, credential: Credential, user: CaptureUserResult
    ) -> str | None:
        """Playbook 2.1: deactivate the key (never delete it: it is evidence), deny the
        user's tokens issued before the approval, then, approved separately, remove
        console access."""
        user_name = credential.principal.user_name or ""
        action = self._propose(
            ActionKind.CONTAIN_USER_KEY,
            f"Contain {credential.access_key_id}: deactivate it, deny {user_name}'s older tokens",
            [
                f"Deactivate access key {credential.access_key_id} of {user_name} (kept as "
                "evidence, not deleted)",
                f"Deny {user_name}'s session tokens issued before the approval (inline policy "
                f"{names.REVOKE_USER_TOKENS_POLICY_NAME} on aws:TokenIssueTime): sessions from "
                "GetSessionToken or GetFederationToken outlive the key",
            ],
        )
        if not await self._containment_approved(action):
            return None
        await self._apply_user_key_containment(action, credential)
        if user.has_login_profile:
            console = self._propose(
                ActionKind.REMOVE_CONSOLE_ACCESS,
                f"Remove console access of {user_name}",
                [f"Delete the login profile of {user_name}: its password may be known too"],
            )
            decision = await self._await_decision(console)
            if decision.decision is Decision.APPROVED:
                self._start_action(console)
                removed = await self._attempt(
                    "remove console access",
                    lambda: workflow.execute_activity_method(
                        IamActivities.remove_login_profile,
                        UserInput(user_name=user_name),
                        start_to_close_timeout=timedelta(minutes=2),
                        retry_policy=_RETRY,
                        summary=f"Delete the login profile of {user_name}",
                    ),
                )
                self._finish_action(console, ActionStatus.DONE, removed.detail)
            else:
                self._finish_action(console, ActionStatus.REJECTED, decision.reason)
            self._set_phase(Phase.CONTAINED, "key deactivated")
        return "contained"

    async def _apply_user_key_containment(self, action: Action, credential: Credential) -> None:
        user_name = credential.principal.user_name or ""
        cutoff = self._start_action(action)
        key = await self._attempt(
            "deactivate the access key",
            lambda: workflow.execute_activity_method(
                IamActivities.deactivate_access_key,
                AccessKeyInput(user_name=user_name, access_key_id=credential.access_key_id),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Deactivate {credential.access_key_id}",
            ),
        )
        denied = await self._attempt(
            "deny the user's older tokens",
            lambda: workflow.execute_activity_method(
                IamActivities.deny_user_tokens_before,
                DenyUserTokensInput(user_name=user_name, cutoff=cutoff),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Deny {user_name}'s tokens issued before {cutoff.isoformat()}",
            ),
        )
        self._status.containment_cutoff = denied.cutoff_in_effect
        self._note(
            f"{credential.access_key_id} is {key.status}"
            + ("" if key.changed else " (it already was)")
            + f"; {user_name}'s tokens issued before {denied.cutoff_in_effect.isoformat()} "
            "are denied"
        )
        self._finish_action(action, ActionStatus.DONE, "key deactivated, older tokens denied")
        self._set_phase(Phase.CONTAINED, "key deactivated")

    # -- containment by a human -----------------------------------------------------------

    async def _hand_to_human(self, credential: Credential) -> str | None:
        """Credentials Quench does not contain itself go to a human with a checklist."""
        principal = credential.principal
        self._set_phase(Phase.NEEDS_HUMAN, f"{credential.kind.value} is contained by a human")
        action = self._propose(
            ActionKind.MANUAL_CONTAINMENT,
            f"Contain {credential.access_key_id} ({principal.type.value}) by hand, then approve",
            [
                "Review the evidence stored with this case",
                f"Disable {credential.access_key_id} (update-access-key --status Inactive) or "
                "revoke the sessions of the role behind it",
                "Check CloudTrail for activity after containment",
                "Approve this action when done, or reject it to close the case as not contained",
            ],
        )
        approval = await self._await_decision(action)
        if approval.decision is Decision.APPROVED:
            self._finish_action(action, ActionStatus.DONE, f"contained by {approval.approver}")
            self._set_phase(Phase.CONTAINED, f"{approval.approver}: {approval.reason}")
            return "contained by a human"
        self._finish_action(action, ActionStatus.REJECTED, approval.reason)
        self._close(f"not contained: {approval.approver}: {approval.reason}")
        return None

    # -- eradication (playbook 3) ----------------------------------------------------------

    async def _plan_eradication(self, credential: Credential, outcome: str) -> None:
        """Playbook 3, in rounds, then the case closes with `outcome`."""
        first_seen = min(f.first_seen for f in self._status.findings)
        compromise_time = first_seen - timedelta(seconds=self._policy.compromise_margin_seconds)
        progress = EradicationProgress(
            compromise_time=compromise_time,
            pending=[credential.access_key_id],
            investigated=[credential.access_key_id],
            rounds_done=0,
            outcome=outcome,
        )
        await self._eradication_rounds(progress)

    async def _eradication_rounds(self, progress: EradicationProgress) -> None:
        """What the credentials did since the likely compromise and the removal of what
        they made; every credential they minted is investigated in the next round, until
        a round finds nothing new (3.5). Continues as new every few rounds."""
        rounds_this_run = 0
        while True:
            capped = await self._rounds(progress, rounds_this_run)
            if capped or not await self._watch_minted(progress):
                break
            rounds_this_run = 0
        if workflow.patched(RECOVERY_PATCH):
            await self._recover()
        self._close(progress.outcome)

    async def _rounds(self, progress: EradicationProgress, rounds_this_run: int) -> bool:
        """Rounds until one finds nothing new; True when the cap stopped them."""
        while progress.pending:
            if rounds_this_run >= self._policy.rounds_per_run or (
                rounds_this_run and workflow.info().is_continue_as_new_suggested()
            ):
                await self._background_done()
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    CaseInput(
                        case_id=self._status.case_id,
                        finding=self._finding,
                        policy=self._policy,
                        resume=CaseResume(
                            status=self._status, action_seq=self._action_seq, eradication=progress
                        ),
                    )
                )
            round_number = progress.rounds_done + 1
            plan = await self._eradication_round(
                round_number, progress.pending, progress.compromise_time
            )
            progress.rounds_done = round_number
            rounds_this_run += 1
            if not workflow.patched(ROUNDS_PATCH):
                break
            fresh = [
                c for c in plan.new_credentials if c.access_key_id not in progress.investigated
            ]
            progress.investigated += [c.access_key_id for c in fresh]
            contained = await self._contain_minted(plan, fresh)
            if contained:
                progress.contained += contained
                progress.contained_from = progress.contained_from or workflow.now()
            progress.pending = [c.access_key_id for c in fresh]
            if progress.pending and round_number >= self._policy.max_eradication_rounds:
                self._status.open_items.append(
                    f"eradication stopped after {round_number} rounds (the cap): investigate "
                    f"{', '.join(progress.pending)} by hand"
                )
                self._note(self._status.open_items[-1])
                return True
        self._note(f"eradication round {progress.rounds_done} found no new credential: done")
        return False

    async def _watch_minted(self, progress: EradicationProgress) -> bool:
        """The containment watch for the credentials the attacker minted, once the rounds
        have contained them (2.3). When one still works, a new round investigates it after
        approval: True when that round is to run."""
        if not workflow.patched(MINTED_WATCH_PATCH):
            return False
        keys = [k for k in progress.contained if k not in progress.watched]
        if not keys:
            return False
        progress.watched += keys
        failed = await self._watch(keys, since=progress.contained_from, minted=True)
        if failed is None:
            return False
        findings = explain_failure(failed, None)
        self._set_phase(Phase.CONTAINMENT_FAILED, findings[0])
        working = sorted({e.access_key_id for e in failed.events if not e.denied})
        minted = {
            c.access_key_id: c for plan in self._status.eradication for c in plan.new_credentials
        }
        credentials = [minted[k] for k in working if k in minted]
        action = self._propose(
            ActionKind.RECONTAIN,
            f"Contain {', '.join(working)} again: minted by the attacker, still working",
            [
                *findings,
                *(_recontain_minted_step(c) for c in credentials),
                "Then classify what they did since the compromise in a new eradication "
                "round, remove what they made after approval, and watch again",
            ],
        )
        decision = await self._await_decision(action)
        if decision.decision is Decision.REJECTED:
            self._finish_action(action, ActionStatus.REJECTED, decision.reason)
            self._status.open_items.append(
                f"minted credentials {', '.join(working)} still worked after containment "
                f"(declined by {decision.approver}: {decision.reason}): contain them by hand"
            )
            self._note(f"needs a human: {self._status.open_items[-1]}")
            return False
        self._set_phase(Phase.CONTAINMENT, f"{action.id} approved by {decision.approver}")
        cutoff = self._start_action(action)
        for credential in credentials:
            await self._recontain_minted(credential, cutoff)
        self._finish_action(action, ActionStatus.DONE, "contained again; investigating again")
        progress.pending = working
        progress.contained_from = cutoff
        progress.watched = [k for k in progress.watched if k not in working]
        return True

    async def _recontain_minted(self, credential: NewCredential, cutoff: datetime) -> None:
        if credential.kind == "role_session":
            role = credential.principal.rsplit("/", 1)[-1]
            await self._revoke_role_sessions(role, cutoff, record_cutoff=False)
        elif credential.kind == "access_key":
            request = AccessKeyInput(
                user_name=credential.principal, access_key_id=credential.access_key_id
            )
            await self._attempt(
                f"deactivate {credential.access_key_id}",
                lambda: workflow.execute_activity_method(
                    IamActivities.deactivate_access_key,
                    request,
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=_RETRY,
                    summary=f"Deactivate {credential.access_key_id} of {credential.principal}",
                ),
            )
            self._note(f"{credential.access_key_id} of {credential.principal} deactivated")
        else:
            self._status.open_items.append(
                f"contain {credential.kind} {credential.access_key_id} of "
                f"{credential.principal} by hand: it still worked after containment"
            )
            self._note(f"needs a human: {self._status.open_items[-1]}")

    async def _contain_minted(
        self, plan: EradicationPlan, minted: list[NewCredential]
    ) -> list[str]:
        """Each credential the attacker minted is contained before it is investigated: a
        key or session dies with the user or role this round removed; a federation token
        issued before the user's token cut-off is already denied; a session of a role
        that stays is revoked after approval. Anything else is listed for a human."""
        removed = {
            (s.resource.kind, s.resource.name)
            for s in plan.steps
            if s.outcome in {"removed", "already_gone"}
        }
        key_owners = {
            s.resource.name: s.resource.owner
            for s in plan.steps
            if s.resource.kind is ResourceKind.ACCESS_KEY
        }
        contained_user = self._contained_user()
        contained = []
        for credential in minted:
            if credential.kind == "access_key" and (ResourceKind.USER, credential.principal) in (
                removed
            ):
                self._note(
                    f"{credential.access_key_id} was deleted with its user "
                    f"{credential.principal}; its activity is investigated next"
                )
                contained.append(credential.access_key_id)
                continue
            if workflow.patched(MINTED_PATCH):
                if credential.kind == "role_session":
                    role = credential.principal.rsplit("/", 1)[-1]
                    if (ResourceKind.ROLE, role) in removed:
                        self._note(
                            f"session {credential.access_key_id} ended with role {role}, "
                            "removed this round; its activity is investigated next"
                        )
                        contained.append(credential.access_key_id)
                    elif await self._contain_minted_session(credential, role):
                        contained.append(credential.access_key_id)
                    continue
                if credential.kind == "federation_token":
                    owner = key_owners.get(credential.made_by) or contained_user
                    if (ResourceKind.USER, owner) in removed:
                        self._note(
                            f"federation token {credential.access_key_id} lost every permission "
                            f"with its user {owner}, removed this round"
                        )
                        contained.append(credential.access_key_id)
                        continue
                    if (
                        owner is not None
                        and owner == contained_user
                        and self._issued_before_cutoff(credential)
                    ):
                        self._note(
                            f"federation token {credential.access_key_id} of {owner} was issued "
                            f"before the cut-off: {names.REVOKE_USER_TOKENS_POLICY_NAME} denies it"
                        )
                        contained.append(credential.access_key_id)
                        continue
            self._status.open_items.append(
                f"contain {credential.kind} {credential.access_key_id} of "
                f"{credential.principal} (made by {credential.made_by})"
            )
            self._note(f"needs a human: {self._status.open_items[-1]}")
        return contained

    def _contained_user(self) -> str | None:
        """The IAM user whose older tokens the containment denied, if it was a user key."""
        credential = self._status.credential
        if credential is None or credential.kind is not CredentialKind.IAM_USER_KEY:
            return None
        return credential.principal.user_name

    def _issued_before_cutoff(self, credential: NewCredential) -> bool:
        cutoff = self._status.containment_cutoff
        if cutoff is None or not credential.event_time:
            return False
        issued = datetime.fromisoformat(credential.event_time.replace("Z", "+00:00"))
        return issued < cutoff

    async def _contain_minted_session(self, credential: NewCredential, role: str) -> bool:
        action = self._propose(
            ActionKind.CONTAIN_ROLE_SESSION,
            f"Contain {credential.access_key_id}, a session of {role} the attacker assumed",
            [
                f"Deny all sessions of role {role} issued before the approval (inline policy "
                f"{names.REVOKE_SESSIONS_POLICY_NAME}); its legitimate users must assume it "
                "again",
                f"Then investigate what {credential.access_key_id} did, in the next round",
            ],
        )
        decision = await self._await_decision(action)
        if decision.decision is Decision.REJECTED:
            self._finish_action(action, ActionStatus.REJECTED, decision.reason)
            self._status.open_items.append(
                f"contain role_session {credential.access_key_id} of {role} (declined by "
                f"{decision.approver}: {decision.reason})"
            )
            return False
        self._set_phase(Phase.ERADICATION, f"{action.id} approved by {decision.approver}")
        await self._revoke_role_sessions(role, self._start_action(action), record_cutoff=False)
        self._finish_action(action, ActionStatus.DONE, f"sessions of {role} revoked")
        return True

    async def _eradication_round(
        self, round_number: int, access_key_ids: list[str], compromise_time: datetime
    ) -> EradicationPlan:
        keys = ", ".join(access_key_ids)
        self._set_phase(
            Phase.ERADICATION,
            f"round {round_number}: classifying what {keys} did since "
            f"{compromise_time.isoformat()}",
        )
        request = ClassifyActivityInput(
            case_id=self._status.case_id,
            account_id=self._status.account_id,
            access_key_ids=access_key_ids,
            start=compromise_time,
            end=workflow.now(),
        )
        classified = await self._attempt(
            "classify the credentials' CloudTrail activity",
            lambda: workflow.execute_activity_method(
                CloudTrailActivities.classify_credential_activity,
                request,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Round {round_number}: everything {keys} did since the compromise",
            ),
        )
        self._record_evidence(classified.evidence)
        report = classified.report
        plan = EradicationPlan(
            round=round_number,
            compromise_time=compromise_time,
            access_key_ids=access_key_ids,
            impact=report.counts,
            impact_examples=report.examples,
            failed_calls=report.failed_calls,
            steps=removal_plan(report.resources, frozenset(self._policy.protected_names)),
            changes=report.changes,
            new_credentials=report.new_credentials,
            evidence_key=classified.evidence.key,
        )
        self._status.eradication.append(plan)
        self._note(
            f"round {round_number}: {sum(report.counts.values())} calls since the compromise: "
            + ", ".join(f"{g.value} {n}" for g, n in report.counts.items() if n)
            + f"; {len(plan.steps)} attacker resources to remove, {len(plan.changes)} changes "
            f"to restore, {len(plan.new_credentials)} new credentials"
        )
        self._refresh()
        if plan.steps and workflow.patched(PERMISSIONS_PATCH):
            await self._sort_out_permissions(plan)
        if plan.steps and workflow.patched(ERADICATE_PATCH):
            await self._remove_attacker_resources(plan)
        return plan

    async def _sort_out_permissions(self, plan: EradicationPlan) -> None:
        """A policy the attacker put on or attached to a user or role it did not make may
        have been there before: if so, a replaced inline policy is restored in recovery
        and a policy already attached stays; removing either would break what it serves.
        Where CloudTrail cannot say, the attacker's version is removed (and kept as
        evidence) and a human is asked to check."""
        made = self._attacker_made()
        candidates = [
            s.resource
            for s in plan.steps
            if s.resource.kind in POLICY_PARTS
            and not s.skipped_reason
            and (_owner_kind(s.resource.kind), s.resource.owner) not in made
        ]
        if not candidates:
            return
        request = FindPriorStateInput(
            account_id=self._status.account_id,
            resources=candidates,
            attacker_keys=self._attacker_keys(),
            lookback_seconds=self._policy.restore_lookback_seconds,
        )
        found = await self._attempt(
            "find what the attacker's policies replaced",
            lambda: workflow.execute_activity_method(
                RecoveryActivities.find_prior_state,
                request,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary=f"Round {plan.round}: were the attacker's policies there before?",
            ),
        )
        states = {state.resource.key: state for state in found.states}
        for step in plan.steps:
            state = states.get(step.resource.key)
            if state is None or state.state == "absent":
                continue
            resource = step.resource
            if state.state == "unknown":
                self._status.open_items.append(
                    f"{step.describe()}: {state.source}, so whether it replaced an earlier "
                    f"policy of {resource.owner} is unknown; it is removed (the attacker's "
                    "version is kept as evidence): check what "
                    f"{resource.owner} needs against your infrastructure code"
                )
                self._note(f"needs a human: {self._status.open_items[-1]}")
                continue
            change_kind = REPLACED_POLICY_CHANGE.get(resource.kind)
            if change_kind is None:
                step.skipped_reason = f"attached before the attacker's call ({state.source})"
            else:
                step.skipped_reason = (
                    f"replaced an earlier version ({state.source}): restored in recovery"
                )
                plan.changes.append(
                    AttackerChange(
                        kind=change_kind,
                        target=resource.owner or "",
                        detail=resource.name,
                        made_by=resource.made_by,
                        event_id=resource.event_id,
                        event_time=resource.event_time,
                    )
                )
            step.outcome, step.detail = "kept", step.skipped_reason
            self._note(f"{step.describe()}")
        self._refresh()

    def _attacker_made(self) -> set[tuple[ResourceKind, str | None]]:
        """The users, roles and managed policies the attacker's credentials made."""
        return {
            (s.resource.kind, s.resource.name)
            for plan in self._status.eradication
            for s in plan.steps
            if s.resource.kind
            in {ResourceKind.USER, ResourceKind.ROLE, ResourceKind.MANAGED_POLICY}
        }

    def _attacker_keys(self) -> list[str]:
        """Every credential of the attacker's the case knows of."""
        keys = {k for plan in self._status.eradication for k in plan.access_key_ids}
        keys |= {c.access_key_id for plan in self._status.eradication for c in plan.new_credentials}
        return sorted(keys)

    async def _remove_attacker_resources(self, plan: EradicationPlan) -> None:
        """After approval, every step of the plan in order, each one recorded."""
        to_remove = [step for step in plan.steps if step.outcome != "kept"]
        if not to_remove:
            return
        action = self._propose(
            ActionKind.ERADICATE,
            f"Round {plan.round}: remove {len(to_remove)} resources the attacker made",
            [step.describe() for step in plan.steps],
        )
        decision = await self._await_decision(action)
        if decision.decision is Decision.REJECTED:
            self._finish_action(action, ActionStatus.REJECTED, decision.reason)
            self._note(f"eradication declined by {decision.approver}: the plan stays for humans")
            return
        self._set_phase(Phase.ERADICATION, f"removal approved by {decision.approver}")
        self._start_action(action)
        await self._capture_before_removal(plan)
        for step in plan.steps:
            if step.outcome == "kept":
                continue
            request = RemoveResourceInput(
                case_id=self._status.case_id,
                operation=step.operation,
                name=step.resource.name,
                owner=step.resource.owner,
                protected_names=self._policy.protected_names,
            )
            summary = f"Eradicate: {step.describe()}"
            result = await self._attempt(
                step.describe(),
                lambda request=request, summary=summary: workflow.execute_activity_method(  # type: ignore[misc]
                    EradicationActivities.remove_resource,
                    request,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=_RETRY,
                    summary=summary,
                ),
            )
            step.outcome, step.detail = result.outcome, result.detail
            if result.evidence is not None:
                self._record_evidence(result.evidence)
            self._note(f"{step.describe()}: {result.outcome} ({result.detail})")
            self._refresh()
        outcomes = Counter(step.outcome for step in plan.steps)
        self._finish_action(
            action, ActionStatus.DONE, ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        )

    async def _capture_before_removal(self, plan: EradicationPlan) -> None:
        """Evidence of every user and role the plan deletes, whole, before the first
        removal takes any part of it away."""
        case_id = self._status.case_id
        for step in plan.steps:
            if step.skipped_reason:
                continue
            name = step.resource.name
            if step.resource.kind is ResourceKind.USER:
                user = await self._attempt(
                    f"capture user {name} before its removal",
                    lambda name=name: workflow.execute_activity_method(  # type: ignore[misc]
                        IamActivities.capture_user_state,
                        CaptureUserInput(case_id=case_id, user_name=name),
                        start_to_close_timeout=timedelta(minutes=5),
                        retry_policy=_RETRY,
                        summary=f"Capture user {name} before its removal",
                    ),
                )
                self._record_evidence(user.evidence)
            elif step.resource.kind is ResourceKind.ROLE:
                role = await self._attempt(
                    f"capture role {name} before its removal",
                    lambda name=name: workflow.execute_activity_method(  # type: ignore[misc]
                        IamActivities.capture_role_state,
                        CaptureRoleInput(case_id=case_id, role_name=name),
                        start_to_close_timeout=timedelta(minutes=5),
                        retry_policy=_RETRY,
                        summary=f"Capture role {name} before its removal",
                    ),
                )
                self._record_evidence(role)

    # -- recovery (playbook 4) and the report (playbook 5) ---------------------------------

    async def _recover(self) -> None:
        """Undo, after approval, what the attacker changed in things it did not make; what
        Quench cannot restore itself goes to the open items with what a human must do."""
        changes = [c for plan in self._status.eradication for c in plan.changes]
        explained = {
            trail_name(c.target)
            for c in changes
            if c.kind in {ChangeKind.LOGGING_STOPPED, ChangeKind.TRAIL_DELETED}
        }
        for name in self._status.trails_found_stopped:
            if name not in explained:
                self._status.open_items.append(
                    f"trail {name} was not logging when the case opened, and not by the "
                    "attacker's credentials: find out who stopped it and when"
                    + (
                        " (containment started it again)"
                        if name in self._status.trails_restarted
                        else ", and start it"
                    )
                )
                self._note(f"needs a human: {self._status.open_items[-1]}")
        attacker_keys: list[str] = []
        if workflow.patched(PERMISSIONS_PATCH):
            changes = self._changes_to_undo(changes)
            attacker_keys = self._attacker_keys()
        if not changes:
            return
        self._set_phase(Phase.RECOVERY, f"planning how to undo {len(changes)} changes")
        request = PlanRecoveryInput(
            case_id=self._status.case_id,
            account_id=self._status.account_id,
            changes=changes,
            trail_evidence=next(
                (e for e in self._status.evidence if e.name == TRAILS_EVIDENCE_NAME), None
            ),
            lookback_seconds=self._policy.restore_lookback_seconds,
            attacker_keys=attacker_keys,
        )
        planned = await self._attempt(
            "plan the recovery",
            lambda: workflow.execute_activity_method(
                RecoveryActivities.plan_recovery,
                request,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=_RETRY,
                summary="Recovery: how each change is undone, from evidence and CloudTrail",
            ),
        )
        steps = planned.steps
        self._status.recovery = steps
        for step in steps:
            if step.manual:
                self._status.open_items.append(step.manual)
                self._note(f"needs a human: {step.manual}")
        automatic = [s for s in steps if s.operation is not None]
        if automatic:
            await self._restore(automatic)
        for step in steps:
            if step.change.kind is ChangeKind.LOGGING_STOPPED:
                self._record_logging_gap(step.change, step)
        self._refresh()

    def _changes_to_undo(self, changes: list[AttackerChange]) -> list[AttackerChange]:
        """Changes to things the attacker did not make: a change to its own user, role or
        policy went with it, and detaching a policy it had attached itself undid its own
        work."""
        made = self._attacker_made()
        own_attachments = {
            (_owner_kind(s.resource.kind), s.resource.owner, s.resource.name)
            for plan in self._status.eradication
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
        action = self._propose(
            ActionKind.RECOVER,
            f"Restore {len(steps)} things the attacker changed",
            [s.description + (f" (from {s.source})" if s.source else "") for s in steps],
        )
        decision = await self._await_decision(action)
        if decision.decision is Decision.REJECTED:
            self._finish_action(action, ActionStatus.REJECTED, decision.reason)
            for step in steps:
                step.outcome = "declined"
                self._status.open_items.append(f"restore by hand: {step.description}")
            return
        self._set_phase(Phase.RECOVERY, f"restore approved by {decision.approver}")
        self._start_action(action)
        for step in steps:
            request = RestoreChangeInput(case_id=self._status.case_id, step=step)
            result = await self._attempt(
                step.description,
                lambda request=request: workflow.execute_activity_method(  # type: ignore[misc]
                    RecoveryActivities.restore_change,
                    request,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=_RETRY,
                    summary=f"Recover: {request.step.description}"[:200],
                ),
            )
            step.outcome, step.detail, step.done_at = result.outcome, result.detail, workflow.now()
            if result.evidence is not None:
                self._record_evidence(result.evidence)
            self._note(f"{step.description}: {result.detail}")
            self._refresh()
        outcomes = Counter(step.outcome for step in steps)
        self._finish_action(
            action, ActionStatus.DONE, ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        )

    def _record_logging_gap(self, change: AttackerChange, step: RecoveryStep) -> None:
        restarted = self._status.trails_restarted.get(trail_name(change.target))
        if restarted is None and step.outcome in {"restored", "already_restored"}:
            restarted = step.done_at
        gap = LoggingGap(
            trail=change.target,
            stopped_at=datetime.fromisoformat(change.event_time.replace("Z", "+00:00")),
            stopped_by=change.made_by,
            restarted_at=restarted,
        )
        self._status.logging_gaps.append(gap)
        self._note(
            f"logging gap on {gap.trail} from {gap.stopped_at.isoformat()} to "
            f"{restarted.isoformat() if restarted else 'now (not restarted)'}: no CloudTrail "
            "record of that time exists"
        )

    async def _write_report(self) -> None:
        """The post-incident report, JSON and Markdown, to the evidence bucket."""
        try:
            written = await self._attempt(
                "write the post-incident report",
                lambda: workflow.execute_activity_method(
                    EvidenceActivities.write_report,
                    WriteReportInput(status=self._status, written_at=workflow.now()),
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=_RETRY,
                    summary="Write the post-incident report",
                ),
            )
        except CaseAbandoned as abandoned:
            self._note(f"no post-incident report: {abandoned}")
            return
        self._status.report = CaseReportRef(
            json_report=written.json_report, markdown_report=written.markdown_report
        )
        self._note(
            f"post-incident report {written.markdown_report.uri} "
            f"sha256={written.markdown_report.sha256}"
        )
        self._refresh()

    # -- the containment watch (playbook 2.3) ---------------------------------------------

    async def _watch_until_clean(self, credential: Credential, evidence: "_Evidence") -> None:
        """Watch CloudTrail until a whole window is clean; when the contained credential
        still works, say how, propose containing it again, and watch again."""
        while True:
            failed = await self._watch([credential.access_key_id])
            if failed is None:
                return
            findings = explain_failure(failed, self._status.containment_cutoff)
            self._set_phase(Phase.CONTAINMENT_FAILED, findings[0])
            for line in findings[1:]:
                self._note(line)
            action = self._propose(
                ActionKind.RECONTAIN,
                f"Contain {credential.access_key_id} again, then watch again",
                findings + self._recontain_steps(credential),
            )
            decision = await self._await_decision(action)
            if decision.decision is Decision.REJECTED:
                self._finish_action(action, ActionStatus.REJECTED, decision.reason)
                raise CaseAbandoned(
                    f"containment failed; {decision.approver} takes over: {decision.reason}"
                )
            self._set_phase(Phase.CONTAINMENT, f"approved by {decision.approver}")
            if credential.kind is CredentialKind.INSTANCE_ROLE_SESSION:
                await self._apply_instance_role_containment(
                    action, credential, evidence.instance_running
                )
            elif evidence.user is not None:
                await self._apply_user_key_containment(action, credential)
            elif credential.kind is CredentialKind.ROLE_SESSION:
                await self._apply_role_session_containment(action, credential)
            else:
                self._finish_action(action, ActionStatus.DONE, f"by {decision.approver}")
                self._set_phase(Phase.CONTAINED, f"{decision.approver}: {decision.reason}")

    def _recontain_steps(self, credential: Credential) -> list[str]:
        if credential.kind is CredentialKind.INSTANCE_ROLE_SESSION:
            return [
                "Revoke the role's sessions again with a new cut-off, stop+start the instance "
                "and verify; review the role's trust policy if new sessions appear"
            ]
        if credential.kind is CredentialKind.IAM_USER_KEY:
            return ["Deactivate the key again and deny the user's tokens with a new cut-off"]
        if credential.kind is CredentialKind.ROLE_SESSION:
            return ["Revoke the role's sessions again with a new cut-off; fix its trust policy"]
        return ["Contain the credential by hand, then approve"]

    async def _watch(
        self, access_key_ids: list[str], since: datetime | None = None, minted: bool = False
    ) -> CheckActivityResult | None:
        """One watch: durable timers between CloudTrail checks. Returns the calls that
        worked after containment (at `since`, or now), or None once the window is clean."""
        policy = self._policy
        start = since or workflow.now()
        window_end = workflow.now() + timedelta(seconds=policy.watch_seconds)
        clean_at = window_end + timedelta(seconds=policy.delivery_lag_seconds)
        watch = WatchStatus(access_key_ids=access_key_ids, start=start, clean_at=clean_at)
        if minted:
            self._status.minted_watches.append(watch)
        else:
            self._status.watch = watch
        self._set_phase(
            Phase.WATCHING,
            f"watching CloudTrail for {', '.join(access_key_ids)} until "
            f"{window_end.isoformat()}; clean no earlier than {clean_at.isoformat()}, when "
            "its logs can be expected",
        )
        while True:
            wait = min(timedelta(seconds=policy.check_every_seconds), clean_at - workflow.now())
            if wait > timedelta(0):
                await workflow.sleep(wait, summary="Containment watch: until the next check")
            now = workflow.now()
            check = CheckActivityInput(
                account_id=self._status.account_id,
                access_key_ids=access_key_ids,
                start=start,
                end=min(now, window_end),
            )
            result = await self._attempt(
                "check CloudTrail for the contained credentials",
                lambda check=check: workflow.execute_activity_method(  # type: ignore[misc]
                    CloudTrailActivities.check_credential_activity,
                    check,
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=timedelta(minutes=2),
                    retry_policy=_RETRY,
                    summary=f"CloudTrail calls of {', '.join(access_key_ids)} since containment",
                ),
            )
            if result.denied_count > watch.denied_attempts:
                sources = sorted({e.source_ip for e in result.events if e.denied})
                self._note(
                    f"{result.denied_count} denied attempts since containment, from "
                    f"{', '.join(sources)}: the attacker is still trying, and is stopped"
                )
            for trail in result.not_logging:
                if trail not in watch.blind_trails:
                    watch.blind_trails.append(trail)
                    self._note(
                        f"trail {trail} is not logging: the watch cannot see a call made while "
                        "it is off"
                    )
            watch.checks += 1
            watch.last_checked_at = now
            watch.denied_attempts = result.denied_count
            watch.effective_calls = result.effective_count
            if result.effective_count:
                watch.verdict = "failed"
                return result
            if now >= clean_at:
                watch.verdict = "clean"
                self._note(
                    f"no call of {', '.join(access_key_ids)} worked from {start.isoformat()} "
                    f"to {window_end.isoformat()}: containment holds"
                )
                if watch.blind_trails:
                    self._status.open_items.append(
                        f"the containment watch of {', '.join(access_key_ids)} read CloudTrail "
                        f"while trail {', '.join(watch.blind_trails)} was not logging: a call "
                        "made then is in none of its files. Check CloudTrail event history "
                        f"(LookupEvents) for their calls since {start.isoformat()}"
                    )
                self._refresh()
                return None
            self._refresh()

    # -- helpers -----------------------------------------------------------------------

    @property
    def _finding(self) -> Finding:
        return self._status.findings[0]

    async def _attempt(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run an activity; if it fails for good, ask a human whether to try again."""
        while True:
            try:
                return await call()
            except ActivityError as err:
                cause = err.cause
                detail = str(cause.message if isinstance(cause, ApplicationError) else err)
            previous = self._status.phase
            self._set_phase(Phase.NEEDS_HUMAN, f"failed to {doing}: {detail}")
            retry = self._propose(ActionKind.RETRY, f"Retry: {doing}", [f"It failed: {detail}"])
            decision = await self._await_decision(retry)
            if decision.decision is Decision.REJECTED:
                self._finish_action(retry, ActionStatus.REJECTED, decision.reason)
                raise CaseAbandoned(f"gave up after failing to {doing}: {decision.reason}")
            self._finish_action(retry, ActionStatus.DONE, "retrying")
            self._set_phase(previous, f"retry approved by {decision.approver}")

    def _propose(self, kind: ActionKind, title: str, steps: list[str]) -> Action:
        if kind in _CONTAINMENT_KINDS:
            steps = [
                f"Start logging on trail {trail}: it was not logging when the case opened, "
                "and the containment watch reads its files"
                for trail in self._stopped_trails()
            ] + steps
        self._action_seq += 1
        action = Action(
            id=f"{kind.value}-{self._action_seq}",
            kind=kind,
            title=title,
            steps=steps,
            status=ActionStatus.PENDING_APPROVAL,
            requested_at=workflow.now(),
            approvals_needed=2 if kind in self._policy.two_person else 1,
        )
        self._status.actions.append(action)
        if self._status.phase not in (Phase.NEEDS_HUMAN, Phase.CONTAINMENT_FAILED):
            self._set_phase(Phase.AWAITING_APPROVAL, f"waiting for approval of {action.id}")
        else:
            self._refresh()
        return action

    async def _await_decision(self, action: Action) -> Approval:
        if workflow.patched(DEADLINE_PATCH):
            await self._await_with_deadline(action)
        else:
            await workflow.wait_condition(lambda: action.approval is not None)
        assert action.approval is not None
        self._refresh()
        return action.approval

    async def _await_with_deadline(self, action: Action) -> None:
        """Tell people the action waits for them; each time its deadline passes with
        nobody deciding, escalate, or, for containment the policy lets go ahead, proceed
        and record that the case did."""
        if action.kind in self._policy.without_approval:
            self._approve_by_policy(
                action, f"the case policy runs {action.kind.value} actions without approval"
            )
            return
        wait = timedelta(seconds=self._policy.deadline_of(action.kind))
        action.deadline = workflow.now() + wait
        self._refresh()
        self._notify_soon(
            NotificationKind.NEEDS_HUMAN,
            f"{action.id} waits for approval on {self._status.case_id}",
            self._approval_request(action),
        )
        while action.approval is None:
            try:
                await workflow.wait_condition(
                    lambda: action.approval is not None,
                    timeout=max(action.deadline - workflow.now(), timedelta(seconds=1)),
                    timeout_summary=f"Approval deadline of {action.id}",
                )
            except TimeoutError:
                if self._may_proceed(action):
                    self._proceed_without_decision(action, wait)
                else:
                    self._escalate(action, wait)

    def _severity(self) -> float:
        return max(f.severity for f in self._status.findings)

    def _may_proceed(self, action: Action) -> bool:
        threshold = self._policy.auto_contain_min_severity
        return (
            threshold is not None
            and action.kind in CONTAINMENT_KINDS
            and self._severity() >= threshold
        )

    def _proceed_without_decision(self, action: Action, wait: timedelta) -> None:
        severity = self._severity()
        reason = (
            f"nobody decided within {_duration(wait)}; the policy lets containment of "
            f"findings of severity {self._policy.auto_contain_min_severity} or more proceed "
            f"(this case: {severity})"
        )
        self._approve_by_policy(action, reason)
        self._notify_soon(
            NotificationKind.PROCEEDED,
            f"{action.id} proceeds without a decision on {self._status.case_id}",
            f"{action.title}\n{reason}.\nThe case records the decision as taken by "
            f"{names.AUTO_APPROVER}.",
        )

    def _approve_by_policy(self, action: Action, reason: str) -> None:
        """An approval nobody gave: the case's policy let the action go ahead."""
        self._settle(
            action,
            Approval(
                action_id=action.id,
                decision=Decision.APPROVED,
                approver=names.AUTO_APPROVER,
                reason=reason,
                decided_at=workflow.now(),
                automatic=True,
            ),
        )

    def _escalate(self, action: Action, wait: timedelta) -> None:
        action.escalations += 1
        action.deadline = (action.deadline or workflow.now()) + wait
        waited = _duration(workflow.now() - action.requested_at)
        self._note(f"{action.id} escalated (time {action.escalations}): nobody decided in {waited}")
        workflow.upsert_search_attributes(
            [names.SA_ESCALATIONS.value_set(sum(a.escalations for a in self._status.actions))]
        )
        self._refresh()
        self._notify_soon(
            NotificationKind.ESCALATED,
            f"ESCALATED: {action.id} has waited {waited} on {self._status.case_id}",
            f"Nobody has decided in {waited} (escalation {action.escalations}).\n\n"
            + self._approval_request(action),
        )

    def _approval_request(self, action: Action) -> str:
        """What the action would do and how to decide it, for a notification."""
        case_id = self._status.case_id
        credential = self._status.credential
        lines = [f"Case {case_id} ({self._status.phase.value}) waits for a decision."]
        if credential is not None:
            principal = credential.principal
            lines.append(
                f"Credential {credential.access_key_id} of "
                f"{principal.arn or principal.principal_id}, severity {self._severity()}."
            )
        lines += ["", f"{action.id}: {action.title}", *[f"- {step}" for step in action.steps]]
        if action.deadline is not None:
            then = (
                "the case proceeds on its own"
                if self._may_proceed(action)
                else "the case escalates again"
            )
            lines.append(f"Decide before {_utc(action.deadline)}; then {then}.")
        lines += [
            "",
            f"Approve: quench approve {case_id} {action.id} --by <you> --reason <why>",
            f"     or: {approve_update_command(case_id, action.id)}",
        ]
        return "\n".join(lines)

    def _notify_soon(self, kind: NotificationKind, subject: str, text: str) -> None:
        """Send a notification while the case goes on: a slow or failing channel must
        not hold up containment."""
        self._background.append(asyncio.create_task(self._notify(kind, subject, text)))

    async def _background_done(self) -> None:
        """Every notification on its way delivered (or noted as failed), and the
        investigation over."""
        sending, self._background = self._background, []
        await asyncio.gather(*sending)

    async def _notify(self, kind: NotificationKind, subject: str, text: str) -> None:
        """Send a notification by every channel the worker has; a failure is noted on
        the case and never stops it."""
        if not workflow.patched(NOTIFY_PATCH):
            return
        self._notifications += 1
        notification = NotifyInput(
            case_id=self._status.case_id,
            notification_id=(
                f"{self._status.case_id}.{workflow.info().run_id[:8]}.{self._notifications}"
            )[-128:],
            kind=kind,
            subject=subject[:100],
            text=text,
        )
        results = await asyncio.gather(
            self._deliver(Notifier.notify_sns, "sns", notification),
            self._deliver(Notifier.notify_chat, "chat", notification),
        )
        self._note(f"notification {kind.value}: " + "; ".join(results))

    async def _deliver(
        self,
        method: Callable[[Notifier, NotifyInput], NotifyResult],
        channel: str,
        notification: NotifyInput,
    ) -> str:
        try:
            result = await workflow.execute_activity_method(
                method,
                notification,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=timedelta(minutes=5),
                retry_policy=_NOTIFY_RETRY,
                summary=f"Notify by {channel}: {notification.subject}"[:200],
            )
        except ActivityError as failure:
            cause = failure.cause
            reason = cause.message if isinstance(cause, FailureError) else failure.message
            return f"{channel} failed ({reason})"
        return f"{channel} {'sent' if result.sent else 'off'} ({result.detail})"

    def _refusal(self, input: ApprovalInput, decision: Decision) -> str | None:
        """Why this decision may not be taken, if it may not: unknown action, decided
        already, an approver the policy does not allow for its kind, the same person twice
        under the two-person rule."""
        action = self._action(input.action_id)
        if action is None:
            return "no such action"
        if action.status is not ActionStatus.PENDING_APPROVAL:
            return f"action is {action.status}"
        allowed = self._policy.approvers.get(action.kind)
        if allowed is not None and input.approver not in allowed:
            return f"{input.approver} may not decide {action.kind.value} actions"
        if decision is Decision.APPROVED and any(
            e.approver == input.approver for e in action.endorsements
        ):
            return f"{input.approver} approved it already: it needs a second person"
        return None

    def _action(self, action_id: str) -> Action | None:
        return next((a for a in self._status.actions if a.id == action_id), None)

    def _approvals_needed(self, action: Action) -> int:
        return 2 if action.kind in self._policy.two_person else 1

    def _decide(self, input: ApprovalInput, decision: Decision) -> None:
        signal = names.SIGNAL_APPROVE if decision is Decision.APPROVED else names.SIGNAL_REJECT
        refusal = self._refusal(input, decision)
        action = self._action(input.action_id)
        if refusal is not None or action is None:
            self._refuse(signal, input.action_id, input.approver, refusal or "no such action")
            return
        approval = Approval(
            action_id=action.id,
            decision=decision,
            approver=input.approver,
            reason=input.reason,
            decided_at=workflow.now(),
        )
        needed = self._approvals_needed(action)
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
            self._refresh()
            return
        self._settle(action, approval)

    def _settle(self, action: Action, approval: Approval) -> None:
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

    def _refuse(self, signal: str, action_id: str | None, by: str, reason: str) -> None:
        self._status.refused.append(
            RejectedSignal(
                signal=signal, action_id=action_id, by=by, reason=reason, at=workflow.now()
            )
        )
        workflow.logger.warning("refused %s for %s by %s: %s", signal, action_id, by, reason)

    def _start_action(self, action: Action) -> datetime:
        """Mark the action running; returns the containment cut-off it writes into AWS,
        decided here once so every retry writes the same policy, and late enough that
        sessions issued in the second of the approval are still denied."""
        action.status = ActionStatus.RUNNING
        action.started_at = workflow.now()
        return (action.started_at + timedelta(seconds=1)).replace(microsecond=0)

    def _finish_action(self, action: Action, status: ActionStatus, outcome: str) -> None:
        action.status = status
        action.outcome = outcome
        action.finished_at = workflow.now()
        self._status.timeline.append(
            TimelineEntry(at=action.finished_at, what=f"{action.id} {status.value}: {outcome}")
        )

    def _record_evidence(self, record: EvidenceRecord) -> None:
        if all(e.key != record.key for e in self._status.evidence):
            self._status.evidence.append(record)
            self._note(f"evidence {record.uri} sha256={record.sha256}")

    def _note(self, what: str) -> None:
        self._status.timeline.append(TimelineEntry(at=workflow.now(), what=what))

    def _set_phase(self, phase: Phase, note: str) -> None:
        now = workflow.now()
        self._status.phase = phase
        self._status.phases.append(PhaseChange(phase=phase, at=now, note=note))
        self._status.timeline.append(TimelineEntry(at=now, what=f"phase {phase.value}: {note}"))
        self._refresh()

    def _close(self, outcome: str) -> None:
        self._status.outcome = outcome
        self._set_phase(Phase.CLOSED, outcome)

    def _refresh(self) -> None:
        pending = self._status.pending_actions()
        workflow.upsert_search_attributes(
            [
                names.SA_PHASE.value_set(self._status.phase.value),
                names.SA_PENDING_APPROVALS.value_set(len(pending)),
            ]
        )
        workflow.set_current_details(render_details(self._status))

    def _upsert_static_attributes(self, finding: Finding) -> None:
        updates: list[SearchAttributeUpdate[Any]] = [
            names.SA_ACCOUNT_ID.value_set(finding.account_id),
            names.SA_ACCESS_KEY_ID.value_set(finding.access_key.access_key_id),
            names.SA_FINDING_TYPE.value_set(finding.type),
            names.SA_SEVERITY.value_set(finding.severity),
        ]
        if finding.instance_id:
            updates.append(names.SA_INSTANCE_ID.value_set(finding.instance_id))
        workflow.upsert_search_attributes(updates)

    def _upsert_principal_attributes(self, credential: Credential) -> None:
        principal = credential.principal
        updates = [names.SA_PRINCIPAL_TYPE.value_set(principal.type.value)]
        if principal.arn:
            updates.append(names.SA_PRINCIPAL_ARN.value_set(principal.arn))
        if principal.instance_id:
            updates.append(names.SA_INSTANCE_ID.value_set(principal.instance_id))
        workflow.upsert_search_attributes(updates)


@dataclass
class _Evidence:
    """What the evidence phase learned that containment needs."""

    instance_running: bool = False
    user: CaptureUserResult | None = None


def _recontain_minted_step(credential: NewCredential) -> str:
    if credential.kind == "role_session":
        role = credential.principal.rsplit("/", 1)[-1]
        return f"Revoke the sessions of role {role} again, with a new cut-off"
    if credential.kind == "access_key":
        return f"Deactivate {credential.access_key_id} of user {credential.principal}"
    return f"Contain {credential.kind} {credential.access_key_id} by hand (listed as open)"


def _owner_kind(kind: ResourceKind) -> ResourceKind:
    """The kind of principal a policy of this kind belongs to."""
    user_kinds = {ResourceKind.USER_INLINE_POLICY, ResourceKind.USER_POLICY_ATTACHMENT}
    return ResourceKind.USER if kind in user_kinds else ResourceKind.ROLE


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


def explain_failure(result: CheckActivityResult, cutoff: datetime | None) -> list[str]:
    """What the calls that worked after containment say about how the attacker gets in."""
    worked = [e for e in result.events if e.worked]
    sources = sorted({e.source_ip for e in worked})
    calls = Counter(e.event_name for e in worked).most_common(5)
    lines = [
        f"{result.effective_count} calls worked after containment, from {', '.join(sources)}: "
        + ", ".join(f"{name} x{count}" for name, count in calls)
    ]
    if cutoff is not None:
        fresh = sorted(
            {
                e.access_key_id
                for e in worked
                if e.session_issued_at and e.session_issued_at >= cutoff
            }
        )
        if fresh:
            lines.append(
                f"sessions issued after the cut-off are in use ({', '.join(fresh)}): the "
                "attacker can still obtain credentials; review the trust policy and whoever "
                "can reach the instance"
            )
        old = sorted(
            {
                e.access_key_id
                for e in worked
                if e.session_issued_at and e.session_issued_at < cutoff
            }
        )
        if old:
            lines.append(
                f"sessions issued before the cut-off still work ({', '.join(old)}): check that "
                "the revocation policy is still attached"
            )
    minted = sorted({e.event_name for e in worked if e.event_name in _CREDENTIAL_EVENTS})
    if minted:
        lines.append(f"the attacker made new credentials ({', '.join(minted)})")
    return lines


_CREDENTIAL_EVENTS = frozenset(
    {"CreateAccessKey", "AssumeRole", "GetSessionToken", "GetFederationToken", "CreateLoginProfile"}
)


def approve_update_command(case_id: str, action_id: str) -> str:
    """The `temporal` command that approves an action and answers at once (or refuses)."""
    return (
        f"temporal workflow update execute --workflow-id {case_id} "
        f"--name {names.UPDATE_APPROVE} --input "
        f'\'{{"action_id": "{action_id}", "approver": "<you>", "reason": "<why>"}}\''
    )


def _console_url(record: EvidenceRecord) -> str:
    """The S3 console's page of an evidence object."""
    return (
        f"https://s3.console.aws.amazon.com/s3/object/{record.bucket}"
        f"?prefix={quote(record.key, safe='')}"
    )


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(delta: timedelta) -> str:
    """A duration as people say it: 45s, 30m, 2h 5m."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in value.lower())[:100]


def render_details(status: CaseStatus) -> str:
    """The case as Markdown for the Web UI's current details."""
    credential = status.credential
    lines = [f"## Case {status.case_id}", "", f"**Phase:** {status.phase.value}"]
    if status.phases and status.phases[-1].note:
        since = status.phases[-1].at.isoformat(timespec="seconds")
        lines.append(f"**Now:** {status.phases[-1].note} (since {since})")
    if status.outcome:
        lines.append(f"**Outcome:** {status.outcome}")
    watch = status.watch
    if watch is not None and watch.verdict is None:
        lines.append(
            f"**Containment watch:** {watch.checks} checks of CloudTrail so far, "
            f"{watch.denied_attempts} denied attempts; clean at "
            f"{watch.clean_at.isoformat(timespec='seconds')} if no call works"
            + (
                f"; blind while trail {', '.join(watch.blind_trails)} is not logging"
                if watch.blind_trails
                else ""
            )
        )
    if credential:
        principal = credential.principal
        lines += [
            f"**Credential:** `{credential.access_key_id}` ({credential.kind.value})",
            f"**Principal:** `{principal.arn or principal.principal_id}`",
        ]
        if principal.instance_id:
            lines.append(f"**Instance:** `{principal.instance_id}`")
    pending = status.pending_actions()
    if pending:
        lines += ["", "### Waiting for approval"]
        for action in pending:
            # A heading and a plain list each: the Web UI runs nested lists into one line.
            lines += ["", f"#### {action.id}: {action.title}", ""]
            lines += [f"{n}. {step}" for n, step in enumerate(action.steps, 1)]
            if action.approvals_needed > 1:
                given = ", ".join(e.approver for e in action.endorsements) or "none yet"
                lines += [
                    "",
                    f"Needs {action.approvals_needed} different approvers "
                    f"({len(action.endorsements)} so far: {given}).",
                ]
            if action.deadline is not None:
                escalated = f" (escalated {action.escalations}x)" if action.escalations else ""
                lines += ["", f"Decide before {_utc(action.deadline)}{escalated}."]
            lines += [
                "",
                "Approve (the case answers at once, or says why it refuses):",
                "",
                f"`{approve_update_command(status.case_id, action.id)}`",
                "",
                "or as a signal:",
                "",
                f"`temporal workflow signal --workflow-id {status.case_id} "
                f'--name {names.SIGNAL_APPROVE} --input \'{{"action_id": "{action.id}", '
                f'"approver": "<you>", "reason": "<why>"}}\'`',
            ]
    done = [a for a in status.actions if a.status is not ActionStatus.PENDING_APPROVAL]
    if done:
        lines += ["", "### Actions"]
        lines += [f"- {a.id}: {a.status.value}: {a.outcome or a.title}" for a in done]
    if status.open_items:
        lines += ["", "### Open items for a human"]
        lines += [f"- {item}" for item in status.open_items]
    for plan in status.eradication:
        lines += [
            "",
            f"### Round {plan.round}: what {', '.join(plan.access_key_ids)} did "
            f"(since {plan.compromise_time.isoformat()})",
        ]
        lines += [
            f"- {group.value}: {count} ({', '.join(plan.impact_examples.get(group, []))})"
            for group, count in plan.impact.items()
            if count
        ]
        lines += ["", f"#### Removal plan ({len(plan.steps)} steps)"]
        lines += [
            f"{step.order}. {step.describe()}" + (f" — {step.outcome}" if step.outcome else "")
            for step in plan.steps
        ]
        lines += [f"- restore: {c.kind.value} of {c.target}" for c in plan.changes]
        lines += [
            f"- new credential to investigate: `{c.access_key_id}` ({c.kind} of {c.principal})"
            for c in plan.new_credentials
        ]
    if status.recovery:
        lines += ["", "### Recovery"]
        lines += [f"- {r.description}: {r.outcome or 'pending'}" for r in status.recovery]
        lines += [
            f"- logging gap on {g.trail} from {g.stopped_at.isoformat()} to "
            f"{g.restarted_at.isoformat() if g.restarted_at else 'not restarted'}"
            for g in status.logging_gaps
        ]
    if status.investigation:
        found = status.investigation
        chart = found.chart
        lines += [
            "",
            "### Investigation (CloudTrail)",
            f"- {found.hours_above_baseline} hours above the principal's 45-day baseline; "
            f"new source IPs: {', '.join(found.new_source_ips) or 'none'}; API calls never "
            f"made before: {', '.join(found.new_api_calls) or 'none'}",
            f"- chart: [`{chart.uri}`]({_console_url(chart)}) (sha256 `{chart.sha256[:16]}…`)",
            f"- the whole investigation: `{found.investigation.uri}`",
        ]
    if status.report:
        lines += [
            "",
            f"**Post-incident report:** `{status.report.markdown_report.uri}` "
            f"(JSON: `{status.report.json_report.uri}`)",
        ]
    if status.evidence:
        lines += ["", f"### Evidence ({len(status.evidence)} objects)"]
        lines += [f"- `{e.uri}` sha256 `{e.sha256[:16]}…`" for e in status.evidence]
    return "\n".join(lines)
