"""The post-incident report (playbook 5): built from the case alone, as a model for JSON and
as Markdown for people. Pure: no AWS, no clock (the time it is written is given)."""

import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel, Field

from models.case import (
    DRY_RUN_DONE,
    ActionKind,
    ActionStatus,
    Approval,
    CaseSnapshot,
    CaseStatus,
    EvidenceRecord,
    LoggingGap,
    Phase,
    WatchStatus,
)
from models.investigation import Investigation
from models.principal import CredentialKind
from playbook.classify import DataRead, FailedCall, Group, OtherChange
from playbook.investigation import markdown_section
from playbook.signing import MESSAGE_KIND
from playbook.undone import NOT_CONTAINED, containment_verdict
from playbook.words import counted


class Milestones(BaseModel):
    """When each part of the response happened, and how long it took."""

    first_seen: datetime  # the first call GuardDuty flagged
    compromise_time: datetime | None  # from when the credential's calls count as the attacker's
    response_started: datetime  # the case opened
    contained: datetime | None = None
    watch_result: str | None = None  # clean or failed, and when
    minted_watch_results: list[str] = Field(default_factory=list)  # the minted credentials'
    eradicated: datetime | None = None  # only once every removal is done
    # "partly: ..." while a removal failed, was declined or never ran; None when complete.
    eradication_partly: str | None = None
    recovered: datetime | None = None
    closed: datetime | None = None
    time_to_contain: timedelta | None = None  # from the response start
    exposure: timedelta | None = None  # from the first sighting to containment
    time_to_eradicate: timedelta | None = None  # from the response start


class Impact(BaseModel):
    group: Group
    calls: int
    examples: list[str]


class ReportAction(BaseModel):
    id: str
    title: str
    status: ActionStatus
    requested_at: datetime
    decision: str | None = None
    approver: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    # Times its deadline passed with nobody deciding; and whether the case went ahead on
    # its own, as the policy allowed.
    escalations: int = 0
    automatic: bool = False
    # Who approved first under the two-person rule.
    endorsed_by: list[str] = Field(default_factory=list)
    outcome: str | None = None

    def decision_text(self) -> str:
        text = self.decision or self.status.value
        if self.automatic:
            text += " (by the case policy, without a person)"
        if self.escalations:
            text += f" after {self.escalations} escalation{'s' if self.escalations > 1 else ''}"
        return text

    def approvers_text(self) -> str | None:
        return ", ".join([*self.endorsed_by, self.approver]) if self.approver else None


class RemovedResource(BaseModel):
    round: int
    what: str
    made_by: str
    outcome: str | None
    # Done only on this retry, after failing first with `failed_before`.
    retried_in: str | None = None
    failed_before: str | None = None

    def outcome_text(self) -> str:
        text = in_words(self.outcome) if self.outcome else "not carried out"
        if self.retried_in:
            text += f" on its retry ({self.retried_in}); it first failed: {self.failed_before}"
        return text


class ContainmentFacts(BaseModel):
    """What containment did, with the times and ids a reviewer checks."""

    cutoff: datetime | None = None  # sessions or tokens issued before it are denied
    cut_off_at: datetime | None = None  # when the case made that cut-off
    instance_id: str | None = None
    stopped_at: list[datetime] = Field(default_factory=list)
    started_at: list[datetime] = Field(default_factory=list)
    new_access_key_id: str | None = None  # what the instance holds after its restart
    snapshots: list[CaseSnapshot] = Field(default_factory=list)


class WatchAttempts(BaseModel):
    """The denied attempts a containment watch saw: how many, from where, which calls."""

    access_key_ids: list[str]
    attempts: int
    sources: list[str]
    calls: dict[str, int] = Field(default_factory=dict)


class RecoveryLine(BaseModel):
    what: str
    outcome: str | None
    source: str | None = None


class LessonItem(BaseModel):
    item: str
    why: str | None = None  # what in this case points at it
    done: bool = False


class CaseReport(BaseModel):
    case_id: str
    account_id: str
    written_at: datetime
    phase: Phase
    outcome: str | None
    # contained, partly contained or not contained: the headline.
    containment: str = NOT_CONTAINED
    # Whether eradication ran at all: "nothing found" is said only when it looked.
    eradication_ran: bool = False
    credential: str | None
    credential_kind: CredentialKind | None
    principal: str | None
    findings: list[str]
    root_cause: str
    milestones: Milestones
    impact: list[Impact]
    failed_calls: int
    credentials_investigated: list[str]
    removed: list[RemovedResource]
    recovery: list[RecoveryLine]
    logging_gaps: list[LoggingGap]
    actions: list[ReportAction]
    refused_signals: list[str]
    evidence: list[EvidenceRecord]
    open_items: list[str]
    notes: list[str]
    lessons: list[LessonItem] = Field(default_factory=list)
    # The investigation from CloudTrail, and its chart's file beside the report.
    investigation: Investigation | None = None
    investigation_chart: str | None = None
    containment_facts: ContainmentFacts = Field(default_factory=ContainmentFacts)
    watch_attempts: list[WatchAttempts] = Field(default_factory=list)
    failures: list[FailedCall] = Field(default_factory=list)  # the calls that failed, by error
    data_reads: list[DataRead] = Field(default_factory=list)
    others_changes: list[OtherChange] = Field(default_factory=list)
    others_read: bool = False  # whether any round looked for them
    # Evidence kept of what eradication removed, before it went.
    removed_evidence: list[str] = Field(default_factory=list)
    # Every decision signed with an approver's key, as the case verified it.
    signed: list[Approval] = Field(default_factory=list)
    # A dry run (or one until it went live): the changes it did not make, in order.
    dry_run: bool = False
    went_live_at: datetime | None = None
    would: list[str] = Field(default_factory=list)


# What the rounds count, added up over them.
Counted = TypeVar("Counted", FailedCall, DataRead)

# Outcomes as people say them.
_OUTCOME_WORDS = {
    "already_gone": "already gone",
    "already_restored": "already restored",
    "not_needed": "nothing to restore",
    "manual": "left to a human",
    "skipped": "skipped (protected)",
    "dry_run": "not made (dry run)",
}
# A removal that is done: gone, or rightly left alone.
_REMOVAL_DONE = frozenset({"removed", "already_gone", "skipped", "kept"})
# An outcome's name inside a sentence: lower case words joined by underscores.
_OUTCOME_NAME = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")
# Timeline notes of containment's stop and start of the instance.
_ROTATION_NOTE = re.compile(r"^instance (\S+) (stopped|started)$")


def in_words(outcome: str | None) -> str:
    """An outcome (`already_restored`) as words (`already restored`)."""
    if outcome is None:
        return "pending"
    if outcome in _OUTCOME_WORDS:
        return _OUTCOME_WORDS[outcome]
    # Outcome words (already_gone) as words; any other name (QUENCH_LAB_FAULTS) as it is.
    return _OUTCOME_NAME.sub(lambda m: m.group(0).replace("_", " "), outcome)


def _first_phase(status: CaseStatus, phase: Phase) -> datetime | None:
    return next((p.at for p in status.phases if p.phase is phase), None)


def _blind(watch: WatchStatus) -> str:
    """What a watch could not see: calls made while a trail it read was off."""
    if not watch.blind_trails:
        return ""
    return f" (blind while trail {', '.join(watch.blind_trails)} was not logging)"


def _last_phase(status: CaseStatus, phase: Phase) -> datetime | None:
    return next((p.at for p in reversed(status.phases) if p.phase is phase), None)


def _root_cause(status: CaseStatus) -> str:
    finding = status.findings[0]
    credential = status.credential
    source = (
        finding.api_call.remote_ip.ip_address
        if finding.api_call and finding.api_call.remote_ip
        else None
    )
    where = f" from {source}" if source else ""
    if credential is None:
        key = finding.access_key.access_key_id
        return f"{finding.type}: the principal behind {key} was not resolved"
    principal = credential.principal
    if credential.kind is CredentialKind.INSTANCE_ROLE_SESSION:
        return (
            f"The session credentials of role {principal.role_name} were taken from instance "
            f"{principal.instance_id} (its metadata service) and used outside it{where} "
            f"({finding.type})"
        )
    if credential.kind is CredentialKind.IAM_USER_KEY:
        return (
            f"The long-term access key {credential.access_key_id} of IAM user "
            f"{principal.user_name} was leaked and used{where} ({finding.type})"
        )
    if credential.kind is CredentialKind.ROLE_SESSION:
        return (
            f"A session of role {principal.role_name} was used{where} ({finding.type}); find "
            "how it was obtained from the principals its trust policy admits"
        )
    kind = credential.kind.value
    return f"{kind} credential {credential.access_key_id} used{where} ({finding.type})"


def _lessons(status: CaseStatus) -> list[LessonItem]:
    credential = status.credential
    lessons = []
    if credential and credential.kind is CredentialKind.INSTANCE_ROLE_SESSION:
        lessons.append(
            LessonItem(
                item="Require IMDSv2 (HttpTokens=required, hop limit 1) on every instance, and "
                "close whatever let the attacker reach the metadata service",
                why=f"the session of {credential.principal.role_name} left the instance",
            )
        )
    if credential and credential.kind is CredentialKind.IAM_USER_KEY:
        lessons.append(
            LessonItem(
                item="Replace long-term access keys with roles or IAM Identity Center, and scan "
                "repositories and build logs for keys",
                why=f"{credential.access_key_id} of {credential.principal.user_name} leaked",
            )
        )
    removed_kinds = {
        step.resource.kind.value
        for plan in status.eradication
        for step in plan.steps
        if step.outcome in {"removed", "already_gone"}
    }
    if removed_kinds & {"user", "access_key", "role", "login_profile"}:
        lessons.append(
            LessonItem(
                item="Review IAM policies for least privilege: the compromised principal could "
                "create users, keys or roles; consider an SCP or permission boundary on "
                "iam:Create*",
                why="the attacker made identities: " + ", ".join(sorted(removed_kinds)),
            )
        )
    if status.logging_gaps or any(r.change.kind.value.startswith("trail") for r in status.recovery):
        lessons.append(
            LessonItem(
                item="Protect CloudTrail with an SCP denying cloudtrail:StopLogging, DeleteTrail, "
                "UpdateTrail and PutEventSelectors outside a break-glass role",
                why="the attacker covered its tracks",
            )
        )
    lessons += [
        LessonItem(item="Rotate every credential that may have been exposed"),
        LessonItem(item="Enable or extend monitoring (GuardDuty, CloudTrail, AWS Config)"),
        LessonItem(item="Test the affected applications and that legitimate users still work"),
        LessonItem(item="Notify authorities or customers where regulation requires it"),
        LessonItem(item="Update the playbook with what this case taught"),
    ]
    return lessons


def _duration(start: datetime | None, end: datetime | None) -> timedelta | None:
    return end - start if start is not None and end is not None else None


def build_report(
    status: CaseStatus, written_at: datetime, investigation: Investigation | None = None
) -> CaseReport:
    """The report of a case; the investigation, when the case has one, is read from its
    evidence by the caller."""
    finding = status.findings[0]
    first_seen = min(f.first_seen for f in status.findings)
    response_started = status.phases[0].at
    contained = _first_phase(status, Phase.CONTAINED)
    eradicated, partly = _eradication(status)
    recover_actions = [
        a
        for a in status.actions
        if a.kind is ActionKind.RECOVER and a.finished_at and a.outcome != DRY_RUN_DONE
    ]
    recovered = max((a.finished_at for a in recover_actions if a.finished_at), default=None)
    if recovered is None and status.recovery and all(s.done_at for s in status.recovery):
        # Nothing left to approve (containment had restarted the trail): done when its
        # steps were.
        recovered = max(s.done_at for s in status.recovery if s.done_at)
    watch = status.watch
    milestones = Milestones(
        minted_watch_results=[
            f"{', '.join(w.access_key_ids)}: {w.verdict} after "
            f"{counted(w.checks, 'check')}{_blind(w)}"
            for w in status.minted_watches
            if w.verdict
        ],
        first_seen=first_seen,
        compromise_time=status.eradication[0].compromise_time if status.eradication else None,
        response_started=response_started,
        contained=contained,
        watch_result=(
            f"{watch.verdict} after {counted(watch.checks, 'check')}, last at "
            f"{watch.last_checked_at.isoformat() if watch.last_checked_at else '-'}"
            f"{_blind(watch)}"
            if watch and watch.verdict
            else None
        ),
        eradicated=eradicated,
        eradication_partly=partly,
        recovered=recovered,
        closed=_last_phase(status, Phase.CLOSED),
        time_to_contain=_duration(response_started, contained),
        exposure=_duration(first_seen, contained),
        time_to_eradicate=_duration(response_started, eradicated),
    )
    calls: Counter[Group] = Counter()
    examples: dict[Group, list[str]] = {}
    for plan in status.eradication:
        for group, count in plan.impact.items():
            calls[group] += count
            bucket = examples.setdefault(group, [])
            bucket += [e for e in plan.impact_examples.get(group, []) if e not in bucket]
    credential = status.credential
    principal = credential.principal if credential else None
    chart = status.investigation.chart.key.rsplit("/", 1)[-1] if status.investigation else None
    return CaseReport(
        investigation=investigation,
        investigation_chart=chart if investigation else None,
        case_id=status.case_id,
        account_id=status.account_id,
        written_at=written_at,
        phase=status.phase,
        outcome=status.outcome,
        containment=containment_verdict(status),
        eradication_ran=bool(status.eradication),
        credential=credential.access_key_id if credential else finding.access_key.access_key_id,
        credential_kind=credential.kind if credential else None,
        principal=(principal.arn or principal.principal_id) if principal else None,
        findings=[
            f"{f.type} (severity {f.severity}, {f.count} calls, {f.first_seen.isoformat()} to "
            f"{f.last_seen.isoformat()}) {f.id}"
            for f in status.findings
        ],
        root_cause=_root_cause(status),
        milestones=milestones,
        impact=[
            Impact(group=g, calls=calls[g], examples=examples.get(g, [])[:5])
            for g in Group
            if calls[g]
        ],
        failed_calls=sum(p.failed_calls for p in status.eradication),
        credentials_investigated=[k for p in status.eradication for k in p.access_key_ids],
        removed=[
            RemovedResource(
                round=plan.round,
                what=step.describe(),
                made_by=step.resource.made_by,
                outcome=step.outcome,
                retried_in=step.retried_in,
                failed_before=step.failed_before,
            )
            for plan in status.eradication
            for step in plan.steps
        ],
        recovery=[
            RecoveryLine(what=r.description, outcome=r.outcome, source=r.source)
            for r in status.recovery
        ],
        logging_gaps=status.logging_gaps,
        actions=[
            ReportAction(
                id=a.id,
                title=a.title,
                status=a.status,
                requested_at=a.requested_at,
                decision=a.approval.decision.value if a.approval else None,
                approver=a.approval.approver if a.approval else None,
                reason=a.approval.reason if a.approval else None,
                decided_at=a.approval.decided_at if a.approval else None,
                escalations=a.escalations,
                automatic=a.approval.automatic if a.approval else False,
                endorsed_by=[e.approver for e in a.endorsements],
                outcome=a.outcome,
            )
            for a in status.actions
        ],
        refused_signals=[
            f"{r.at.isoformat()} {r.signal} {r.action_id or ''} by {r.by}: {r.reason}"
            for r in status.refused
        ],
        evidence=status.evidence,
        open_items=status.open_items,
        notes=[f"{n.at.isoformat()} {n.author}: {n.text}" for n in status.notes],
        lessons=_lessons(status),
        containment_facts=_containment_facts(status),
        watch_attempts=[
            WatchAttempts(
                access_key_ids=w.access_key_ids,
                attempts=w.denied_attempts,
                sources=w.attempt_sources,
                calls=w.attempt_calls,
            )
            for w in [status.watch, *status.minted_watches]
            if w is not None and w.checks
        ],
        failures=_failures(status),
        data_reads=_data_reads(status),
        others_changes=_others_changes(status),
        others_read=any(plan.others_read for plan in status.eradication),
        removed_evidence=[
            e.name for e in status.evidence if e.name.startswith(("launched-", "removed-"))
        ],
        signed=[
            approval
            for action in status.actions
            for approval in [*action.endorsements, *([action.approval] if action.approval else [])]
            if approval.signature is not None
        ],
        dry_run=status.dry_run,
        went_live_at=status.went_live_at,
        would=[f"{w.action_id}: {w.change}" for w in status.would],
    )


def _eradication(status: CaseStatus) -> tuple[datetime | None, str | None]:
    """When eradication was done, or why it is only partly done: done means every removal
    of every round is done (removed, already gone, protected or rightly kept), and its time
    is when the last eradication or retry that carried one out finished."""
    steps = [step for plan in status.eradication for step in plan.steps]
    undone = [step for step in steps if step.outcome not in _REMOVAL_DONE]
    if undone:
        done = len(steps) - len(undone)
        return None, (
            f"partly: {done} of {len(steps)} removals done; "
            + "; ".join(
                f"{step.describe()} {in_words(step.outcome) if step.outcome else 'not carried out'}"
                for step in undone
            )
        )
    retries = {step.retried_in for step in steps if step.retried_in}
    finished = [
        a.finished_at
        for a in status.actions
        if a.finished_at
        and a.status is ActionStatus.DONE
        and (a.kind is ActionKind.ERADICATE or a.id in retries)
    ]
    return max(finished, default=None), None


def _containment_facts(status: CaseStatus) -> ContainmentFacts:
    """The cut-off, the instance's stop and start (from the case's timeline), its new key,
    and the EBS snapshots kept of it."""
    credential = status.credential
    instance_id = credential.principal.instance_id if credential else None
    stopped: list[datetime] = []
    started: list[datetime] = []
    for entry in status.timeline:
        match = _ROTATION_NOTE.match(entry.what)
        if match and match.group(1) == instance_id:
            (stopped if match.group(2) == "stopped" else started).append(entry.at)
    return ContainmentFacts(
        cutoff=status.containment_cutoff,
        cut_off_at=status.cut_off_at,
        instance_id=instance_id,
        stopped_at=stopped,
        started_at=started,
        new_access_key_id=status.verified_access_key_id,
        snapshots=status.snapshots,
    )


def _kept_when(record: EvidenceRecord, facts: ContainmentFacts) -> str:
    """Whether an evidence object was kept before the credential was cut off, or after;
    the EBS snapshots' record against the instance's stop, which is what they precede."""
    cut_off = facts.cut_off_at
    if cut_off is None:
        return "no cut-off made"
    if record.captured_at < cut_off:
        return "before the cut-off"
    if record.name.startswith("ebs-snapshots-") and facts.stopped_at:
        stop = "before" if record.captured_at < facts.stopped_at[0] else "after"
        return f"after the cut-off, {stop} the stop"
    return "after the cut-off"


def _attacker_keys(status: CaseStatus) -> set[str]:
    keys = {k for plan in status.eradication for k in plan.access_key_ids}
    return keys | {c.access_key_id for plan in status.eradication for c in plan.new_credentials}


def _summed(items: Iterable[Counted], key: Callable[[Counted], tuple[str, str]]) -> list[Counted]:
    """Items of every round, one per key, their calls added up, in the order first seen."""
    merged: dict[tuple[str, str], Counted] = {}
    for item in items:
        if key(item) in merged:
            merged[key(item)].calls += item.calls
        else:
            merged[key(item)] = item.model_copy()
    return list(merged.values())


def _failures(status: CaseStatus) -> list[FailedCall]:
    """The attacker's failed calls by API and error, over every round."""
    failures = [f for plan in status.eradication for f in plan.failures]
    merged = _summed(failures, lambda f: (f.api, f.error_code))
    return sorted(merged, key=lambda f: (f.first_at, f.api))


def _data_reads(status: CaseStatus) -> list[DataRead]:
    reads = [r for plan in status.eradication for r in plan.data_reads]
    return _summed(reads, lambda r: (r.api, r.target))


def _others_changes(status: CaseStatus) -> list[OtherChange]:
    """Changes others made in the rounds' windows, each once, none made with a key the
    case found the attacker's (a round sees the keys a later round investigates as
    others)."""
    attacker = _attacker_keys(status)
    seen: dict[str, OtherChange] = {}
    for plan in status.eradication:
        for change in plan.others_changes:
            if change.access_key_id not in attacker:
                seen.setdefault(change.event_id or repr(change), change)
    return sorted(seen.values(), key=lambda c: (c.event_time, c.event_id))


def _when(value: datetime | None) -> str:
    return value.isoformat() if value else "-"


def _took(value: timedelta | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(int(value.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def _cell(text: object) -> str:
    return str(text if text is not None else "-").replace("|", "\\|").replace("\n", " ")


def _signed_section(signed: list[Approval]) -> list[str]:
    """Each signed decision with what verifies it: the message is playbook/signing.py's
    canonical JSON of its fields, the key the approver's in the approval policy."""
    if not signed:
        return []
    return [
        "",
        "Signed decisions (Ed25519; the signed message is the canonical JSON of kind "
        f"`{MESSAGE_KIND}`, case, action, decision, approver, reason and time):",
        "",
        "| Action | Decision | By | Signed at | Key | Signature |",
        "|---|---|---|---|---|---|",
        *(
            f"| {a.action_id} | {a.decision.value} | {_cell(a.approver)} | "
            f"{a.signature.signed_at.isoformat()} | {a.signed_with} | `{a.signature.signature}` |"
            for a in signed
            if a.signature is not None
        ),
    ]


def _dry_run_section(report: CaseReport) -> list[str]:
    """What a dry run did not change, in order, first: nobody may read the rest of the
    report as changes made."""
    if not report.dry_run and report.went_live_at is None:
        return []
    until = (
        "**DRY RUN: Quench changed nothing in AWS.**"
        if report.went_live_at is None
        else f"**A dry run until {report.went_live_at.isoformat()}**, when a person approved "
        "going live: before then Quench changed nothing in AWS."
    )
    return [
        f"{until} The changes it would have made, in order:",
        "",
        *(f"{n}. {change}" for n, change in enumerate(report.would, 1)),
        *([] if report.would else ["(none: it decided nothing that changes AWS)"]),
        "",
    ]


def render_markdown(report: CaseReport) -> str:
    m = report.milestones
    kind = report.credential_kind.value if report.credential_kind else "unresolved"
    lines = [
        f"# Post-incident report: {report.case_id}" + (" (DRY RUN)" if report.dry_run else ""),
        "",
        *_dry_run_section(report),
        f"Written {report.written_at.isoformat()} by Quench. Account {report.account_id}; "
        f"credential `{report.credential}` ({kind}); "
        f"principal `{report.principal or '-'}`.",
        "",
        f"**Containment:** {report.containment}. "
        f"**Outcome:** {report.outcome or report.phase.value}",
        "",
        "## Root cause",
        "",
        report.root_cause,
        "",
        "Findings:",
        *[f"- {f}" for f in report.findings],
        "",
        "## Timeline (UTC)",
        "",
        "| Milestone | When |",
        "|---|---|",
        f"| First seen by GuardDuty | {_when(m.first_seen)} |",
        f"| Compromise assumed from | {_when(m.compromise_time)} |",
        f"| Response started (case opened) | {_when(m.response_started)} |",
        f"| Contained | {_when(m.contained)} |",
        f"| Containment watch | {_cell(m.watch_result)} |",
        *(f"| Watch of minted credentials | {_cell(r)} |" for r in m.minted_watch_results),
        f"| Eradicated | {_cell(m.eradication_partly or _when(m.eradicated))} |",
        f"| Recovered | {_when(m.recovered)} |",
        f"| Closed | {_when(m.closed)} |",
        "",
        f"Time to contain: **{_took(m.time_to_contain)}** (exposure since first seen: "
        f"{_took(m.exposure)}). Time to eradicate: **{_took(m.time_to_eradicate)}**"
        + (" (eradication is only partly done)." if m.eradication_partly else "."),
        "",
        *_containment_section(report),
        "## Impact",
        "",
    ]
    if report.impact:
        lines += ["| Group | Calls | Examples |", "|---|---|---|"]
        lines += [
            f"| {i.group.value} | {i.calls} | {_cell(', '.join(i.examples))} |"
            for i in report.impact
        ]
        lines.append("")
        lines.append(
            f"{counted(report.failed_calls, 'call')} failed. Credentials investigated: "
            + ", ".join(f"`{k}`" for k in report.credentials_investigated)
            + "."
        )
    else:
        lines.append("No activity was classified (the case closed before eradication).")
    lines += _failures_and_reads(report)
    lines += _others_section(report)
    lines += ["", "## What was removed", ""]
    if report.removed:
        lines += ["| Round | Removal | Made by | Outcome |", "|---|---|---|---|"]
        lines += [
            f"| {r.round} | {_cell(r.what)} | `{r.made_by}` | {_cell(r.outcome_text())} |"
            for r in report.removed
        ]
        if report.removed_evidence:
            lines += [
                "",
                "Kept as evidence before removal: "
                + ", ".join(f"`{name}`" for name in report.removed_evidence)
                + ".",
            ]
    elif report.eradication_ran:
        lines.append("Nothing the attacker made was found to remove.")
    else:
        lines.append("Eradication did not run: the case closed before it.")
    lines += ["", "## Recovery", ""]
    if report.recovery:
        lines += [
            f"- {_cell(r.what)}: **{in_words(r.outcome)}**"
            + (f" (from {r.source})" if r.source else "")
            for r in report.recovery
        ]
    elif report.eradication_ran:
        lines.append("The attacker changed nothing that needed restoring.")
    else:
        lines.append("Recovery did not run: the case closed before it.")
    for gap in report.logging_gaps:
        lines.append(
            f"- Logging gap on trail {gap.trail}: from {gap.stopped_at.isoformat()} (stopped by "
            f"`{gap.stopped_by}`) to "
            f"{gap.restarted_at.isoformat() if gap.restarted_at else 'not restarted'}; "
            "CloudTrail has no record of calls in that time"
        )
    lines += ["", "## Actions and approvals", ""]
    lines += [
        "| Action | What | Decision | By | Reason | Outcome |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {a.id} | {_cell(a.title)} | {_cell(a.decision_text())} | "
        f"{_cell(a.approvers_text())} | {_cell(a.reason)} | "
        f"{_cell(in_words(a.outcome) if a.outcome else None)} |"
        for a in report.actions
    ]
    if report.refused_signals:
        lines += ["", "Refused decisions:", *[f"- {_cell(r)}" for r in report.refused_signals]]
    lines += _signed_section(report.signed)
    if report.investigation is not None:
        lines += ["", *markdown_section(report.investigation, report.investigation_chart)]
    lines += [
        "",
        "## Evidence",
        "",
        "In the order it was kept, against the moment the credential was cut off.",
        "",
        "| Object | SHA-256 | Bytes | Captured | Kept |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{e.uri}` | `{e.sha256}` | {e.size_bytes} | {e.captured_at.isoformat()} | "
        f"{_kept_when(e, report.containment_facts)} |"
        for e in sorted(report.evidence, key=lambda e: e.captured_at)
    ] or ["| No evidence was kept | - | - | - | - |"]
    lines += ["", "## Open items for humans", ""]
    lines += [f"- [ ] {_cell(item)}" for item in report.open_items] or ["None."]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {_cell(n)}" for n in report.notes]]
    lines += ["", "## Lessons learned", ""]
    lines += [
        f"- [{'x' if item.done else ' '}] {item.item}" + (f" ({item.why})" if item.why else "")
        for item in report.lessons
    ]
    return "\n".join(lines) + "\n"


def _containment_section(report: CaseReport) -> list[str]:
    """What containment did, with its times and ids, and what the watches saw."""
    facts = report.containment_facts
    lines = []
    if facts.cutoff:
        lines.append(
            f"- Cut-off: sessions and tokens issued before {facts.cutoff.isoformat()} are denied"
            + (f" (made {facts.cut_off_at.isoformat()})" if facts.cut_off_at else "")
        )
    if facts.instance_id:
        if facts.stopped_at or facts.started_at:
            stops = ", ".join(t.isoformat() for t in facts.stopped_at) or "-"
            starts = ", ".join(t.isoformat() for t in facts.started_at) or "-"
            lines.append(f"- Instance `{facts.instance_id}`: stopped {stops}; started {starts}")
        else:
            lines.append(f"- Instance `{facts.instance_id}`: not stopped or started by the case")
    if facts.new_access_key_id:
        lines.append(f"- New key on the instance after its restart: `{facts.new_access_key_id}`")
    lines += [
        f"- EBS snapshot `{snap.snapshot_id}` of volume `{snap.volume_id}`"
        + (f" ({snap.instance_id})" if snap.instance_id else "")
        + (f", started {snap.started_at.isoformat()}" if snap.started_at else "")
        for snap in facts.snapshots
    ]
    for watch in report.watch_attempts:
        keys = ", ".join(f"`{k}`" for k in watch.access_key_ids)
        if not watch.attempts:
            lines.append(f"- Watch of {keys}: no attempt seen")
            continue
        where = ", ".join(watch.sources) or "addresses not recorded"
        calls = ", ".join(f"{call} x{n}" for call, n in watch.calls.items())
        lines.append(
            f"- Watch of {keys}: {watch.attempts} denied "
            + ("attempt" if watch.attempts == 1 else "attempts")
            + f" from {where}"
            + (f" ({calls})" if calls else "")
        )
    if not lines:
        return []
    return ["## Containment", "", *lines, ""]


def _failures_and_reads(report: CaseReport) -> list[str]:
    lines = []
    if report.failures:
        lines += ["", "Calls that failed, with their error:", ""]
        lines += ["| API | Error | Calls | First |", "|---|---|---|---|"]
        lines += [
            f"| {_cell(f.api)} | {_cell(f.error_code)} | {f.calls} | {_cell(f.first_at)} |"
            for f in report.failures
        ]
    if report.data_reads:
        lines += ["", "What the data-access calls read:", ""]
        lines += ["| API | Read | Calls |", "|---|---|---|"]
        lines += [
            f"| {_cell(r.api)} | `{_cell(r.target)}` | {r.calls} |" for r in report.data_reads
        ]
    return lines


def _others_section(report: CaseReport) -> list[str]:
    if not report.others_read:
        return []
    lines = [
        "",
        "## Changes by others in the same window",
        "",
        "Made with credentials the case did not find to be this case's attacker's, so left "
        "alone: confirm each (a key listed here may be another case's).",
        "",
    ]
    if not report.others_changes:
        return [*lines, "CloudTrail shows no change by anyone else in the window."]
    lines += ["| When | Who | Key | Change | On | From |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {_cell(c.event_time)} | `{_cell(c.who)}` | `{_cell(c.access_key_id or '-')}` | "
        f"{_cell(c.event_name)} | {_cell(c.target or '-')} | {_cell(c.source_ip)} |"
        for c in report.others_changes
    ]
    return lines
