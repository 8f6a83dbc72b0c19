"""The case workflow on the time-skipping server, with every activity mocked by name."""

import asyncio
import os
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from config import names
from lab.cloudtrail import Actor, TrailRecorder, iam_user_identity
from models.activities import (
    AccessKeyInput,
    AccessKeyResult,
    CaptureInstanceInput,
    CaptureInstanceResult,
    CaptureLaunchedInput,
    CaptureLaunchedResult,
    CaptureRoleInput,
    CaptureTrailsInput,
    CaptureTrailsResult,
    CaptureUserInput,
    CaptureUserResult,
    ChangeResult,
    CheckActivityInput,
    CheckActivityResult,
    ClassifyActivityInput,
    ClassifyActivityResult,
    CloudTrailSliceInput,
    CloudTrailSliceResult,
    ContainmentInPlaceInput,
    ContainmentInPlaceResult,
    CountBaselineInput,
    CountBaselineResult,
    DenyUserTokensInput,
    FindPriorStateInput,
    FindPriorStateResult,
    InAccount,
    InstanceInput,
    InstanceStateResult,
    InvestigateInput,
    ListCaseSnapshotsInput,
    ListCaseSnapshotsResult,
    NotifyInput,
    NotifyResult,
    PlanReadsInput,
    PlanRecoveryInput,
    PlanRecoveryResult,
    PriorState,
    ProbeInstanceCredentialsInput,
    ProbeInstanceCredentialsResult,
    QuarantineInput,
    QuarantineResult,
    ReadPlan,
    ReadScopeInput,
    ReadScopeResult,
    ReadUnit,
    ReleaseChangeInput,
    ReleaseChangeResult,
    RemoveResourceInput,
    RemoveResourceResult,
    ResolvePrincipalInput,
    ResolvePrincipalResult,
    RestoreChangeInput,
    RestoreChangeResult,
    RevokeRoleSessionsInput,
    RevokeRoleSessionsResult,
    RoleTrustInput,
    RoleTrustResult,
    SnapshotVolumesInput,
    SnapshotVolumesResult,
    StartTrailsLoggingInput,
    StartTrailsLoggingResult,
    StoreEvidenceInput,
    TrailEvent,
    TrustedPrincipal,
    UserInput,
    WriteReportInput,
    WriteReportResult,
)
from models.case import (
    ActionKind,
    ActionStatus,
    ApprovalInput,
    CaseInput,
    CasePolicy,
    CaseSnapshot,
    CaseStatus,
    Decision,
    EvidenceRecord,
    InvestigationRef,
    NotificationKind,
    Phase,
    QuarantinePolicy,
    RecoveryOperation,
    RecoveryStep,
)
from models.principal import Credential, CredentialKind, Principal, PrincipalType
from playbook.classify import ChangeKind, Group, classify
from playbook.report import build_report, render_markdown
from tests.playbook.test_classify import STOLEN as RECORDED_STOLEN_KEY
from tests.playbook.test_classify import _attack_records, _recorder
from tests.support import ACCOUNT, INSTANCE, ROLE, STOLEN_KEY, finding, history_for_the_repo
from worker import WORKFLOWS
from workflows.case import CaseWorkflow

NEW_KEY = "ASIANEWKEYAFTERSTART"
HISTORIES = Path(__file__).resolve().parents[1] / "histories"


async def _record(handle: WorkflowHandle, name: str) -> None:
    """Keep the history for the replay tests when asked to (make record-histories)."""
    if os.environ.get("QUENCH_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        text = history_for_the_repo(history.to_json())
        await asyncio.to_thread((HISTORIES / f"{name}.json").write_text, text)


def _evidence(name: str) -> EvidenceRecord:
    return EvidenceRecord(
        name=name,
        bucket="evidence",
        key=f"cases/c/evidence/{name}.json",
        sha256="0" * 64,
        size_bytes=2,
        captured_at=datetime(2026, 11, 22, tzinfo=UTC),
    )


class FakeAws:
    """Activities that record their calls; the probe answers from a list of keys."""

    def __init__(
        self,
        probe_keys: list[str] | None = None,
        kind: CredentialKind = CredentialKind.INSTANCE_ROLE_SESSION,
        instance_state: str = "running",
    ) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.probe_keys = list(probe_keys or [NEW_KEY])
        self.kind = kind
        self.instance_state = instance_state
        self.fail_next: dict[str, ApplicationError] = {}
        self.checks: list[CheckActivityResult] = []  # watch results in order; then clean
        self.has_login_profile = True
        # CloudTrail records per access key: what each credential did.
        self.attacker_records: dict[str, list[dict[str, Any]]] = {}
        self.quarantine_policies: list[str] = []
        # What the next in-place check finds undone (then nothing).
        self.undone: list[str] = []
        self.trails_not_logging: list[str] = []
        self.reports: list[WriteReportResult] = []
        self.report_markdown: list[str] = []
        # What find_prior_state says of a policy, by its name; "absent" otherwise.
        self.prior_states: dict[str, str] = {}
        # Keys whose calls keep working for this many more watch checks.
        self.still_working: dict[str, int] = {}
        # What the case told people, by channel, in order.
        self.notifications: dict[str, list[NotifyInput]] = {"sns": [], "chat": []}
        # Set: the investigation answers only once it is (a long look-back).
        self.investigation_done: asyncio.Event | None = None
        # Set: the chat webhook answers only once it is (a slow chat tool).
        self.chat_answers: asyncio.Event | None = None
        # What resolve_principal says keeps Quench's hands off the credential, and whether
        # it is Quench's own.
        self.hands_off: str | None = None
        self.quench_own = False

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def _record(self, name: str, value: Any) -> None:
        # Every call that acts in an account names the case's (the quarantine acts in the
        # organisation's policy account, for the case's).
        if isinstance(value, InAccount) and not isinstance(value, QuarantineInput):
            # case-<account>-<key>, or a test's own id for a case of the default finding
            named = re.match(r"case-(\d{12})-", activity.info().workflow_id or "")
            assert value.account_id == (named[1] if named else ACCOUNT), (name, value)
            assert value.case_id, (name, value)
        self.calls.append((name, value))
        if name in self.fail_next:
            raise self.fail_next.pop(name)

    def activities(self) -> list[Callable[..., Any]]:
        fake = self

        @activity.defn(name="resolve_principal")
        async def resolve_principal(input: ResolvePrincipalInput) -> ResolvePrincipalResult:
            fake._record("resolve_principal", input)
            if fake.kind is CredentialKind.IAM_USER_KEY:
                principal = Principal(
                    type=PrincipalType.IAM_USER, account_id=ACCOUNT, user_name="alice"
                )
            elif fake.kind is CredentialKind.ROOT:
                principal = Principal(type=PrincipalType.ROOT, account_id=ACCOUNT)
            elif fake.kind is CredentialKind.ROLE_SESSION:
                principal = Principal(
                    type=PrincipalType.ASSUMED_ROLE,
                    account_id=ACCOUNT,
                    arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/alice",
                    role_name=ROLE,
                )
            else:
                principal = Principal(
                    type=PrincipalType.ASSUMED_ROLE,
                    account_id=ACCOUNT,
                    arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/{INSTANCE}",
                    role_name=ROLE,
                    instance_id=INSTANCE,
                )
            return ResolvePrincipalResult(
                credential=Credential(
                    access_key_id=input.finding.access_key.access_key_id,
                    kind=fake.kind,
                    principal=principal,
                ),
                hands_off=fake.hands_off,
                quench_own=fake.quench_own,
            )

        @activity.defn(name="store_evidence")
        async def store_evidence(input: StoreEvidenceInput) -> EvidenceRecord:
            fake._record("store_evidence", input)
            return _evidence(input.name)

        @activity.defn(name="capture_role_state")
        async def capture_role_state(input: CaptureRoleInput) -> EvidenceRecord:
            fake._record("capture_role_state", input)
            return _evidence(f"iam-role-{input.role_name}")

        @activity.defn(name="capture_instance_state")
        async def capture_instance_state(input: CaptureInstanceInput) -> CaptureInstanceResult:
            fake._record("capture_instance_state", input)
            return CaptureInstanceResult(
                evidence=_evidence(f"ec2-instance-{input.instance_id}"),
                volume_ids=["vol-1"],
                state=fake.instance_state,
            )

        @activity.defn(name="snapshot_volumes")
        async def snapshot_volumes(input: SnapshotVolumesInput) -> SnapshotVolumesResult:
            fake._record("snapshot_volumes", input)
            return SnapshotVolumesResult(
                snapshot_ids={"vol-1": "snap-1"}, evidence=_evidence("ebs-snapshots")
            )

        @activity.defn(name="list_case_snapshots")
        async def list_case_snapshots(input: ListCaseSnapshotsInput) -> ListCaseSnapshotsResult:
            fake._record("list_case_snapshots", input)
            return ListCaseSnapshotsResult(
                snapshots=[
                    CaseSnapshot(snapshot_id="snap-1", volume_id="vol-1", instance_id=INSTANCE)
                ]
            )

        @activity.defn(name="capture_launched_resource")
        async def capture_launched_resource(input: CaptureLaunchedInput) -> CaptureLaunchedResult:
            fake._record("capture_launched_resource", input)
            return CaptureLaunchedResult(
                evidence=_evidence(f"launched-{input.kind}-{input.name}"), detail="kept"
            )

        @activity.defn(name="capture_cloudtrail_slice")
        async def capture_cloudtrail_slice(input: CloudTrailSliceInput) -> CloudTrailSliceResult:
            fake._record("capture_cloudtrail_slice", input)
            return CloudTrailSliceResult(evidence=_evidence("cloudtrail"), event_count=12)

        @activity.defn(name="revoke_role_sessions")
        async def revoke_role_sessions(input: RevokeRoleSessionsInput) -> RevokeRoleSessionsResult:
            fake._record("revoke_role_sessions", input)
            return RevokeRoleSessionsResult(
                policy_name=names.REVOKE_SESSIONS_POLICY_NAME,
                cutoff_in_effect=input.cutoff,
                changed=True,
            )

        @activity.defn(name="stop_instance")
        async def stop_instance(input: InstanceInput) -> InstanceStateResult:
            fake._record("stop_instance", input)
            return InstanceStateResult(instance_id=input.instance_id, state="stopped", changed=True)

        @activity.defn(name="start_instance")
        async def start_instance(input: InstanceInput) -> InstanceStateResult:
            fake._record("start_instance", input)
            return InstanceStateResult(instance_id=input.instance_id, state="running", changed=True)

        @activity.defn(name="probe_instance_credentials")
        async def probe_instance_credentials(
            input: ProbeInstanceCredentialsInput,
        ) -> ProbeInstanceCredentialsResult:
            fake._record("probe_instance_credentials", input)
            key = fake.probe_keys.pop(0) if len(fake.probe_keys) > 1 else fake.probe_keys[0]
            return ProbeInstanceCredentialsResult(
                instance_id=input.instance_id,
                role_name=input.role_name,
                access_key_id=key,
                code="Success",
                command_id="cmd-1",
            )

        @activity.defn(name="check_credential_activity")
        async def check_credential_activity(input: CheckActivityInput) -> CheckActivityResult:
            fake._record("check_credential_activity", input)
            working = [k for k in input.access_key_ids if fake.still_working.get(k, 0) > 0]
            for key in working:
                fake.still_working[key] -= 1
            if working:
                events = [_event(f"w-{key}", False, key=key) for key in working]
                return CheckActivityResult(
                    events=events, denied_count=0, effective_count=len(events)
                )
            if fake.checks:
                return fake.checks.pop(0)
            return CheckActivityResult(events=[], denied_count=0, effective_count=0)

        @activity.defn(name="capture_user_state")
        async def capture_user_state(input: CaptureUserInput) -> CaptureUserResult:
            fake._record("capture_user_state", input)
            return CaptureUserResult(
                evidence=_evidence(f"iam-user-{input.user_name}"),
                has_login_profile=fake.has_login_profile,
                quarantine_policies=fake.quarantine_policies,
            )

        @activity.defn(name="deactivate_access_key")
        async def deactivate_access_key(input: AccessKeyInput) -> AccessKeyResult:
            fake._record("deactivate_access_key", input)
            return AccessKeyResult(
                access_key_id=input.access_key_id, status="Inactive", changed=True
            )

        @activity.defn(name="release_change")
        async def release_change(input: ReleaseChangeInput) -> ReleaseChangeResult:
            fake._record("release_change", input)
            return ReleaseChangeResult(outcome="released", detail="undone")

        @activity.defn(name="deny_user_tokens_before")
        async def deny_user_tokens_before(input: DenyUserTokensInput) -> RevokeRoleSessionsResult:
            fake._record("deny_user_tokens_before", input)
            return RevokeRoleSessionsResult(
                policy_name=names.REVOKE_USER_TOKENS_POLICY_NAME,
                cutoff_in_effect=input.cutoff,
                changed=True,
            )

        @activity.defn(name="classify_credential_activity")
        async def classify_credential_activity(
            input: ClassifyActivityInput,
        ) -> ClassifyActivityResult:
            fake._record("classify_credential_activity", input)
            records = [r for k in input.access_key_ids for r in fake.attacker_records.get(k, [])]
            return ClassifyActivityResult(
                report=classify(records), evidence=_evidence(f"activity-{len(fake.calls)}")
            )

        @activity.defn(name="remove_resource")
        async def remove_resource(input: RemoveResourceInput) -> RemoveResourceResult:
            fake._record("remove_resource", input)
            if input.name in input.protected_names or input.owner in input.protected_names:
                return RemoveResourceResult(outcome="skipped", detail="protected")
            return RemoveResourceResult(outcome="removed", detail=input.operation)

        @activity.defn(name="list_role_trust")
        async def list_role_trust(input: RoleTrustInput) -> RoleTrustResult:
            fake._record("list_role_trust", input)
            return RoleTrustResult(
                role_name=input.role_name,
                principals=[
                    TrustedPrincipal(
                        kind="AWS", value=f"arn:aws:iam::{ACCOUNT}:root", outside_account=False
                    ),
                    TrustedPrincipal(
                        kind="AWS", value="arn:aws:iam::999988887777:root", outside_account=True
                    ),
                ],
            )

        @activity.defn(name="deny_user_everything")
        async def deny_user_everything(input: UserInput) -> ChangeResult:
            fake._record("deny_user_everything", input)
            return ChangeResult(changed=True, detail=f"QuenchDenyAll put on {input.user_name}")

        @activity.defn(name="remove_login_profile")
        async def remove_login_profile(input: UserInput) -> ChangeResult:
            fake._record("remove_login_profile", input)
            return ChangeResult(changed=True, detail="login profile deleted")

        @activity.defn(name="capture_trails")
        async def capture_trails(input: CaptureTrailsInput) -> CaptureTrailsResult:
            fake._record("capture_trails", input)
            return CaptureTrailsResult(
                evidence=_evidence("trails"),
                trails=["management-events"],
                not_logging=fake.trails_not_logging,
            )

        @activity.defn(name="start_trails_logging")
        async def start_trails_logging(input: StartTrailsLoggingInput) -> StartTrailsLoggingResult:
            fake._record("start_trails_logging", input)
            return StartTrailsLoggingResult(started=input.trail_names)

        @activity.defn(name="plan_recovery")
        async def plan_recovery(input: PlanRecoveryInput) -> PlanRecoveryResult:
            """Logging restarts by itself; a trust policy has a prior version in CloudTrail;
            anything else goes to a human."""
            fake._record("plan_recovery", input)
            steps = []
            for change in input.changes:
                if change.kind is ChangeKind.LOGGING_STOPPED:
                    steps.append(
                        RecoveryStep(
                            change=change,
                            operation=RecoveryOperation.START_LOGGING,
                            description=f"Start logging on trail {change.target}",
                        )
                    )
                elif change.kind is ChangeKind.TRUST_POLICY:
                    steps.append(
                        RecoveryStep(
                            change=change,
                            operation=RecoveryOperation.RESTORE_TRUST_POLICY,
                            description=f"Restore the trust policy of role {change.target}",
                            restore_to={"Version": "2012-10-17", "Statement": []},
                            source="CloudTrail UpdateAssumeRolePolicy by alice-admin",
                        )
                    )
                else:
                    what = f"redeploy {change.target} by hand"
                    steps.append(RecoveryStep(change=change, description=what, manual=what))
            return PlanRecoveryResult(steps=steps)

        @activity.defn(name="find_prior_state")
        async def find_prior_state(input: FindPriorStateInput) -> FindPriorStateResult:
            fake._record("find_prior_state", input)
            return FindPriorStateResult(
                states=[
                    PriorState(
                        resource=r,
                        state=fake.prior_states.get(r.name, "absent"),
                        source=f"CloudTrail PutRolePolicy {r.name} by alice-admin",
                    )
                    for r in input.resources
                ]
            )

        @activity.defn(name="restore_change")
        async def restore_change(input: RestoreChangeInput) -> RestoreChangeResult:
            fake._record("restore_change", input)
            return RestoreChangeResult(outcome="restored", detail=input.step.description)

        @activity.defn(name="write_report")
        async def write_report(input: WriteReportInput) -> WriteReportResult:
            fake._record("write_report", input)
            # The real builder, on the case as the workflow hands it over.
            fake.report_markdown.append(
                render_markdown(build_report(input.status, input.written_at))
            )
            result = WriteReportResult(
                json_report=_evidence("post-incident-report"),
                markdown_report=_evidence("post-incident-report").model_copy(
                    update={"key": "cases/c/evidence/post-incident-report.md"}
                ),
            )
            fake.reports.append(result)
            return result

        @activity.defn(name="plan_reads")
        async def plan_reads(input: PlanReadsInput) -> ReadPlan:
            fake._record("plan_reads", input)
            return ReadPlan(
                principal_arn=f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
                units=[
                    ReadUnit(region=region, start=input.start, end=input.end)
                    for region in ("us-east-1", "eu-west-1")
                ],
            )

        @activity.defn(name="count_baseline")
        async def count_baseline(input: CountBaselineInput) -> CountBaselineResult:
            fake._record("count_baseline", input)
            return CountBaselineResult(counts=_evidence(f"baseline-{input.unit.region}"), calls=24)

        @activity.defn(name="read_scope")
        async def read_scope(input: ReadScopeInput) -> ReadScopeResult:
            fake._record("read_scope", input)
            return ReadScopeResult(records=_evidence(f"{input.name}-{input.unit.region}"), count=3)

        @activity.defn(name="investigate_credentials")
        async def investigate_credentials(input: InvestigateInput) -> InvestigationRef:
            fake._record("investigate_credentials", input)
            if fake.investigation_done is not None:
                await fake.investigation_done.wait()
            return InvestigationRef(
                investigation=_evidence(input.name),
                chart=_evidence(f"{input.name}-volume").model_copy(
                    update={"key": f"cases/c/evidence/{input.name}-volume.png"}
                ),
                principal_arn=f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
                hours_above_baseline=1,
                new_source_ips=["198.51.100.23"],
                new_api_calls=["iam.amazonaws.com:ListUsers"],
                credentials=input.credentials,
                baseline_parts=input.baseline_parts or [],
            )

        @activity.defn(name="check_containment_in_place")
        async def check_containment_in_place(
            input: ContainmentInPlaceInput,
        ) -> ContainmentInPlaceResult:
            fake._record("check_containment_in_place", input)
            undone, fake.undone = fake.undone, []
            return ContainmentInPlaceResult(undone=undone)

        @activity.defn(name="attach_quarantine")
        async def attach_quarantine(input: QuarantineInput) -> QuarantineResult:
            fake._record("attach_quarantine", input)
            return QuarantineResult(policy_id="p-quarantine1", changed=True, detail="attached")

        @activity.defn(name="lift_quarantine")
        async def lift_quarantine(input: QuarantineInput) -> QuarantineResult:
            fake._record("lift_quarantine", input)
            return QuarantineResult(
                policy_id="p-quarantine1", changed=True, detail="detached and deleted"
            )

        @activity.defn(name="notify_sns")
        async def notify_sns(input: NotifyInput) -> NotifyResult:
            fake._record("notify_sns", input)
            fake.notifications["sns"].append(input)
            return NotifyResult(channel="sns", sent=True, detail="message 1")

        @activity.defn(name="notify_chat")
        async def notify_chat(input: NotifyInput) -> NotifyResult:
            fake._record("notify_chat", input)
            if fake.chat_answers is not None:
                await fake.chat_answers.wait()
            fake.notifications["chat"].append(input)
            return NotifyResult(channel="chat", sent=True, detail="HTTP 200")

        return [
            check_containment_in_place,
            attach_quarantine,
            lift_quarantine,
            list_case_snapshots,
            capture_launched_resource,
            plan_reads,
            count_baseline,
            read_scope,
            investigate_credentials,
            notify_sns,
            notify_chat,
            capture_trails,
            start_trails_logging,
            find_prior_state,
            plan_recovery,
            restore_change,
            write_report,
            remove_resource,
            classify_credential_activity,
            list_role_trust,
            check_credential_activity,
            capture_user_state,
            deactivate_access_key,
            deny_user_tokens_before,
            deny_user_everything,
            remove_login_profile,
            release_change,
            resolve_principal,
            store_evidence,
            capture_role_state,
            capture_instance_state,
            snapshot_volumes,
            capture_cloudtrail_slice,
            revoke_role_sessions,
            stop_instance,
            start_instance,
            probe_instance_credentials,
        ]


async def _wait_for(handle: WorkflowHandle, predicate: Callable[[CaseStatus], bool]) -> CaseStatus:
    async with asyncio.timeout(60):
        while True:
            status = await handle.query(CaseWorkflow.status)
            if predicate(status):
                return status
            await asyncio.sleep(0.1)


async def _result(handle: WorkflowHandle) -> CaseStatus:
    """The case's result; a case stuck waiting for a human fails the test, not the run."""
    async with asyncio.timeout(90):
        return await handle.result()


def _pending(action_id_prefix: str) -> Callable[[CaseStatus], bool]:
    return lambda s: any(a.id.startswith(action_id_prefix) for a in s.pending_actions())


async def _start(
    env: WorkflowEnvironment,
    fake: FakeAws,
    task_queue: str,
    policy: CasePolicy | None = None,
) -> WorkflowHandle:
    case_id = f"case-{ACCOUNT}-{STOLEN_KEY}-{uuid.uuid4().hex[:6]}"
    return await env.client.start_workflow(
        CaseWorkflow.run,
        CaseInput(case_id=case_id, finding=finding(), policy=policy or CasePolicy()),
        id=case_id,
        task_queue=task_queue,
    )


async def _approved_to_the_end(env: WorkflowEnvironment, fake: FakeAws) -> CaseStatus:
    """A case on its own worker, its containment approved, run to its end."""
    queue = f"q-{uuid.uuid4()}"
    async with _worker(env, fake, queue):
        handle = await _start(env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        return await _result(handle)


def _worker(env: WorkflowEnvironment, fake: FakeAws, task_queue: str) -> Worker:
    return Worker(
        env.client, task_queue=task_queue, workflows=WORKFLOWS, activities=fake.activities()
    )


def _approval(action_id: str, who: str = "alice") -> ApprovalInput:
    return ApprovalInput(action_id=action_id, approver=who, reason="confirmed malicious")


async def test_evidence_before_change_then_contained_after_approval(time_skipping_env):
    fake = FakeAws()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        proposed = await _wait_for(handle, _pending("contain-"))
        assert proposed.phase is Phase.AWAITING_APPROVAL
        # What containment changes is kept before it is proposed: the role's IAM state and
        # the instance's (the snapshots may still be on their way).
        kept = {e.name for e in proposed.evidence}
        assert {f"iam-role-{ROLE}", f"ec2-instance-{INSTANCE}"} <= kept
        # The rest is kept while the case waits on a person, and nothing is changed.
        everything = {
            "finding-lab-finding-0001",
            f"iam-role-{ROLE}",
            f"ec2-instance-{INSTANCE}",
            "ebs-snapshots",
            "cloudtrail",
            "trails",
        }
        waiting = await _wait_for(handle, lambda s: everything <= {e.name for e in s.evidence})
        assert waiting.phase is Phase.AWAITING_APPROVAL
        assert "revoke_role_sessions" not in fake.names()
        assert "stop_instance" not in fake.names()
        action = waiting.pending_actions()[0]
        await handle.signal(CaseWorkflow.approve, _approval(action.id))
        result = await _result(handle)

    assert result.phase is Phase.CLOSED
    assert result.outcome == "contained"
    assert result.verified_access_key_id == NEW_KEY
    order = fake.names()
    assert order.index("snapshot_volumes") < order.index("stop_instance")
    assert (
        order.index("revoke_role_sessions")
        < order.index("stop_instance")
        < order.index("start_instance")
        < order.index("probe_instance_credentials")
    )
    approval = result.approvals[0]
    assert (approval.action_id, approval.approver, approval.decision) == (
        action.id,
        "alice",
        Decision.APPROVED,
    )
    revoke = next(v for n, v in fake.calls if n == "revoke_role_sessions")
    # The cut-off is decided in the workflow: the second after containment began.
    contained = next(a for a in result.actions if a.id == action.id)
    assert contained.status is ActionStatus.DONE
    assert contained.started_at is not None
    assert revoke.cutoff == (contained.started_at + timedelta(seconds=1)).replace(microsecond=0)
    assert result.containment_cutoff == revoke.cutoff
    phases = [p.phase for p in result.phases]
    assert phases.index(Phase.EVIDENCE) < phases.index(Phase.AWAITING_APPROVAL)
    assert phases[-5:] == [
        Phase.VERIFICATION,
        Phase.CONTAINED,
        Phase.WATCHING,
        Phase.ERADICATION,
        Phase.CLOSED,
    ]
    trail = next(v for n, v in fake.calls if n == "capture_cloudtrail_slice")
    assert trail.start <= finding().first_seen - timedelta(hours=24)


async def test_rejected_containment_changes_nothing(time_skipping_env):
    fake = FakeAws()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(
            CaseWorkflow.reject,
            ApprovalInput(
                action_id=waiting.pending_actions()[0].id,
                approver="bob",
                reason="pen test, expected",
            ),
        )
        result = await _result(handle)
        await _record(handle, "rejected_containment")
    assert result.phase is Phase.CLOSED
    assert result.outcome == "containment rejected by bob: pen test, expected"
    assert not {"revoke_role_sessions", "stop_instance", "start_instance"} & set(fake.names())
    assert result.approvals[0].decision is Decision.REJECTED


async def test_unknown_and_repeated_decisions_are_refused_and_recorded(time_skipping_env):
    fake = FakeAws()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        action_id = waiting.pending_actions()[0].id
        await handle.signal(CaseWorkflow.approve, _approval("contain-99", "mallory"))
        await handle.signal(CaseWorkflow.approve, _approval(action_id))
        await handle.signal(CaseWorkflow.reject, _approval(action_id, "carol"))
        result = await _result(handle)
    refused = [(r.action_id, r.by, r.reason) for r in result.refused]
    assert refused[0] == ("contain-99", "mallory", "no such action")
    assert refused[1][0:2] == (action_id, "carol")
    assert "approved" in refused[1][2] or "running" in refused[1][2] or "done" in refused[1][2]
    assert [a.approver for a in result.approvals] == ["alice"]
    assert result.outcome == "contained"


async def test_unrotated_key_fails_containment_until_a_retry_rotates_it(time_skipping_env):
    fake = FakeAws(probe_keys=[STOLEN_KEY, NEW_KEY])
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        failed = await _wait_for(handle, _pending("retry-"))
        assert failed.phase is Phase.CONTAINMENT_FAILED
        assert failed.verified_access_key_id is None
        await handle.signal(CaseWorkflow.approve, _approval(failed.pending_actions()[0].id))
        result = await _result(handle)
        await _record(handle, "containment_failed_then_retried")
    assert fake.names().count("stop_instance") == 2
    assert fake.names().count("probe_instance_credentials") == 2
    assert result.verified_access_key_id == NEW_KEY
    assert result.outcome == "contained"


async def test_non_retryable_failure_waits_for_a_human_then_retries(time_skipping_env):
    fake = FakeAws()
    fake.fail_next["revoke_role_sessions"] = ApplicationError(
        "AccessDenied", type="AwsAccessDenied", non_retryable=True
    )
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        stuck = await _wait_for(handle, _pending("retry-"))
        assert stuck.phase is Phase.NEEDS_HUMAN
        assert "AccessDenied" in stuck.phases[-1].note
        await handle.signal(CaseWorkflow.approve, _approval(stuck.pending_actions()[0].id))
        result = await _result(handle)
        await _record(handle, "access_denied_then_retried")
    assert fake.names().count("revoke_role_sessions") == 2
    assert result.outcome == "contained"


async def test_a_second_delivery_joins_once(time_skipping_env):
    fake = FakeAws()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        repeat = finding(count=9, updated_at=datetime(2026, 11, 22, 7, 30, tzinfo=UTC))
        await handle.signal(CaseWorkflow.add_finding, repeat)
        await handle.signal(CaseWorkflow.add_finding, repeat)
        await handle.signal(CaseWorkflow.add_finding, finding())
        other_key = finding(access_key_id="ASIAOTHERKEY00000000")
        await handle.signal(CaseWorkflow.add_finding, other_key)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.reject, _approval(waiting.pending_actions()[0].id))
        result = await _result(handle)
    assert [f.count for f in result.findings] == [7, 9]
    assert [r.reason for r in result.refused] == ["finding is about another key"]


async def test_stopped_instance_is_not_started_by_containment(time_skipping_env):
    fake = FakeAws(instance_state="stopped")
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        result = await _result(handle)
        await _record(handle, "stopped_instance")
    assert "revoke_role_sessions" in fake.names()
    assert not {"stop_instance", "start_instance"} & set(fake.names())
    assert result.outcome == "contained"


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_root_key_is_handed_to_a_human(time_skipping_env, decision):
    fake = FakeAws(kind=CredentialKind.ROOT)
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("manual-"))
        assert waiting.phase is Phase.NEEDS_HUMAN
        signal = CaseWorkflow.approve if decision == "approve" else CaseWorkflow.reject
        await handle.signal(signal, _approval(waiting.pending_actions()[0].id))
        result = await _result(handle)
    assert not {"revoke_role_sessions", "stop_instance"} & set(fake.names())
    assert result.outcome is not None and result.outcome.startswith(
        "contained by a human" if decision == "approve" else "not contained"
    )


def _event(event_id: str, denied: bool, key: str = STOLEN_KEY, issued=None) -> TrailEvent:
    return TrailEvent(
        event_id=event_id,
        event_time=datetime(2026, 11, 22, 8, 0, tzinfo=UTC),
        event_name="ListBuckets" if denied else "CreateUser",
        event_source="s3.amazonaws.com",
        aws_region="us-east-1",
        source_ip="198.51.100.23",
        user_agent="aws-cli",
        access_key_id=key,
        error_code="AccessDenied" if denied else None,
        denied=denied,
        session_issued_at=issued,
    )


async def test_the_watch_checks_cloudtrail_for_thirty_minutes_and_waits_for_late_logs(
    time_skipping_env,
):
    fake = FakeAws()
    # Each check reads the whole window so far: once seen, the denied attempt stays.
    attempt = CheckActivityResult(events=[_event("d1", True)], denied_count=1, effective_count=0)
    fake.checks = [CheckActivityResult(events=[], denied_count=0, effective_count=0)] + [
        attempt
    ] * 8
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        watching = await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        assert watching.watch is not None and watching.watch.verdict is None
        result = await _result(handle)
    checks = [v for n, v in fake.calls if n == "check_credential_activity"]
    watch = result.watch
    assert watch is not None and watch.verdict == "clean"
    # 30 minutes of window and 15 of delivery lag, one check every 5 minutes.
    assert len(checks) == watch.checks == 9
    assert watch.clean_at - watch.start == timedelta(minutes=45)
    assert all(c.start == watch.start and c.access_key_ids == [STOLEN_KEY] for c in checks)
    # Durable timers: the first check looks five minutes in (plus the task's own milliseconds).
    assert timedelta(minutes=5) <= checks[0].end - watch.start < timedelta(minutes=5, seconds=1)
    assert checks[-1].end == watch.start + timedelta(minutes=30)
    assert watch.denied_attempts == 1
    assert any("1 attempt since containment" in t.what for t in result.timeline)
    assert result.outcome == "contained"
    assert [p.phase for p in result.phases][-4:] == [
        Phase.CONTAINED,
        Phase.WATCHING,
        Phase.ERADICATION,
        Phase.CLOSED,
    ]


async def test_a_watch_that_reads_a_stopped_trail_says_it_was_blind(time_skipping_env):
    fake = FakeAws()
    # The trail is off from the third check on: no call shows, and none could.
    quiet = CheckActivityResult(events=[], denied_count=0, effective_count=0)
    off = quiet.model_copy(update={"not_logging": ["management-events"]})
    fake.checks = [quiet, quiet] + [off] * 7
    result = await _approved_to_the_end(time_skipping_env, fake)
    watch = result.watch
    assert watch is not None and watch.checks == 9
    assert (watch.verdict, watch.blind_trails) == ("clean", ["management-events"])
    noted = [t.what for t in result.timeline if "is not logging" in t.what]
    assert noted == [
        "trail management-events is not logging: the watch cannot see a call made while it is off"
    ]
    assert result.open_items == [
        f"the containment watch of {STOLEN_KEY} read CloudTrail while trail management-events "
        "was not logging: a call made then is in none of its files. Check CloudTrail event "
        f"history (LookupEvents) for their calls since {watch.start.isoformat()}"
    ]
    report = render_markdown(build_report(result, result.phases[-1].at))
    assert "(blind while trail management-events was not logging)" in report


async def test_a_watch_that_cannot_read_the_trails_status_still_watches_and_says_so(
    time_skipping_env,
):
    fake = FakeAws()
    why = "read the logging status: AccessDenied: no (call cloudtrail:GetTrailStatus)"
    unknown = CheckActivityResult(events=[], denied_count=0, effective_count=0, logging_unknown=why)
    fake.checks = [unknown] * 9
    result = await _approved_to_the_end(time_skipping_env, fake)
    watch = result.watch
    assert watch is not None and watch.checks == 9
    assert (watch.verdict, watch.logging_unknown) == ("clean", why)
    noted = [t.what for t in result.timeline if "whether the trails are logging" in t.what]
    assert len(noted) == 1 and why in noted[0]
    (item,) = result.open_items
    assert item.startswith(f"the containment watch of {STOLEN_KEY} could not read whether")
    assert "(call cloudtrail:GetTrailStatus)" in item


async def test_calls_that_work_after_containment_fail_it_and_it_is_contained_again(
    time_skipping_env,
):
    fake = FakeAws(probe_keys=[NEW_KEY])
    fake.checks = [
        CheckActivityResult(
            events=[_event("w1", False, issued=datetime(2026, 11, 22, 6, tzinfo=UTC))],
            denied_count=0,
            effective_count=1,
        )
    ]
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        # Only a wait on the result skips time by itself; a test that queries skips it.
        await time_skipping_env.sleep(timedelta(minutes=6))
        failed = await _wait_for(handle, _pending("recontain-"))
        assert failed.phase is Phase.CONTAINMENT_FAILED
        assert failed.watch is not None and failed.watch.verdict == "failed"
        proposal = failed.pending_actions()[0]
        assert proposal.steps[0].startswith("1 calls worked after containment, from 198.51.100.23")
        assert any("sessions issued before the cut-off still work" in s for s in proposal.steps)
        await handle.signal(CaseWorkflow.approve, _approval(proposal.id))
        result = await _result(handle)
    revokes = [v for n, v in fake.calls if n == "revoke_role_sessions"]
    assert len(revokes) == 2 and revokes[1].cutoff > revokes[0].cutoff
    assert fake.names().count("stop_instance") == 2
    assert result.watch is not None and result.watch.verdict == "clean"
    assert result.containment_cutoff == revokes[1].cutoff
    assert result.outcome == "contained"
    await _record(handle, "recontained_after_failed_watch")


QUARANTINABLE = CasePolicy(
    quarantine=QuarantinePolicy(
        organization_id="o-quenchlab01",
        policy_account="101010101010",
        exempt=[f"arn:aws:iam::{ACCOUNT}:role/QuenchResponder"],
    )
)


async def test_containment_undone_in_an_organisation_quarantines_the_account_until_the_end(
    time_skipping_env,
):
    fake = FakeAws(probe_keys=[NEW_KEY])
    fake.checks = [
        CheckActivityResult(
            events=[_event("w1", False, issued=datetime(2026, 11, 22, 6, tzinfo=UTC))],
            denied_count=0,
            effective_count=1,
        )
    ]
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, QUARANTINABLE)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        await time_skipping_env.sleep(timedelta(minutes=6))
        proposed = await _wait_for(handle, _pending("quarantine-"))
        quarantine = proposed.pending_actions()[0]
        assert "attach_quarantine" not in fake.names()  # nothing before the approval
        assert quarantine.title == f"Quarantine account {ACCOUNT} with an SCP"
        cutoff = proposed.containment_cutoff
        assert cutoff is not None
        assert f"Deny sessions of arn:aws:iam::{ACCOUNT}:role/{ROLE} issued before" in (
            " ".join(quarantine.steps)
        )
        assert f"Never deny arn:aws:iam::{ACCOUNT}:role/QuenchResponder" in quarantine.steps
        await handle.signal(CaseWorkflow.approve, _approval(quarantine.id))
        again = await _wait_for(handle, _pending("recontain-"))
        assert again.quarantine is not None and again.quarantine.policy_id == "p-quarantine1"
        await handle.signal(CaseWorkflow.approve, _approval(again.pending_actions()[0].id))
        await time_skipping_env.sleep(timedelta(hours=1))  # the watch again, then the rounds
        lifting = await _wait_for(handle, _pending("lift-quarantine-"))
        # Still attached until the lift is approved, and the case says so.
        assert lifting.quarantine is not None and lifting.quarantine.lifted_at is None
        await handle.signal(CaseWorkflow.approve, _approval(lifting.pending_actions()[0].id))
        result = await _result(handle)
    (attached,) = [v for n, v in fake.calls if n == "attach_quarantine"]
    assert (attached.account_id, attached.target_account_id) == ("101010101010", ACCOUNT)
    (older,) = attached.document["Statement"]
    # The role by name, at the top level or under a path (the fake resolves no role ARN).
    assert older["Condition"]["ArnLike"] == {
        "aws:PrincipalArn": [
            f"arn:aws:iam::{ACCOUNT}:role/*/{ROLE}",
            f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
        ]
    }
    # Sessions issued before the quarantine, not only before the first cut-off: the
    # attacker may have got new ones while containment was undone.
    denied_before = older["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    assert denied_before > cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
    (lifted,) = [v for n, v in fake.calls if n == "lift_quarantine"]
    assert lifted.policy_name == attached.policy_name
    names_in_order = fake.names()
    assert names_in_order.index("lift_quarantine") > names_in_order.index("attach_quarantine")
    assert result.quarantine is not None and result.quarantine.lifted_at is not None
    kinds = [a.kind for a in result.actions]
    assert kinds.index(ActionKind.QUARANTINE) < kinds.index(ActionKind.RECONTAIN)
    assert all(
        a.status is ActionStatus.DONE
        for a in result.actions
        if a.kind in (ActionKind.QUARANTINE, ActionKind.LIFT_QUARANTINE)
    )
    assert result.outcome == "contained" and result.open_items == []
    await _record(handle, "quarantined_in_an_organisation")


async def test_containment_undone_in_iam_fails_the_watch_even_before_any_call_works(
    time_skipping_env,
):
    fake = FakeAws(probe_keys=[NEW_KEY])
    undone = f"the AWSRevokeOlderSessions policy of role {ROLE} was deleted"
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, QUARANTINABLE)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        fake.undone = [undone]
        await time_skipping_env.sleep(timedelta(minutes=6))
        proposed = await _wait_for(handle, _pending("quarantine-"))
        assert proposed.phase is Phase.CONTAINMENT_FAILED
        assert proposed.phases[-1].note == f"containment undone: {undone}"
        assert proposed.watch is not None and proposed.watch.undone == [undone]
        assert proposed.watch.effective_calls == 0
    checked = [v for n, v in fake.calls if n == "check_containment_in_place"]
    assert checked and checked[0].role_name == ROLE and checked[0].user_name is None
    assert checked[0].account_id == ACCOUNT and checked[0].cutoff == proposed.containment_cutoff


async def test_a_quarantine_not_lifted_is_an_open_item(time_skipping_env):
    fake = FakeAws(probe_keys=[NEW_KEY])
    fake.still_working = {STOLEN_KEY: 1}
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, QUARANTINABLE)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        await time_skipping_env.sleep(timedelta(minutes=6))
        for prefix in ("quarantine-", "recontain-"):
            status = await _wait_for(handle, _pending(prefix))
            action = next(a for a in status.pending_actions() if a.id.startswith(prefix))
            await handle.signal(CaseWorkflow.approve, _approval(action.id))
        await time_skipping_env.sleep(timedelta(hours=1))
        lifting = await _wait_for(handle, _pending("lift-quarantine-"))
        await handle.signal(CaseWorkflow.reject, _approval(lifting.pending_actions()[0].id, "bob"))
        result = await _result(handle)
    assert "lift_quarantine" not in fake.names()
    (item,) = [i for i in result.open_items if "quarantine" in i]
    assert item.startswith("the quarantine SCP quench-quarantine-case-")
    assert f"is still attached to account {ACCOUNT}" in item


async def test_a_rejected_recontainment_closes_the_case_to_a_human(time_skipping_env):
    fake = FakeAws()
    fake.checks = [
        CheckActivityResult(events=[_event("w1", False)], denied_count=0, effective_count=1)
    ]
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        # Only a wait on the result skips time by itself; a test that queries skips it.
        await time_skipping_env.sleep(timedelta(minutes=6))
        failed = await _wait_for(handle, _pending("recontain-"))
        await handle.signal(
            CaseWorkflow.reject,
            ApprovalInput(
                action_id=failed.pending_actions()[0].id, approver="bob", reason="IR team has it"
            ),
        )
        result = await _result(handle)
    assert result.outcome == "containment failed; bob takes over: IR team has it"
    assert fake.names().count("revoke_role_sessions") == 1


async def test_a_user_key_is_deactivated_its_older_tokens_denied_and_console_removed(
    time_skipping_env,
):
    fake = FakeAws(kind=CredentialKind.IAM_USER_KEY)
    fake.quarantine_policies = ["AWSCompromisedKeyQuarantineV3"]
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-key-"))
        assert not {"deactivate_access_key", "deny_user_tokens_before"} & set(fake.names())
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        console = await _wait_for(handle, _pending("remove-console-"))
        assert "remove_login_profile" not in fake.names()
        await handle.signal(CaseWorkflow.approve, _approval(console.pending_actions()[0].id))
        result = await _result(handle)
    deactivated = next(v for n, v in fake.calls if n == "deactivate_access_key")
    assert (deactivated.user_name, deactivated.access_key_id) == ("alice", STOLEN_KEY)
    denied = next(v for n, v in fake.calls if n == "deny_user_tokens_before")
    assert result.containment_cutoff == denied.cutoff
    assert "remove_login_profile" in fake.names()
    assert not {"revoke_role_sessions", "stop_instance"} & set(fake.names())
    assert any("AWSCompromisedKeyQuarantineV3" in t.what for t in result.timeline)
    assert result.watch is not None and result.watch.verdict == "clean"
    assert result.outcome == "contained"
    await _record(handle, "user_key_contained")


async def test_a_role_session_is_revoked_and_outside_trust_is_flagged(time_skipping_env):
    fake = FakeAws(kind=CredentialKind.ROLE_SESSION)
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-role-"))
        steps = waiting.pending_actions()[0].steps
        assert any("arn:aws:iam::999988887777:root" in step for step in steps)
        assert not any(f"arn:aws:iam::{ACCOUNT}:root" in step for step in steps)
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        result = await _result(handle)
    revoke = next(v for n, v in fake.calls if n == "revoke_role_sessions")
    assert revoke.role_name == ROLE and result.containment_cutoff == revoke.cutoff
    assert not {"stop_instance", "probe_instance_credentials"} & set(fake.names())
    assert any("flagged" in t.what and "999988887777" in t.what for t in result.timeline)
    assert result.outcome == "contained"
    await _record(handle, "role_session_contained")


def _second_generation_records() -> list[dict[str, Any]]:
    """What the backdoor user's own key did: one more user, with a key and a policy."""
    recorder = TrailRecorder(account_id=ACCOUNT, bucket="trail")
    actor = Actor(
        iam_user_identity(
            account_id=ACCOUNT,
            user_name="backup-svc",
            user_id="AIDABACKDOOR",
            access_key_id="AKIABACKDOORKEY00001",
        ),
        "198.51.100.23",
        "aws-cli",
    )
    at = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)
    for operation, request, response in [
        ("CreateUser", {"UserName": "svc-monitor"}, {"User": {"UserName": "svc-monitor"}}),
        (
            "CreateAccessKey",
            {"UserName": "svc-monitor"},
            {"AccessKey": {"UserName": "svc-monitor", "AccessKeyId": "AKIATHIRDGENKEY00001"}},
        ),
        ("PutUserPolicy", {"UserName": "svc-monitor", "PolicyName": "monitoring"}, {}),
    ]:
        recorder.record(
            actor,
            service="iam",
            operation=operation,
            region="us-east-1",
            at=at,
            request=request,
            response=response,
        )
    return recorder.records


def _decided(action_id: str) -> Callable[[CaseStatus], bool]:
    return lambda status: action_id not in {a.id for a in status.pending_actions()}


async def _approve_each_round(env, handle: WorkflowHandle) -> list[list[str]]:
    """Approve every eradication round as it comes, a containment again after a failed
    watch, and the recovery; the steps each eradication round proposed."""
    proposed: list[list[str]] = []
    while True:
        await env.sleep(timedelta(minutes=50))
        status = await _wait_for(
            handle,
            lambda s: (
                s.phase is Phase.CLOSED
                or bool(_pending("eradicate-")(s))
                or bool(_pending("recover-")(s))
                or bool(_pending("recontain-")(s))
            ),
        )
        if status.phase is Phase.CLOSED:
            return proposed
        action = status.pending_actions()[0]
        if action.id.startswith("eradicate-"):
            proposed.append(action.steps)
        await handle.signal(CaseWorkflow.approve, _approval(action.id))
        await _wait_for(handle, _decided(action.id))


async def _approve_everything(env, fake: FakeAws) -> tuple[WorkflowHandle, CaseStatus]:
    """A case on `fake`, every action approved as it comes, to its result."""
    queue = f"q-{uuid.uuid4()}"
    async with _worker(env, fake, queue):
        handle = await _start(env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        await _approve_each_round(env, handle)
        return handle, await _result(handle)


async def test_eradication_runs_in_rounds_until_nothing_new_is_found(time_skipping_env):
    fake = FakeAws()
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        "AKIABACKDOORKEY00001": _second_generation_records(),
    }
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        proposed = await _approve_each_round(time_skipping_env, handle)
        result = await _result(handle)
        latest = await handle.query(CaseWorkflow.plan)
    rounds = [
        (p.round, p.access_key_ids, len(p.steps), [c.access_key_id for c in p.new_credentials])
        for p in result.eradication
    ]
    assert rounds == [
        (1, [STOLEN_KEY], 10, ["AKIABACKDOORKEY00001", "ASIAFEDERATED0000001"]),
        (2, ["AKIABACKDOORKEY00001", "ASIAFEDERATED0000001"], 3, ["AKIATHIRDGENKEY00001"]),
        (3, ["AKIATHIRDGENKEY00001"], 0, []),
    ]
    assert latest == result.eradication[-1]
    assert len(proposed) == 2 and "delete_user svc-monitor" in proposed[1]
    first = result.eradication[0]
    # Everything since an hour before GuardDuty's first sighting is the attacker's.
    assert first.compromise_time == finding().first_seen - timedelta(hours=1)
    assert first.impact[Group.IDENTITY_AND_PERSISTENCE] == 8
    removals = [(v.operation, v.name) for n, v in fake.calls if n == "remove_resource"]
    planned = [(s.operation, s.resource.name) for p in result.eradication for s in p.steps]
    assert removals == planned
    assert all(s.outcome == "removed" for p in result.eradication for s in p.steps)
    # The federation token is no user's key: a human contains it, and is told so.
    assert result.open_items == [
        "contain federation_token ASIAFEDERATED0000001 of "
        f"arn:aws:sts::{ACCOUNT}:federated-user/ops (made by {RECORDED_STOLEN_KEY}): "
        "nothing the case did contains it"
    ]
    assert fake.names().index("check_credential_activity") < fake.names().index(
        "classify_credential_activity"
    )
    await _record(handle, "eradicated")
    # The same case as this version records it: actions numbered by kind, QuenchOutcome.
    await _record(handle, "eradicated_ids_by_kind_and_outcome")


async def test_launched_resources_are_kept_before_removal_and_the_report_tells_the_story(
    time_skipping_env,
):
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _attack_records()}
    attempt = CheckActivityResult(events=[_event("d1", True)], denied_count=1, effective_count=0)
    fake.checks = [attempt] * 20
    handle, result = await _approve_everything(time_skipping_env, fake)

    # The instances and the function the attacker launched are kept, each before the first
    # removal of its round, and kept as the case's evidence.
    names = fake.names()
    captured = [v.name for n, v in fake.calls if n == "capture_launched_resource"]
    assert captured == ["log-rotate", "i-0miner1", "i-0miner2"]
    last_capture = max(i for i, n in enumerate(names) if n == "capture_launched_resource")
    assert last_capture < names.index("remove_resource")
    kept = {e.name for e in result.evidence}
    assert {"launched-function-log-rotate", "launched-instance-i-0miner1"} <= kept
    # The snapshots are looked up for the report, and it names them.
    assert names.index("list_case_snapshots") < names.index("write_report")
    assert [s.snapshot_id for s in result.snapshots] == ["snap-1"]
    (markdown,) = fake.report_markdown
    assert f"- EBS snapshot `snap-1` of volume `vol-1` ({INSTANCE})" in markdown
    assert f"- New key on the instance after its restart: `{NEW_KEY}`" in markdown
    assert f"- Instance `{INSTANCE}`: stopped 20" in markdown
    assert result.containment_cutoff is not None
    assert (
        f"- Cut-off: sessions and tokens issued before {result.containment_cutoff.isoformat()}"
        in (markdown)
    )
    # The watch's attempts: how many, from where, which calls.
    assert result.watch is not None and result.watch.attempt_sources == ["198.51.100.23"]
    assert f"- Watch of `{STOLEN_KEY}`: 1 denied attempt from 198.51.100.23 " in markdown
    assert "(s3:ListBuckets AccessDenied x1)" in markdown
    # The denied call with its error, and what the data access read.
    assert "| secretsmanager.amazonaws.com:GetSecretValue | AccessDenied | 1 |" in markdown
    assert "| s3.amazonaws.com:GetObject | `s3://acme/orders.csv` | 1 |" in markdown
    assert "`launched-function-log-rotate`" in markdown
    await _record(handle, "launched_resources_kept_and_snapshots_reported")


async def test_the_round_cap_stops_eradication_and_says_what_is_left(time_skipping_env):
    fake = FakeAws()
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        "AKIABACKDOORKEY00001": _second_generation_records(),
    }
    queue = f"q-{uuid.uuid4()}"
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=fake.activities(),
    ):
        case_id = f"case-{ACCOUNT}-{STOLEN_KEY}-{uuid.uuid4().hex[:6]}"
        handle = await time_skipping_env.client.start_workflow(
            CaseWorkflow.run,
            CaseInput(
                case_id=case_id, finding=finding(), policy=CasePolicy(max_eradication_rounds=1)
            ),
            id=case_id,
            task_queue=queue,
        )
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        await _approve_each_round(time_skipping_env, handle)
        result = await _result(handle)
    assert [p.round for p in result.eradication] == [1]
    assert result.open_items[-1] == (
        "eradication stopped after 1 round (the cap): investigate "
        "AKIABACKDOORKEY00001, ASIAFEDERATED0000001 by hand"
    )


async def test_eradication_rounds_continue_as_new_and_the_case_carries_over(time_skipping_env):
    fake = FakeAws()
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        "AKIABACKDOORKEY00001": _second_generation_records(),
    }
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        case_id = f"case-{ACCOUNT}-{STOLEN_KEY}-{uuid.uuid4().hex[:6]}"
        first_run = await time_skipping_env.client.start_workflow(
            CaseWorkflow.run,
            CaseInput(case_id=case_id, finding=finding(), policy=CasePolicy(rounds_per_run=1)),
            id=case_id,
            task_queue=queue,
        )
        # Signals and queries follow the case across runs: no run id.
        handle = time_skipping_env.client.get_workflow_handle_for(CaseWorkflow.run, case_id)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        await _approve_each_round(time_skipping_env, handle)
        result = await _result(handle)
        description = await handle.describe()
    assert description.run_id != first_run.first_execution_run_id
    assert [p.round for p in result.eradication] == [1, 2, 3]
    assert sum("continued as new after round" in t.what for t in result.timeline) == 2
    # Everything from the first run is still in the case: evidence, approvals, actions.
    assert {e.name for e in result.evidence} >= {"finding-lab-finding-0001", "cloudtrail"}
    # Containment, two eradication rounds and the recovery, across three runs.
    assert [a.action_id.split("-")[0] for a in result.approvals] == [
        "contain",
        "eradicate",
        "eradicate",
        "recover",
    ]
    assert len({a.id for a in result.actions}) == len(result.actions)
    # The federation token the first round found is for a human to contain.
    assert result.outcome == "partly contained: contained, but not ASIAFEDERATED0000001"
    await _record(handle, "continued_as_new_last_run")


async def test_recovery_restores_after_approval_and_the_report_says_what_was_done(
    time_skipping_env,
):
    fake = FakeAws()
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        "AKIABACKDOORKEY00001": _second_generation_records(),
    }
    fake.trails_not_logging = ["management-events", "data-events"]
    handle, result = await _approve_everything(time_skipping_env, fake)
    # The attacker's trust-policy rewrite is undone after approval; nothing is restored
    # before it. The trail it stopped was started again by containment (below), so
    # recovery neither asks about it nor starts it again.
    recover = next(a for a in result.actions if a.id.startswith("recover-"))
    assert recover.status is ActionStatus.DONE and recover.approval is not None
    assert len(recover.steps) == 1 and "trust policy" in recover.steps[0]
    restored = [v.step.change.kind for n, v in fake.calls if n == "restore_change"]
    assert restored == [ChangeKind.TRUST_POLICY]
    first_restore = fake.names().index("restore_change")
    assert fake.names().index("plan_recovery") < first_restore
    assert recover.started_at is not None
    assert recover.approval.decided_at <= recover.started_at
    assert [(s.change.kind, s.outcome) for s in result.recovery] == [
        (ChangeKind.TRUST_POLICY, "restored"),
        (ChangeKind.LOGGING_STOPPED, "already_restored"),
    ]
    assert result.recovery[1].detail is not None
    assert result.recovery[1].detail.startswith("containment started logging on it again at")
    # Both trails found stopped were started again once the credential was cut off, the
    # last of containment's approved steps (named: the trails were read before a person
    # was asked), and before the watch, so the watch read complete files.
    contain = result.actions[0]
    assert contain.steps[0].startswith(f"Deny all sessions of role {ROLE}")
    assert contain.steps[-2:] == [
        f"Start logging on trail {t}: it was not logging when the case opened, and the "
        "containment watch reads its files"
        for t in ("management-events", "data-events")
    ]
    assert fake.names().index("revoke_role_sessions") < fake.names().index("start_trails_logging")
    assert [v.trail_names for n, v in fake.calls if n == "start_trails_logging"] == [
        ["management-events", "data-events"]
    ]
    restarted = result.trails_restarted["management-events"]
    assert contain.approval is not None and contain.approval.decided_at <= restarted
    assert result.watch is not None and result.watch.start >= restarted
    # The logging gap runs from the attacker's StopLogging to that restart.
    (gap,) = result.logging_gaps
    assert gap.trail == "management-events" and gap.restarted_at == restarted
    assert gap.stopped_at < gap.restarted_at
    # A trail found not logging that the attacker's calls do not explain is left for a
    # human; the one they stopped is explained.
    stopped = [item for item in result.open_items if "was not logging" in item]
    assert stopped == [
        "trail data-events was not logging when the case opened, and not by the attacker's "
        "credentials: find out who stopped it and when (containment started it again)"
    ]
    # The report is written last, from the closed case, and the case points at it; then
    # the case says it closed, naming the report, by each channel.
    changes = [(name, value) for name, value in fake.calls if not name.startswith("notify_")]
    assert changes[-1][0] == "write_report"
    assert sorted(fake.names()[-2:]) == ["notify_chat", "notify_sns"]
    closing = fake.notifications["sns"][-1]
    assert closing.kind is NotificationKind.CLOSED
    assert "post-incident-report.md" in closing.text
    written = changes[-1][1]
    assert written.status.phase is Phase.CLOSED
    assert result.report is not None
    assert result.report.markdown_report == fake.reports[0].markdown_report
    markdown = fake.report_markdown[0]
    for action in result.actions:
        assert f"| {action.id} |" in markdown
    assert "| alice |" in markdown
    assert "- Start logging on trail management-events: **" in markdown
    assert "**pending**" not in markdown
    assert "Logging gap on trail management-events" in markdown
    assert "delete_user backup-svc" in markdown
    for record in result.evidence:
        if record.name != "post-incident-report":
            assert record.sha256 in markdown
    await _record(handle, "trail_restarted_by_containment_not_restored_again")


async def test_a_declined_recovery_leaves_each_change_to_a_human(time_skipping_env):
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _attack_records()}
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await time_skipping_env.sleep(timedelta(minutes=50))
        status = await _wait_for(handle, _pending("eradicate-"))
        await handle.signal(CaseWorkflow.approve, _approval(status.pending_actions()[0].id))
        # The backdoor key died with its user: it is watched before recovery begins.
        await time_skipping_env.sleep(timedelta(minutes=50))
        status = await _wait_for(handle, _pending("recover-"))
        await handle.signal(
            CaseWorkflow.reject,
            ApprovalInput(
                action_id=status.pending_actions()[0].id, approver="bob", reason="change freeze"
            ),
        )
        result = await _result(handle)
    assert "restore_change" not in fake.names()
    assert [s.outcome for s in result.recovery] == ["declined", "declined"]
    assert "restore by hand: Restore the trust policy of role audit-readonly" in result.open_items
    assert "restore by hand: Start logging on trail management-events" in result.open_items
    (gap,) = result.logging_gaps
    assert gap.restarted_at is None
    assert result.phase is Phase.CLOSED and result.report is not None


def _minted_session_records() -> list[dict[str, Any]]:
    """The stolen key assumes a legitimate role and the role it made itself."""
    recorder = TrailRecorder(account_id=ACCOUNT, bucket="trail")
    actor = Actor(
        {"type": "AssumedRole", "accessKeyId": STOLEN_KEY, "arn": f"arn:aws:sts::{ACCOUNT}:x"},
        "198.51.100.23",
        "aws-cli",
    )
    at = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)
    steps: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("iam", "CreateRole", {"RoleName": "ops-support-role"}, {"Role": {}}),
    ]
    for role, key in [
        ("audit-readonly", "ASIAMINTEDAUDIT00001"),
        ("ops-support-role", "ASIAMINTEDOPS000001"),
    ]:
        steps.append(
            (
                "sts",
                "AssumeRole",
                {"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/{role}", "RoleSessionName": "x"},
                {"Credentials": {"AccessKeyId": key, "SessionToken": "t"}},
            )
        )
    for minute, (service, operation, request, response) in enumerate(steps):
        recorder.record(
            actor,
            service=service,
            operation=operation,
            region="us-east-1",
            at=at + timedelta(minutes=minute),
            request=request,
            response=response,
        )
    return recorder.records


async def test_minted_role_sessions_are_contained_before_they_are_investigated(
    time_skipping_env,
):
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _minted_session_records()}
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await time_skipping_env.sleep(timedelta(minutes=50))
        status = await _wait_for(handle, _pending("eradicate-"))
        await handle.signal(CaseWorkflow.approve, _approval(status.pending_actions()[0].id))
        # The session of the role that stays needs its own approval; the other ended
        # with the role the round removed.
        status = await _wait_for(handle, _pending("contain-role-"))
        (action,) = status.pending_actions()
        assert "audit-readonly" in action.title and "ASIAMINTEDAUDIT00001" in action.title
        revoked_before = [v.role_name for n, v in fake.calls if n == "revoke_role_sessions"]
        assert revoked_before == [ROLE]
        await handle.signal(CaseWorkflow.approve, _approval(action.id))
        result = await _result(handle)
    revocations = [v for n, v in fake.calls if n == "revoke_role_sessions"]
    assert [r.role_name for r in revocations] == [ROLE, "audit-readonly"]
    # The case's own cut-off stays the one its containment wrote.
    assert result.containment_cutoff == revocations[0].cutoff
    assert any("ended with role ops-support-role" in t.what for t in result.timeline)
    assert result.open_items == []
    # Both sessions are investigated in the next round.
    assert result.eradication[1].access_key_ids == ["ASIAMINTEDAUDIT00001", "ASIAMINTEDOPS000001"]
    await _record(handle, "minted_sessions_contained")


BACKDOOR_KEY = "AKIABACKDOORKEY00001"
THIRD_KEY = "AKIATHIRDGENKEY00001"


async def test_minted_credentials_are_watched_and_contained_again_when_they_still_work(
    time_skipping_env,
):
    fake = FakeAws()
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        BACKDOOR_KEY: _second_generation_records(),
    }
    fake.still_working = {BACKDOOR_KEY: 1}  # its first check after the rounds sees it work
    handle, result = await _approve_everything(time_skipping_env, fake)
    first, again = result.minted_watches
    # The federation token is a human's to contain, so only the two keys are watched.
    assert (first.access_key_ids, first.verdict) == ([BACKDOOR_KEY, THIRD_KEY], "failed")
    assert (again.access_key_ids, again.verdict) == ([BACKDOOR_KEY], "clean")
    recontain = next(a for a in result.actions if a.id.startswith("recontain-"))
    assert recontain.status is ActionStatus.DONE
    assert f"Deactivate {BACKDOOR_KEY} of user backup-svc" in recontain.steps
    # Each minted key was deactivated first thing in the round that found it, and the one
    # that still worked (its deactivation undone by the attacker) once more on its own.
    deactivated = [v for n, v in fake.calls if n == "deactivate_access_key"]
    assert [(d.user_name, d.access_key_id) for d in deactivated] == [
        ("backup-svc", BACKDOOR_KEY),
        ("svc-monitor", THIRD_KEY),
        ("backup-svc", BACKDOOR_KEY),
    ]
    assert [p.deactivated for p in result.eradication] == [[BACKDOOR_KEY], [THIRD_KEY], [], []]
    # The working key is investigated again in a fourth round, after its containment.
    assert [p.access_key_ids for p in result.eradication][-1] == [BACKDOOR_KEY]
    assert len(result.eradication) == 4
    assert Phase.CONTAINMENT_FAILED in [p.phase for p in result.phases]
    assert fake.names().index("deactivate_access_key") < fake.names().index("remove_resource")
    # Contained again before the fourth round investigates it.
    again_deactivated = [i for i, n in enumerate(fake.names()) if n == "deactivate_access_key"][-1]
    assert again_deactivated < max(
        i for i, n in enumerate(fake.names()) if n == "classify_credential_activity"
    )
    # The watch looks from the containment on, not from when it started.
    assert recontain.started_at is not None
    assert again.start == recontain.started_at.replace(microsecond=0) + timedelta(seconds=1)
    assert result.phase is Phase.CLOSED
    assert result.outcome == "partly contained: contained, but not ASIAFEDERATED0000001"
    report = fake.report_markdown[-1]
    assert (
        f"| Watch of minted credentials | {BACKDOOR_KEY}, {THIRD_KEY}: failed after 1 check |"
        in report
    )
    assert f"| Watch of minted credentials | {BACKDOOR_KEY}: clean after 9 checks |" in report
    await _record(handle, "minted_watch_failed_then_contained_again")


def _permission_records() -> list[dict[str, Any]]:
    """The stolen key rewrites policies of a role it did not make, beside its own user."""
    recorder, call = _recorder()
    role = "audit-readonly"
    document = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*"}]}'
    for name in ("audit-read", "ops-extra"):
        call(
            "iam",
            "PutRolePolicy",
            {"RoleName": role, "PolicyName": name, "PolicyDocument": document},
        )
    for arn in ("ReadOnlyAccess", "AdministratorAccess"):
        call(
            "iam",
            "AttachRolePolicy",
            {"RoleName": role, "PolicyArn": f"arn:aws:iam::aws:policy/{arn}"},
        )
    call(
        "iam",
        "DetachRolePolicy",
        {"RoleName": role, "PolicyArn": "arn:aws:iam::aws:policy/SecurityAudit"},
    )
    call("iam", "CreateUser", {"UserName": "backup-svc"}, {"User": {"UserName": "backup-svc"}})
    call(
        "iam",
        "PutUserPolicy",
        {"UserName": "backup-svc", "PolicyName": "all", "PolicyDocument": document},
    )
    call(
        "iam",
        "CreatePolicy",
        {"PolicyName": "escalate", "PolicyDocument": document},
        {"Policy": {"Arn": f"arn:aws:iam::{ACCOUNT}:policy/escalate"}},
    )
    call(
        "iam",
        "CreatePolicyVersion",
        {
            "PolicyArn": f"arn:aws:iam::{ACCOUNT}:policy/deploy",
            "PolicyDocument": document,
            "SetAsDefault": True,
        },
        {"PolicyVersion": {"VersionId": "v4", "IsDefaultVersion": True}},
    )
    return recorder.records


async def test_policies_the_attacker_rewrote_on_a_legitimate_role_are_restored_not_removed(
    time_skipping_env,
):
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _permission_records()}
    fake.prior_states = {
        "audit-read": "existed",
        "arn:aws:iam::aws:policy/ReadOnlyAccess": "existed",
        "ops-extra": "unknown",
    }
    handle, result = await _approve_everything(time_skipping_env, fake)
    (asked,) = [v for n, v in fake.calls if n == "find_prior_state"]
    # Only what was written onto a principal the attacker did not make is looked up.
    assert sorted(r.name for r in asked.resources) == [
        "arn:aws:iam::aws:policy/AdministratorAccess",
        "arn:aws:iam::aws:policy/ReadOnlyAccess",
        "audit-read",
        "ops-extra",
    ]
    removed = {(v.operation, v.name) for n, v in fake.calls if n == "remove_resource"}
    assert removed == {
        ("detach_role_policy", "arn:aws:iam::aws:policy/AdministratorAccess"),
        ("delete_role_policy", "ops-extra"),
        ("delete_user_policy", "all"),
        ("delete_user", "backup-svc"),
        ("delete_managed_policy", f"arn:aws:iam::{ACCOUNT}:policy/escalate"),
    }
    kept = {s.resource.name: s.outcome for s in result.eradication[0].steps if s.outcome == "kept"}
    assert kept == {"audit-read": "kept", "arn:aws:iam::aws:policy/ReadOnlyAccess": "kept"}
    (planned,) = [v for n, v in fake.calls if n == "plan_recovery"]
    assert sorted((c.kind, c.target, c.detail) for c in planned.changes) == [
        (ChangeKind.POLICY_VERSION, f"arn:aws:iam::{ACCOUNT}:policy/deploy", "v4"),
        (ChangeKind.ROLE_POLICY, "audit-readonly", "audit-read"),
        (
            ChangeKind.ROLE_POLICY_DETACHED,
            "audit-readonly",
            "arn:aws:iam::aws:policy/SecurityAudit",
        ),
    ]
    assert planned.attacker_keys == [STOLEN_KEY]
    assert any(
        "delete_role_policy ops-extra of audit-readonly" in item and "unknown" in item
        for item in result.open_items
    )
    await _record(handle, "permissions_restored_not_removed")
