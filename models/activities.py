"""Inputs and results of the activities: one model in, one model out."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.case import (
    CaseChange,
    CaseSnapshot,
    CaseStatus,
    EvidenceRecord,
    NotificationKind,
    RecoveryStep,
)
from models.finding import Finding
from models.principal import Credential
from playbook.classify import ActivityReport, AttackerChange, AttackerResource


class InAccount(BaseModel):
    """The input of an activity that acts in the case's account: it runs there, through
    the role Quench assumes in a session named for the case (activities/accounts.py).

    Empty in the histories of cases opened before Quench managed several accounts: those
    act with the worker's own credentials, as they did when they opened.
    """

    account_id: str = ""
    case_id: str = ""


class ChangesInAccount(InAccount):
    """The input of an activity that changes a principal, an instance or a resource: it
    refuses to touch Quench's own identity or anything protected (activities/hands_off.py),
    by the names here and the quench:protected tag."""

    protected_names: list[str] = Field(default_factory=list)
    # Protected principals two people approved containing anyway, as `user:NAME`,
    # `role:NAME` or `instance:ID` (never Quench's own).
    approved_protected: list[str] = Field(default_factory=list)


class ResolvePrincipalInput(InAccount):
    finding: Finding
    protected_names: list[str] = Field(default_factory=list)


class ResolvePrincipalResult(BaseModel):
    credential: Credential
    # Why Quench must not contain this credential on its own (it is protected, or it is
    # Quench itself), and whether it is Quench itself; None: it may, after approval.
    hands_off: str | None = None
    quench_own: bool = False


class StoreEvidenceInput(BaseModel):
    case_id: str
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,120}$")
    document: dict[str, Any]
    account_id: str = ""  # the account it is about


class CaptureRoleInput(InAccount):
    role_name: str


class CaptureInstanceInput(InAccount):
    instance_id: str


class CaptureInstanceResult(BaseModel):
    evidence: EvidenceRecord
    volume_ids: list[str]
    state: str  # the instance state when the evidence was taken


class SnapshotVolumesInput(InAccount):
    instance_id: str
    volume_ids: list[str]


class SnapshotVolumesResult(BaseModel):
    snapshot_ids: dict[str, str]  # volume id -> snapshot id
    evidence: EvidenceRecord


class CloudTrailSliceInput(InAccount):
    account_id: str
    access_key_id: str
    start: datetime
    end: datetime


class CloudTrailSliceResult(BaseModel):
    evidence: EvidenceRecord
    event_count: int


# Calls AWS answers for any valid credential, whatever its policies say.
NEEDS_NO_PERMISSION = frozenset({("sts.amazonaws.com", "GetCallerIdentity")})


class TrailEvent(BaseModel):
    """One CloudTrail record, reduced to what a responder reads."""

    event_id: str
    event_time: datetime
    event_name: str
    event_source: str
    aws_region: str
    source_ip: str
    user_agent: str
    access_key_id: str
    principal_arn: str | None = None
    error_code: str | None = None
    denied: bool  # refused for lack of permission: the credential is contained
    session_issued_at: datetime | None = None

    @property
    def worked(self) -> bool:
        """The call shows the credential can act: not refused, and not one AWS answers for
        any valid key whatever its policies say (GetCallerIdentity, an explicit deny
        notwithstanding), which shows only the attacker trying."""
        return not self.denied and (self.event_source, self.event_name) not in NEEDS_NO_PERMISSION


class CheckActivityInput(InAccount):
    account_id: str
    access_key_ids: list[str]
    start: datetime
    end: datetime


class ClassifyActivityInput(InAccount):
    account_id: str
    access_key_ids: list[str]
    start: datetime  # the likely compromise time: everything after it is the attacker's
    end: datetime


class ClassifyActivityResult(BaseModel):
    report: ActivityReport
    evidence: EvidenceRecord  # every record the report was made from


class RemoveResourceInput(ChangesInAccount):
    operation: str  # a removal-plan operation: delete_user, terminate_instance...
    name: str
    owner: str | None = None


class CaptureLaunchedInput(InAccount):
    """A resource the attacker launched (an instance, a Lambda function), to keep as
    evidence before its removal."""

    kind: Literal["instance", "function"]
    name: str  # the instance id, or the function's name


class CaptureLaunchedResult(BaseModel):
    evidence: EvidenceRecord | None  # None: it was already gone, nothing to keep
    detail: str
    missing: str | None = None  # what a denied read left out of the evidence


class ListCaseSnapshotsInput(InAccount):
    """The EBS snapshots tagged with the case's evidence folder."""


class ListCaseSnapshotsResult(BaseModel):
    snapshots: list[CaseSnapshot]


class RemoveResourceResult(BaseModel):
    outcome: str  # removed, already_gone, skipped
    detail: str
    evidence: EvidenceRecord | None = None  # a deleted user or role, as it was


class CheckActivityResult(BaseModel):
    events: list[TrailEvent]  # calls that worked first; at most a hundred
    denied_count: int
    effective_count: int
    # Trails whose files the source reads that were not logging at the check: calls made
    # while one is off are in no file, and the watch cannot see them.
    not_logging: list[str] = Field(default_factory=list)
    # Why whether the trails were logging could not be read (a denied GetTrailStatus):
    # the calls were still read, but the watch cannot say it saw them all.
    logging_unknown: str = ""


class RoleTrustInput(InAccount):
    role_name: str
    account_id: str


class TrustedPrincipal(BaseModel):
    """One principal a role's trust policy lets assume it."""

    kind: str  # AWS, Service, Federated, or * for anyone
    value: str
    outside_account: bool  # another account, or anyone: worth a human's look


class RoleTrustResult(BaseModel):
    role_name: str
    principals: list[TrustedPrincipal]


class CaptureUserInput(InAccount):
    user_name: str


class CaptureUserResult(BaseModel):
    evidence: EvidenceRecord
    has_login_profile: bool
    quarantine_policies: list[str]  # AWS's own AWSCompromisedKeyQuarantine* policies


class AccessKeyInput(ChangesInAccount):
    user_name: str
    access_key_id: str


class AccessKeyResult(BaseModel):
    access_key_id: str
    status: str
    changed: bool


class DenyUserTokensInput(ChangesInAccount):
    user_name: str
    cutoff: datetime  # decided by the workflow


class UserInput(ChangesInAccount):
    user_name: str


class ReleaseChangeInput(InAccount):
    change: CaseChange


class ReleaseChangeResult(BaseModel):
    outcome: Literal["released", "already_released", "kept"]
    detail: str


class ChangeResult(BaseModel):
    changed: bool
    detail: str = ""


class RevokeRoleSessionsInput(ChangesInAccount):
    role_name: str
    cutoff: datetime  # decided by the workflow, so a retry writes the same policy


class RevokeRoleSessionsResult(BaseModel):
    """Also the result of denying a user's older tokens: the same policy on the user."""

    policy_name: str
    cutoff_in_effect: datetime
    changed: bool
    # Why the policy in place could not be read first (so a later cut-off someone else
    # set may have been replaced); empty when it was read.
    unread: str = ""
    # The cut-off of the policy it replaced, an earlier one; None when there was none.
    replaced: datetime | None = None


class InstanceInput(ChangesInAccount):
    instance_id: str


class InstanceStateResult(BaseModel):
    instance_id: str
    state: str
    changed: bool


class ProbeInstanceCredentialsInput(InAccount):
    instance_id: str
    role_name: str


class ProbeInstanceCredentialsResult(BaseModel):
    """What the instance's metadata service serves now, with the secret fields dropped."""

    instance_id: str
    role_name: str
    access_key_id: str
    code: str
    last_updated: datetime | None = None
    expiration: datetime | None = None
    command_id: str


class CaptureTrailsInput(InAccount):
    """The account's trails, as the case found them."""


class CaptureTrailsResult(BaseModel):
    evidence: EvidenceRecord
    trails: list[str]
    not_logging: list[str]


class StartTrailsLoggingInput(InAccount):
    trail_names: list[str]


class StartTrailsLoggingResult(BaseModel):
    started: list[str] = Field(default_factory=list)
    already_logging: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)  # deleted since: recovery recreates them


class FindPriorStateInput(InAccount):
    """Policies the attacker wrote onto users and roles it did not make: were they there
    before it wrote them?"""

    account_id: str
    resources: list[AttackerResource]
    attacker_keys: list[str]  # every credential of the attacker known so far
    lookback_seconds: int


class PriorState(BaseModel):
    resource: AttackerResource
    # existed: the same policy was there before (restore or keep it); absent: it was not
    # (remove it); unknown: the user or role is older than the CloudTrail window.
    state: Literal["existed", "absent", "unknown"]
    source: str  # the CloudTrail record or the fact the state rests on


class FindPriorStateResult(BaseModel):
    states: list[PriorState]


class PlanRecoveryInput(InAccount):
    account_id: str
    changes: list[AttackerChange]
    trail_evidence: EvidenceRecord | None  # the trails as the case found them
    lookback_seconds: int
    attacker_keys: list[str] = Field(default_factory=list)  # whose calls are not "before"


class PlanRecoveryResult(BaseModel):
    steps: list[RecoveryStep]


class RestoreChangeInput(ChangesInAccount):
    step: RecoveryStep


class RestoreChangeResult(BaseModel):
    outcome: str  # restored, or already_restored
    detail: str
    evidence: EvidenceRecord | None = None  # what was there before the restore


class WriteReportInput(BaseModel):
    status: CaseStatus
    written_at: datetime


class WriteReportResult(BaseModel):
    json_report: EvidenceRecord
    markdown_report: EvidenceRecord


class NotifyInput(BaseModel):
    """A message about a case for the people who follow it (SNS, chat)."""

    case_id: str
    # The same for every attempt and unique in the case: receivers drop repeats by it, and
    # a FIFO topic deduplicates on it.
    notification_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    kind: NotificationKind
    subject: str = Field(max_length=100)
    text: str


class NotifyResult(BaseModel):
    channel: Literal["sns", "chat"]
    sent: bool
    detail: str


class InvestigateInput(InAccount):
    """The investigation of a case's credentials and the principal behind them."""

    account_id: str
    credentials: list[str]
    findings: list[Finding]
    scope_start: datetime
    scope_end: datetime
    baseline_days: int = Field(default=45, ge=1, le=89)
    # The principal's evidence snapshot (its ARN and policies); without one (root, an
    # unknown principal) the ARN the finding resolved to.
    principal_evidence: EvidenceRecord | None = None
    principal_arn: str | None = None
    # The baseline, counted beforehand part by part (a region's day each) and kept as
    # evidence; without them the activity counts the baseline itself.
    baseline_parts: list[EvidenceRecord] | None = None
    # The scope's records, read beforehand part by part and kept as evidence; without
    # them the activity reads the scope itself.
    scope_parts: list[EvidenceRecord] | None = None
    # The evidence names: the investigation (JSON) and its chart (name + "-volume").
    name: str = Field(default="investigation", pattern=r"^[a-z0-9][a-z0-9-]{0,60}$")


class PlanReadsInput(InAccount):
    """A window of the trail to read in parts; `end` is not part of it. The principal
    whose calls are read: its evidence snapshot (which holds its ARN with its path), or
    the ARN the finding resolved to."""

    account_id: str
    start: datetime
    end: datetime
    principal_evidence: EvidenceRecord | None = None
    principal_arn: str | None = None


class ReadUnit(BaseModel):
    """One part of a large read: a region's records in one UTC day (or less of it)."""

    region: str
    start: datetime
    end: datetime


class ReadPlan(BaseModel):
    """The parts of a read, and the principal's ARN resolved once for all of them."""

    principal_arn: str | None
    units: list[ReadUnit]


class CountBaselineInput(InAccount):
    account_id: str
    principal_arn: str | None
    unit: ReadUnit


class CountBaselineResult(BaseModel):
    counts: EvidenceRecord  # the part's BaselineCounts, as evidence
    calls: int


class ReadScopeInput(InAccount):
    """One part of the investigation's scope: the calls of the principal and of the
    credentials, in one region's day."""

    account_id: str
    credentials: list[str]
    principal_arn: str | None
    unit: ReadUnit
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,60}$")


class ReadScopeResult(BaseModel):
    records: EvidenceRecord  # {"records": [...]}, as evidence
    count: int


class QuarantineInput(InAccount):
    """The case's service control policy on `target_account_id`, made and attached (or
    lifted) from the organisation's policy account, `account_id`, where it acts."""

    target_account_id: str = Field(pattern=r"^\d{12}$")
    policy_name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    document: dict[str, Any] = Field(default_factory=dict)  # only to attach


class QuarantineResult(BaseModel):
    policy_id: str
    changed: bool
    detail: str


class ContainmentInPlaceInput(InAccount):
    """What containment put in place, to read back: the role's revocation policy, or the
    user's key and token-deny policy, each as of the case's cut-off."""

    cutoff: datetime
    role_name: str | None = None
    user_name: str | None = None
    access_key_id: str | None = None


class ContainmentInPlaceResult(BaseModel):
    undone: list[str]  # empty: all still in place
