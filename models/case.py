"""A case: one compromised credential, its phases, evidence, actions and approvals."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from models.finding import Finding
from models.principal import Credential
from playbook.classify import (
    AttackerChange,
    DataRead,
    FailedCall,
    Group,
    NewCredential,
    OtherChange,
)
from playbook.plan import RemovalStep
from playbook.signing import UnreadableKey, public_key


class Phase(StrEnum):
    TRIAGE = "triage"
    EVIDENCE = "evidence"
    AWAITING_APPROVAL = "awaiting_approval"
    CONTAINMENT = "containment"
    VERIFICATION = "verification"
    CONTAINED = "contained"
    WATCHING = "watching"
    ERADICATION = "eradication"
    RECOVERY = "recovery"
    CONTAINMENT_FAILED = "containment_failed"
    NEEDS_HUMAN = "needs_human"
    CLOSED = "closed"


class ActionKind(StrEnum):
    CONTAIN_INSTANCE_ROLE = "contain"  # revoke the role's sessions, stop+start, verify
    CONTAIN_USER_KEY = "contain-key"  # deactivate the key, deny the user's older tokens
    CONTAIN_ROLE_SESSION = "contain-role"  # revoke the role's sessions; flag who can assume it
    REMOVE_CONSOLE_ACCESS = "remove-console"  # delete the user's login profile
    RECONTAIN = "recontain"  # contain again after the watch saw the credential work
    ERADICATE = "eradicate"  # remove what the attacker made, in the plan's order
    RECOVER = "recover"  # restore logging and the configurations the attacker changed
    RETRY = "retry"  # run a failed step again
    MANUAL_CONTAINMENT = "manual"  # a human contains; Quench records it
    QUARANTINE = "quarantine"  # attach a service control policy to the member account
    LIFT_QUARANTINE = "lift-quarantine"  # detach and delete it once the case is done
    GO_LIVE = "go-live"  # a dry run's case made real: contain for real, and go on
    RELEASE = "release"  # undo one containment change after a false positive


class ActionStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # Not needed any more: the action offered in its place was decided first.
    WITHDRAWN = "withdrawn"


# The outcome of a removal or restore a dry run did not make, and how its action ends.
DRY_RUN = "dry_run"
DRY_RUN_DONE = "dry run: nothing changed"
# A dry run's containment: approved, and nothing changed.
DRY_RUN_CONTAINED = "dry run: approved, not contained"

# The kinds of action that contain a credential: the ones a policy may let proceed when
# nobody decides in time.
CONTAINMENT_KINDS = frozenset(
    {
        ActionKind.CONTAIN_INSTANCE_ROLE,
        ActionKind.CONTAIN_USER_KEY,
        ActionKind.CONTAIN_ROLE_SESSION,
        ActionKind.RECONTAIN,
        # Proposed before containing again, it must not hold that up where the policy
        # lets containment proceed on its own.
        ActionKind.QUARANTINE,
    }
)
# An organisation-level change, decided by whoever may decide containment again unless
# the policy names its own approvers.
ORGANIZATION_KINDS = frozenset({ActionKind.QUARANTINE, ActionKind.LIFT_QUARANTINE})


class NotificationKind(StrEnum):
    """Why a case tells people: it waits for them, it waited too long, it went ahead
    without them, or it is over."""

    NEEDS_HUMAN = "needs_human"
    ESCALATED = "escalated"
    PROCEEDED = "proceeded"
    CLOSED = "closed"


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class DecisionSignature(BaseModel):
    """An approver's Ed25519 signature of a decision (playbook/signing.py's message)."""

    model_config = ConfigDict(extra="forbid")

    signed_at: datetime
    signature: str = Field(min_length=1, max_length=200)


class Approval(BaseModel):
    action_id: str
    decision: Decision
    approver: str
    reason: str
    decided_at: datetime
    # Taken by the case itself when the deadline passed and the policy let it proceed.
    automatic: bool = False
    # Signed, where the policy asks for it: the signature, and the fingerprint of the
    # policy's key it verified with.
    signature: DecisionSignature | None = None
    signed_with: str | None = None


class Action(BaseModel):
    """A change Quench proposes or makes in AWS, with its approval and outcome."""

    id: str
    kind: ActionKind
    title: str
    steps: list[str] = Field(default_factory=list)
    status: ActionStatus
    requested_at: datetime
    approval: Approval | None = None
    # Approvals given so far under the two-person rule, before the one that decides.
    endorsements: list[Approval] = Field(default_factory=list)
    # Approvals it needs: two under the two-person rule.
    approvals_needed: int = 1
    # When the case escalates (or proceeds) if nobody has decided, and how often it has.
    deadline: datetime | None = None
    escalations: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: str | None = None
    # The account it acts in: the case's (empty in cases opened before Quench managed
    # several accounts).
    account_id: str = ""
    # Why it acts on something protected: then it needs two different people, and never
    # goes ahead on the policy's say-so.
    protected: str | None = None


class EvidenceRecord(BaseModel):
    """An evidence object in the evidence bucket and the SHA-256 it was written with."""

    name: str
    bucket: str
    key: str
    sha256: str
    size_bytes: int
    captured_at: datetime
    # The account it is about (empty in cases opened before Quench managed several).
    account_id: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class PhaseChange(BaseModel):
    phase: Phase
    at: datetime
    note: str = ""


class Note(BaseModel):
    author: str
    text: str
    at: datetime


class TimelineEntry(BaseModel):
    at: datetime
    what: str


def approved_by_people(kinds: list[ActionKind]) -> list[ActionKind]:
    """Kinds that may run without approval: never a retry, which would loop on a failure,
    a manual containment, which only a human can declare done, nor a dry run made real."""
    needing_people = {
        ActionKind.RETRY,
        ActionKind.MANUAL_CONTAINMENT,
        ActionKind.GO_LIVE,
    } & set(kinds)
    if needing_people:
        named = ", ".join(sorted(k.value for k in needing_people))
        raise ValueError(f"{named} actions always need a person's approval")
    return kinds


class QuarantinePolicy(BaseModel):
    """Where the case may quarantine its account with a service control policy: the
    organisation and the account that administers its policies (the management account
    or a delegated policy administrator), and who the policy never denies."""

    organization_id: str
    policy_account: str
    # Quench's own role in the account and the protected principals, as ARN patterns.
    exempt: list[str] = Field(default_factory=list)


class CasePolicy(BaseModel):
    """How a case runs, fixed when it opens so that replays and retries agree."""

    # The task queue of CloudTrail's long reads (each round's classification, the
    # investigation); None, as for cases opened before there was one: the case's own.
    scan_task_queue: str | None = None

    watch_seconds: int = Field(default=30 * 60, ge=1, le=24 * 3600)
    check_every_seconds: int = Field(default=5 * 60, ge=1, le=3600)
    # CloudTrail delivers within about 15 minutes: a window is not called clean before its
    # logs can be expected.
    delivery_lag_seconds: int = Field(default=15 * 60, ge=0, le=2 * 3600)
    # The compromise likely began before GuardDuty first saw it: everything the credential
    # did from this long before the first sighting is treated as the attacker's.
    compromise_margin_seconds: int = Field(default=3600, ge=0, le=7 * 24 * 3600)
    # Never removed by eradication, whatever the records say (as is the quench:protected tag).
    protected_names: list[str] = Field(default_factory=list)
    # Rounds of eradication (each for the credentials the previous round found) at most.
    max_eradication_rounds: int = Field(default=5, ge=1, le=50)
    # Continue as new after this many rounds (or sooner, when Temporal suggests it), so
    # one run's history stays small.
    rounds_per_run: int = Field(default=3, ge=1, le=50)
    # How far back before an attacker's change recovery looks in CloudTrail for the
    # configuration it replaced (LookupEvents keeps 90 days).
    restore_lookback_seconds: int = Field(default=30 * 24 * 3600, ge=3600, le=90 * 24 * 3600)
    # Who may decide each kind of action (by the name approvals carry); a kind not listed
    # may be decided by anyone.
    approvers: dict[ActionKind, list[str]] = Field(default_factory=dict)
    # Kinds of action that need two different people to approve (a rejection by either
    # decides at once).
    two_person: list[ActionKind] = Field(default_factory=list)
    # How long an approval may wait before the case escalates (and again each time this
    # passes), with an override per kind of action.
    approval_deadline_seconds: int = Field(default=30 * 60, ge=1, le=7 * 24 * 3600)
    approval_deadlines: dict[ActionKind, int] = Field(default_factory=dict)
    # Containment of a finding at least this severe proceeds on its own once its deadline
    # passes, and the case records that it did; None: containment always waits for a human.
    auto_contain_min_severity: float | None = Field(default=None, ge=0, le=10)
    # Where the case may quarantine its account; None: not in an organisation Quench may
    # act on.
    quarantine: QuarantinePolicy | None = None
    # Kinds of action that run without waiting for anyone (recorded as approved by the
    # policy). Never a retry, which would loop on a failure, a manual containment, which
    # only a human can declare done, nor a dry run made real.
    without_approval: list[ActionKind] = Field(default_factory=list)
    # A dry run: every read, plan and approval, and no change in AWS; what the case would
    # have changed is recorded, in order, until a person approves going live.
    dry_run: bool = False
    # Approvers' public keys (Ed25519: OpenSSH or PEM), by name: when any is set, every
    # decision by a person must be signed with a key held here for its approver.
    approver_keys: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("approver_keys")
    @classmethod
    def _keys_readable(cls, keys: dict[str, list[str]]) -> dict[str, list[str]]:
        for approver, texts in keys.items():
            if not texts:
                raise ValueError(f"{approver} holds no key: nobody could sign as {approver}")
            for text in texts:
                try:
                    public_key(text)
                except UnreadableKey as exc:
                    raise ValueError(f"the key of {approver}: {exc}") from None
        return keys

    @field_validator("without_approval")
    @classmethod
    def _always_approved_by_people(cls, kinds: list[ActionKind]) -> list[ActionKind]:
        return approved_by_people(kinds)

    @field_validator("approval_deadlines")
    @classmethod
    def _deadlines_in_range(cls, deadlines: dict[ActionKind, int]) -> dict[ActionKind, int]:
        for kind, seconds in deadlines.items():
            if not 1 <= seconds <= 7 * 24 * 3600:
                raise ValueError(f"the deadline of {kind.value} must be 1 to 604800 seconds")
        return deadlines

    def deadline_of(self, kind: ActionKind) -> int:
        return self.approval_deadlines.get(kind, self.approval_deadline_seconds)


class CaseChange(BaseModel):
    """A change the case's containment made that a release can undo after a false
    positive: a key it deactivated, or an inline policy it put (a revocation with its
    cut-off, or the deny-everything policy, without one)."""

    kind: Literal["key_deactivated", "policy_put"]
    user_name: str | None = None
    role_name: str | None = None
    access_key_id: str | None = None
    policy_name: str | None = None
    cutoff: datetime | None = None
    # The earlier cut-off of the policy it replaced (another case's, or a console
    # revocation): a release writes it back rather than deleting the policy.
    previous_cutoff: datetime | None = None
    made_at: datetime
    released_by: str | None = None  # the release action that undid it

    def describe(self) -> str:
        if self.kind == "key_deactivated":
            return f"reactivate access key {self.access_key_id} of user {self.user_name}"
        whose = f"user {self.user_name}" if self.user_name else f"role {self.role_name}"
        written = f" (cut-off {self.cutoff.isoformat()})" if self.cutoff else ""
        if self.previous_cutoff is not None:
            return (
                f"put back the earlier cut-off {self.previous_cutoff.isoformat()} of the "
                f"inline policy {self.policy_name}{written} on {whose}"
            )
        return f"delete the inline policy {self.policy_name}{written} from {whose}"


class WouldChange(BaseModel):
    """A change a dry run did not make, where it would have: the action (or phase) and
    the change, in the words of the action's step."""

    at: datetime
    action_id: str
    change: str


class Quarantine(BaseModel):
    """The case's service control policy on its account, while it is there."""

    policy_name: str
    policy_id: str = ""
    account_id: str
    attached_at: datetime | None = None
    lifted_at: datetime | None = None


class WatchStatus(BaseModel):
    """The containment watch so far (playbook 2.3)."""

    access_key_ids: list[str]
    start: datetime  # when containment was complete: calls after it must not work
    clean_at: datetime
    checks: int = 0
    denied_attempts: int = 0
    effective_calls: int = 0
    last_checked_at: datetime | None = None
    verdict: str | None = None  # clean, or failed
    # Trails found not logging at a check: what the watch reads misses calls made then.
    blind_trails: list[str] = Field(default_factory=list)
    # Why the trails' logging status could not be read at a check, if it could not.
    logging_unknown: str = ""
    # Where the denied attempts came from (their source addresses), and which calls.
    attempt_sources: list[str] = Field(default_factory=list)
    attempt_calls: dict[str, int] = Field(default_factory=dict)  # "iam:ListUsers AccessDenied"
    # What of the containment someone undid, as a check read it in IAM.
    undone: list[str] = Field(default_factory=list)


class EradicationPlan(BaseModel):
    """What the compromised credentials did and made, and how it comes out (playbook 3)."""

    round: int = 1
    compromise_time: datetime
    access_key_ids: list[str]
    impact: dict[Group, int]
    impact_examples: dict[Group, list[str]]
    failed_calls: int
    steps: list[RemovalStep]
    changes: list[AttackerChange]  # to restore in recovery, not to remove
    new_credentials: list[NewCredential]  # to investigate like the first one
    evidence_key: str
    # The minted keys deactivated before anything was removed: contained even when their
    # removal fails.
    deactivated: list[str] = Field(default_factory=list)
    # What the calls that failed were, with their errors; what the data-access calls read;
    # and changes others made in the same window, judged not the attacker's.
    failures: list[FailedCall] = Field(default_factory=list)
    data_reads: list[DataRead] = Field(default_factory=list)
    others_changes: list[OtherChange] = Field(default_factory=list)
    others_read: bool = False  # False: the round did not look (recorded before it could)


class RecoveryOperation(StrEnum):
    START_LOGGING = "start_logging"
    RECREATE_TRAIL = "recreate_trail"
    RESTORE_EVENT_SELECTORS = "restore_event_selectors"
    RESTORE_TRAIL_SETTINGS = "restore_trail_settings"
    RESTORE_TRUST_POLICY = "restore_trust_policy"
    RESTORE_INLINE_POLICY = "restore_inline_policy"
    REATTACH_POLICY = "reattach_policy"
    RESTORE_POLICY_VERSION = "restore_policy_version"


class RecoveryStep(BaseModel):
    """How one attacker change is undone (playbook 4): automatically, to a configuration
    taken from evidence, or by a human following `manual`."""

    change: AttackerChange
    description: str
    operation: RecoveryOperation | None = None  # None: nothing Quench can do itself
    restore_to: dict[str, Any] | None = None  # the configuration written back
    source: str | None = None  # where that configuration comes from
    manual: str | None = None  # what a human must do instead
    outcome: str | None = None  # restored, already_restored, not_needed, declined, manual
    detail: str | None = None
    done_at: datetime | None = None


class LoggingGap(BaseModel):
    """A time CloudTrail did not log: its records for that time will never exist."""

    trail: str
    stopped_at: datetime
    stopped_by: str
    restarted_at: datetime | None = None


class CaseSnapshot(BaseModel):
    """An EBS snapshot taken as the case's evidence (tagged with the case)."""

    snapshot_id: str
    volume_id: str
    instance_id: str | None = None
    started_at: datetime | None = None


class CaseReportRef(BaseModel):
    """The post-incident report, in the evidence bucket as JSON and as Markdown."""

    json_report: EvidenceRecord
    markdown_report: EvidenceRecord


class EradicationProgress(BaseModel):
    """Where the eradication rounds stand: carried across continue-as-new."""

    compromise_time: datetime
    pending: list[str]  # access keys the next round investigates
    investigated: list[str]
    rounds_done: int
    outcome: str  # the case's outcome once the rounds are done
    contained: list[str] = Field(default_factory=list)  # minted credentials now contained
    contained_from: datetime | None = None  # when the first of them was
    watched: list[str] = Field(default_factory=list)  # minted credentials watched already


class CaseResume(BaseModel):
    """A case continued as new: everything it knew, and where it was."""

    status: "CaseStatus"
    action_seq: int
    eradication: EradicationProgress


class CaseInput(BaseModel):
    case_id: str
    finding: Finding
    policy: CasePolicy = Field(default_factory=CasePolicy)
    resume: CaseResume | None = None


# Text from people: surrounding spaces dropped, and something must be left.
Words = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class ApprovalInput(BaseModel):
    """What `approve` and `reject` carry: which action, who decides, and why; signed by
    the approver's key where the approval policy asks for it (playbook/signing.py)."""

    model_config = ConfigDict(extra="forbid")

    action_id: Words = Field(max_length=100)
    approver: Words = Field(max_length=200)
    reason: Words = Field(max_length=2000)
    signature: DecisionSignature | None = None


class DecisionResult(BaseModel):
    """What a decision sent as an update did: the action's status, and how many of the
    approvals it needs it has."""

    action_id: str
    status: ActionStatus
    approvals: int
    needed: int


class NoteResult(BaseModel):
    notes: int


class NoteInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    author: Words = Field(max_length=200)
    text: Words = Field(max_length=10000)


class FalsePositiveInput(BaseModel):
    """Who says the case is a false positive, and why."""

    model_config = ConfigDict(extra="forbid")

    by: Words = Field(max_length=200)
    reason: Words = Field(max_length=2000)
    signature: DecisionSignature | None = None


class FalsePositiveResult(BaseModel):
    released: list[str]  # the release actions offered, one per change


class RejectedSignal(BaseModel):
    """A decision, note or finding the case refused, kept so nothing is silently ignored."""

    signal: str
    action_id: str | None
    by: str
    reason: str
    at: datetime
    # What a malformed signal carried, as sent (cut short): the sender's own words.
    sent: str | None = None


class InvestigationRef(BaseModel):
    """Where the case's investigation is kept, and what stands out in it."""

    investigation: EvidenceRecord  # the whole investigation, JSON
    chart: EvidenceRecord  # call volume against the baseline, PNG
    principal_arn: str
    hours_above_baseline: int
    new_source_ips: list[str]
    new_api_calls: list[str]
    credentials: list[str] = Field(default_factory=list)
    # The baseline's counted parts, kept to investigate again without counting again.
    baseline_parts: list[EvidenceRecord] = Field(default_factory=list)


class InvestigationInput(BaseModel):
    """What the investigation workflow reads: the case's credentials from the likely
    compromise to the end of its window, and the principal behind them."""

    case_id: str
    account_id: str
    credentials: list[str]
    findings: list[Finding]
    scope_start: datetime
    scope_end: datetime
    # The principal's evidence snapshot (its ARN); without one, the ARN it resolved to.
    principal_evidence: EvidenceRecord | None = None
    principal_arn: str | None = None
    # The baseline an earlier investigation of the case counted, reused as it is.
    baseline_parts: list[EvidenceRecord] = Field(default_factory=list)
    # The evidence names: the investigation (JSON) and its chart.
    name: str = Field(default="investigation", pattern=r"^[a-z0-9][a-z0-9-]{0,60}$")


class CaseStatus(BaseModel):
    """What the `status` query returns and what the case workflow returns at the end."""

    case_id: str
    phase: Phase
    outcome: str | None = None
    account_id: str
    credential: Credential | None = None
    # Why Quench does not contain the credential on its own (protected, or Quench itself);
    # None: it does, after approval.
    hands_off: str | None = None
    quench_own: bool = False  # the credential is Quench's own: nothing is done to it
    # The protected principal's names, once two people approved containing it anyway.
    approved_protected: list[str] = Field(default_factory=list)
    # A dry run until a person approves going live: nothing is changed in AWS meanwhile,
    # and `would` says, in order, what would have been.
    dry_run: bool = False
    would: list[WouldChange] = Field(default_factory=list)
    # The dry run's eradication plans and recovery, kept apart once the case went live.
    dry_run_eradication: list[EradicationPlan] = Field(default_factory=list)
    dry_run_recovery: list[RecoveryStep] = Field(default_factory=list)
    went_live_at: datetime | None = None
    # Whether decisions must be signed with the approver's key (the policy holds keys).
    signed_decisions: bool = False
    # What containment changed that a release can undo, and who marked the case a false
    # positive (a note: by, why, when).
    made: list[CaseChange] = Field(default_factory=list)
    false_positive: Note | None = None
    findings: list[Finding]
    phases: list[PhaseChange]
    actions: list[Action]
    approvals: list[Approval]
    refused: list[RejectedSignal] = Field(default_factory=list)
    evidence: list[EvidenceRecord]
    notes: list[Note] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    containment_cutoff: datetime | None = None
    # When the credential was first cut off: the case's revocation or token deny written,
    # as the case learned it (evidence kept before it was kept before any change).
    cut_off_at: datetime | None = None
    verified_access_key_id: str | None = None
    watch: WatchStatus | None = None
    # The watches of the credentials the attacker minted, once the rounds contained them.
    minted_watches: list[WatchStatus] = Field(default_factory=list)
    eradication: list[EradicationPlan] = Field(default_factory=list)  # one a round
    open_items: list[str] = Field(default_factory=list)  # what a human must still do
    # Credentials the case found (minted by the attacker) that it could not contain.
    uncontained: list[str] = Field(default_factory=list)
    recovery: list[RecoveryStep] = Field(default_factory=list)
    trails_found_stopped: list[str] = Field(default_factory=list)  # when the case opened
    # Trails found stopped that containment started again, and when: the watch reads them.
    trails_restarted: dict[str, datetime] = Field(default_factory=dict)
    logging_gaps: list[LoggingGap] = Field(default_factory=list)
    report: CaseReportRef | None = None
    investigation: InvestigationRef | None = None
    # Where the case keeps its evidence, under cases/: its id, then when and in which run
    # it opened, so a case opened again under the same id (its finding delivered after it
    # closed) never reads or overwrites an earlier case's evidence, snapshots or report.
    # Cases recorded before kept theirs under the case id alone.
    evidence_folder: str | None = None

    @property
    def folder(self) -> str:
        """The case's evidence folder under cases/."""
        return self.evidence_folder or self.case_id

    # The EBS snapshots tagged with the case, looked up before the report.
    snapshots: list[CaseSnapshot] = Field(default_factory=list)
    # The organisation-level quarantine, once attached.
    quarantine: Quarantine | None = None

    def pending_actions(self) -> list[Action]:
        return [a for a in self.actions if a.status is ActionStatus.PENDING_APPROVAL]


CaseResume.model_rebuild()
