"""The post-incident report from a case with known times: the milestones and durations, the
impact summed over rounds, every action with its approver, every evidence hash, and the
lessons that follow from what happened."""

from datetime import UTC, datetime, timedelta

from models.case import (
    Action,
    ActionKind,
    ActionStatus,
    Approval,
    CaseSnapshot,
    CaseStatus,
    Decision,
    EradicationPlan,
    EvidenceRecord,
    LoggingGap,
    Phase,
    PhaseChange,
    RecoveryOperation,
    RecoveryStep,
    TimelineEntry,
    WatchStatus,
)
from models.principal import Credential, CredentialKind, Principal, PrincipalType
from playbook.classify import (
    AttackerChange,
    AttackerResource,
    ChangeKind,
    DataRead,
    FailedCall,
    Group,
    OtherChange,
    ResourceKind,
)
from playbook.plan import removal_plan
from playbook.report import build_report, render_markdown
from tests.support import ACCOUNT, INSTANCE, ROLE, STOLEN_KEY, finding

OPENED = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def _at(minutes: int) -> datetime:
    return OPENED + timedelta(minutes=minutes)


def _action(kind: ActionKind, number: int, approver: str, done_at: int) -> Action:
    action_id = f"{kind.value}-{number}"
    return Action(
        id=action_id,
        kind=kind,
        title=f"{kind.value} things",
        status=ActionStatus.DONE,
        requested_at=_at(done_at - 2),
        approval=Approval(
            action_id=action_id,
            decision=Decision.APPROVED,
            approver=approver,
            reason="go",
            decided_at=_at(done_at - 1),
        ),
        started_at=_at(done_at - 1),
        finished_at=_at(done_at),
        outcome="done",
    )


def _plan(round_number: int, key: str, user: str) -> EradicationPlan:
    resource = AttackerResource(
        kind=ResourceKind.USER, name=user, made_by=key, event_id="e", event_time="t"
    )
    steps = removal_plan([resource])
    for step in steps:
        step.outcome = "removed"
    return EradicationPlan(
        round=round_number,
        compromise_time=_at(-90),
        access_key_ids=[key],
        impact={Group.IDENTITY_AND_PERSISTENCE: 3, Group.OTHER: round_number},
        impact_examples={Group.IDENTITY_AND_PERSISTENCE: ["CreateUser", "CreateAccessKey"]},
        failed_calls=1,
        steps=steps,
        changes=[],
        new_credentials=[],
        evidence_key="k",
    )


def _status() -> CaseStatus:
    evidence = [
        EvidenceRecord(
            name=f"item-{i}",
            bucket="evidence",
            key=f"cases/c/evidence/item-{i}.json",
            sha256=f"{i}" * 64,
            size_bytes=10 + i,
            captured_at=_at(i),
        )
        for i in range(3)
    ]
    stop = AttackerChange(
        kind=ChangeKind.LOGGING_STOPPED,
        target="management-events",
        made_by="AKIABACKDOOR",
        event_id="s",
        event_time="2026-11-22T07:40:00Z",
    )
    return CaseStatus(
        case_id="case-1",
        phase=Phase.CLOSED,
        outcome="contained",
        account_id=ACCOUNT,
        credential=Credential(
            access_key_id=STOLEN_KEY,
            kind=CredentialKind.INSTANCE_ROLE_SESSION,
            principal=Principal(
                type=PrincipalType.ASSUMED_ROLE,
                account_id=ACCOUNT,
                arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/{INSTANCE}",
                role_name=ROLE,
                instance_id=INSTANCE,
            ),
        ),
        findings=[finding()],
        phases=[
            PhaseChange(phase=Phase.TRIAGE, at=OPENED),
            PhaseChange(phase=Phase.AWAITING_APPROVAL, at=_at(2)),
            PhaseChange(phase=Phase.CONTAINED, at=_at(7)),
            PhaseChange(phase=Phase.WATCHING, at=_at(7)),
            PhaseChange(phase=Phase.CONTAINED, at=_at(30)),  # a later one does not count
            PhaseChange(phase=Phase.CLOSED, at=_at(95)),
        ],
        actions=[
            _action(ActionKind.CONTAIN_INSTANCE_ROLE, 1, "alice", 7),
            _action(ActionKind.ERADICATE, 2, "bob", 60),
            _action(ActionKind.ERADICATE, 3, "carol", 80),
            _action(ActionKind.RECOVER, 4, "alice", 90),
        ],
        approvals=[],
        evidence=evidence,
        eradication=[_plan(1, STOLEN_KEY, "backup-svc"), _plan(2, "AKIABACKDOOR", "svc-monitor")],
        recovery=[
            RecoveryStep(
                change=stop,
                description="Start logging on trail management-events",
                operation=RecoveryOperation.START_LOGGING,
                outcome="restored",
            )
        ],
        logging_gaps=[
            LoggingGap(
                trail="management-events",
                stopped_at=_at(-20),
                stopped_by="AKIABACKDOOR",
                restarted_at=_at(90),
            )
        ],
        open_items=["contain federation_token ASIAFED of ops"],
    )


def test_the_timeline_measures_from_the_response_start_and_the_first_sighting():
    status = _status()
    report = build_report(status, written_at=_at(96))
    m = report.milestones
    assert m.response_started == OPENED and m.contained == _at(7)
    assert m.time_to_contain == timedelta(minutes=7)
    assert m.exposure == _at(7) - finding().first_seen
    assert m.eradicated == _at(80) and m.time_to_eradicate == timedelta(minutes=80)
    assert m.recovered == _at(90) and m.closed == _at(95)
    assert m.compromise_time == _at(-90)


def test_impact_adds_up_the_rounds_and_names_what_was_removed():
    report = build_report(_status(), written_at=_at(96))
    calls = {i.group: i.calls for i in report.impact}
    assert calls == {Group.IDENTITY_AND_PERSISTENCE: 6, Group.OTHER: 3}
    assert report.failed_calls == 2
    assert report.credentials_investigated == [STOLEN_KEY, "AKIABACKDOOR"]
    assert [(r.round, r.what) for r in report.removed] == [
        (1, "delete_user backup-svc"),
        (2, "delete_user svc-monitor"),
    ]


def test_the_markdown_lists_every_action_approver_hash_and_open_item():
    status = _status()
    markdown = render_markdown(build_report(status, written_at=_at(96)))
    assert "Time to contain: **7m 00s**" in markdown
    assert "Time to eradicate: **1h 20m 00s**" in markdown
    for action in status.actions:
        assert action.approval is not None
        assert f"| {action.id} | " in markdown
        assert f"| {action.approval.approver} |" in markdown
    for record in status.evidence:
        assert f"| `{record.uri}` | `{record.sha256}` |" in markdown
    assert "- [ ] contain federation_token ASIAFED of ops" in markdown
    assert "Logging gap on trail management-events" in markdown
    assert f"taken from instance {INSTANCE}" in markdown


def test_lessons_follow_from_what_happened():
    status = _status()
    items = [lesson.item for lesson in build_report(status, written_at=_at(96)).lessons]
    assert any("IMDSv2" in item for item in items)
    assert any("SCP denying cloudtrail:StopLogging" in item for item in items)
    assert any("least privilege" in item for item in items)
    assert not any("long-term access keys" in item for item in items)
    user_case = status.model_copy(
        update={
            "credential": Credential(
                access_key_id="AKIALEAKED",
                kind=CredentialKind.IAM_USER_KEY,
                principal=Principal(
                    type=PrincipalType.IAM_USER, account_id=ACCOUNT, user_name="build-bot"
                ),
            ),
            "logging_gaps": [],
            "recovery": [],
            "eradication": [],
        }
    )
    items = [lesson.item for lesson in build_report(user_case, written_at=_at(96)).lessons]
    assert any("long-term access keys" in item for item in items)
    assert not any("IMDSv2" in item or "StopLogging" in item for item in items)


def test_a_case_closed_before_containment_still_reports():
    status = _status().model_copy(
        update={
            "phases": [PhaseChange(phase=Phase.TRIAGE, at=OPENED)],
            "eradication": [],
            "actions": [],
        }
    )
    report = build_report(status, written_at=_at(5))
    assert report.milestones.contained is None and report.milestones.time_to_contain is None
    markdown = render_markdown(report)
    assert "Time to contain: **-**" in markdown
    assert "No activity was classified" in markdown


def _with_failed_removal(status: CaseStatus) -> CaseStatus:
    step = status.eradication[1].steps[0]
    step.outcome = "failed"
    step.detail = "AccessDenied: denied by an SCP (call iam:DeleteUser)"
    return status


def test_eradication_is_done_only_when_every_removal_is():
    status = _with_failed_removal(_status())
    report = build_report(status, written_at=_at(96))
    m = report.milestones
    assert m.eradicated is None and m.time_to_eradicate is None
    assert m.eradication_partly == ("partly: 1 of 2 removals done; delete_user svc-monitor failed")
    markdown = render_markdown(report)
    assert "| Eradicated | partly: 1 of 2 removals done; delete_user svc-monitor failed |" in (
        markdown
    )
    assert "Time to eradicate: **-** (eradication is only partly done)." in markdown


def test_a_removal_done_on_its_retry_says_so_and_ends_eradication_then():
    status = _status()
    step = status.eradication[1].steps[0]
    step.retried_in, step.failed_before = "retry-5", "AccessDenied: denied by an SCP"
    retry = _action(ActionKind.RETRY, 5, "dave", 93)
    status.actions.append(retry)
    report = build_report(status, written_at=_at(96))
    assert report.milestones.eradicated == _at(93)
    assert report.milestones.time_to_eradicate == timedelta(minutes=93)
    markdown = render_markdown(report)
    assert (
        "| 2 | delete_user svc-monitor | `AKIABACKDOOR` | removed on its retry (retry-5); it "
        "first failed: AccessDenied: denied by an SCP |"
    ) in markdown
    assert f"| 1 | delete_user backup-svc | `{STOLEN_KEY}` | removed |" in markdown


def test_recovery_with_nothing_to_approve_is_recovered_when_its_steps_were_done():
    """Containment had restarted the trail, so no recover action was asked for: the
    timeline still says when recovery was done, not "-"."""
    status = _status()
    status.actions = [a for a in status.actions if a.kind is not ActionKind.RECOVER]
    status.recovery[0].outcome = "already_restored"
    status.recovery[0].done_at = _at(85)
    assert build_report(status, written_at=_at(96)).milestones.recovered == _at(85)
    status.recovery[0].done_at = None  # not done: no time to give
    assert build_report(status, written_at=_at(96)).milestones.recovered is None


def test_outcomes_are_words_not_raw_names():
    status = _status()
    status.recovery[0].outcome = "already_restored"
    status.eradication[0].steps[0].outcome = "already_gone"
    status.actions[1].outcome = "1 already_gone"
    status.actions[0].outcome = "failed: AccessDenied (injected by QUENCH_LAB_FAULTS)"
    markdown = render_markdown(build_report(status, written_at=_at(96)))
    assert "**already restored**" in markdown
    assert f"| `{STOLEN_KEY}` | already gone |" in markdown
    assert "| 1 already gone |" in markdown
    assert "already_" not in markdown
    # Names that are not outcome words keep their underscores.
    assert "(injected by QUENCH_LAB_FAULTS)" in markdown


def test_containment_names_its_cutoff_stop_start_new_key_snapshots_and_attempts():
    status = _status()
    status.containment_cutoff = _at(6)
    status.verified_access_key_id = "ASIANEWKEYAFTERSTART"
    status.timeline = [
        TimelineEntry(at=_at(5), what=f"instance {INSTANCE} stopped"),
        TimelineEntry(at=_at(6), what=f"instance {INSTANCE} started"),
        TimelineEntry(at=_at(6), what="instance i-other stopped"),
    ]
    status.snapshots = [
        CaseSnapshot(
            snapshot_id="snap-0abc", volume_id="vol-1", instance_id=INSTANCE, started_at=_at(1)
        )
    ]
    status.watch = WatchStatus(
        access_key_ids=[STOLEN_KEY],
        start=_at(7),
        clean_at=_at(52),
        checks=10,
        denied_attempts=3,
        verdict="clean",
        attempt_sources=["198.51.100.23"],
        attempt_calls={"iam:ListUsers AccessDenied": 2, "s3:ListBuckets AccessDenied": 1},
    )
    report = build_report(status, written_at=_at(96))
    facts = report.containment_facts
    assert (facts.stopped_at, facts.started_at) == ([_at(5)], [_at(6)])
    markdown = render_markdown(report)
    assert f"- Cut-off: sessions and tokens issued before {_at(6).isoformat()} are denied" in (
        markdown
    )
    assert (
        f"- Instance `{INSTANCE}`: stopped {_at(5).isoformat()}; started {_at(6).isoformat()}"
    ) in markdown
    assert "- New key on the instance after its restart: `ASIANEWKEYAFTERSTART`" in markdown
    assert (
        f"- EBS snapshot `snap-0abc` of volume `vol-1` ({INSTANCE}), started {_at(1).isoformat()}"
    ) in markdown
    assert (
        f"- Watch of `{STOLEN_KEY}`: 3 denied attempts from 198.51.100.23 "
        "(iam:ListUsers AccessDenied x2, s3:ListBuckets AccessDenied x1)"
    ) in markdown


def test_failures_reads_and_others_changes_are_shown_once_over_the_rounds():
    status = _status()
    denied = FailedCall(
        api="secretsmanager.amazonaws.com:GetSecretValue",
        error_code="AccessDenied",
        calls=1,
        first_at="2026-11-22T07:05:00Z",
    )
    read = DataRead(api="ssm.amazonaws.com:GetParameter", target="/orders/db-host", calls=2)

    def other(event_id: str, key: str) -> OtherChange:
        return OtherChange(
            event_name="CreateUser",
            target="new-hire",
            who=f"arn:aws:iam::{ACCOUNT}:user/alice-admin",
            access_key_id=key,
            source_ip="203.0.113.10",
            event_time="2026-11-22T07:10:00Z",
            event_id=event_id,
        )

    # Each round reads the window from the compromise: the same change is seen twice, and
    # round 1 sees the key round 2 investigates as someone else's.
    status.eradication[0].failures = [denied]
    status.eradication[0].data_reads = [read]
    status.eradication[0].others_changes = [other("e-1", "AKIAALICE"), other("e-2", "AKIABACKDOOR")]
    status.eradication[0].others_read = True
    status.eradication[1].failures = [denied]
    status.eradication[1].others_changes = [other("e-1", "AKIAALICE")]
    report = build_report(status, written_at=_at(96))
    assert [(f.api, f.calls) for f in report.failures] == [(denied.api, 2)]
    assert [c.event_id for c in report.others_changes] == ["e-1"]
    markdown = render_markdown(report)
    assert "| secretsmanager.amazonaws.com:GetSecretValue | AccessDenied | 2 |" in markdown
    assert "| ssm.amazonaws.com:GetParameter | `/orders/db-host` | 2 |" in markdown
    assert (
        f"| 2026-11-22T07:10:00Z | `arn:aws:iam::{ACCOUNT}:user/alice-admin` | `AKIAALICE` | "
        "CreateUser | new-hire | 203.0.113.10 |"
    ) in markdown
    assert "AKIABACKDOOR` | CreateUser" not in markdown


def test_a_round_with_no_change_by_others_says_so_and_one_that_did_not_look_says_nothing():
    status = _status()
    markdown = render_markdown(build_report(status, written_at=_at(96)))
    # Recorded before rounds looked for others' changes: no claim that there were none.
    assert "Changes by others" not in markdown
    status.eradication[0].others_read = True
    markdown = render_markdown(build_report(status, written_at=_at(96)))
    assert "CloudTrail shows no change by anyone else in the window." in markdown


def test_an_instance_containment_did_not_restart_says_so():
    markdown = render_markdown(build_report(_status(), written_at=_at(96)))
    assert f"- Instance `{INSTANCE}`: not stopped or started by the case" in markdown


def test_evidence_is_listed_in_the_order_kept_against_the_cut_off_and_the_stop():
    def kept(name: str, minute: int) -> EvidenceRecord:
        return EvidenceRecord(
            name=name,
            bucket="evidence",
            key=f"cases/c/evidence/{name}.json",
            sha256=name[0] * 64,
            size_bytes=10,
            captured_at=_at(minute),
        )

    status = _status()
    status.evidence = [
        kept("finding-1", 4),
        kept("iam-role-web-app-role", 1),
        kept("ebs-snapshots-i-1", 3),
        kept("ec2-instance-i-1", 2),
    ]
    status.containment_cutoff = _at(3)
    status.cut_off_at = _at(2) + timedelta(seconds=30)
    status.timeline = [TimelineEntry(at=_at(5), what=f"instance {INSTANCE} stopped")]
    markdown = render_markdown(build_report(status, written_at=_at(96)))
    rows = [line for line in markdown.splitlines() if line.startswith("| `s3://evidence/")]
    assert [(row.split("/")[-1].split(".")[0], row.split(" | ")[-1]) for row in rows] == [
        ("iam-role-web-app-role", "before the cut-off |"),
        ("ec2-instance-i-1", "before the cut-off |"),
        ("ebs-snapshots-i-1", "after the cut-off, before the stop |"),
        ("finding-1", "after the cut-off |"),
    ]
    assert f"are denied (made {status.cut_off_at.isoformat()})" in markdown
