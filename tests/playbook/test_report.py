"""The post-incident report from a case with known times: the milestones and durations, the
impact summed over rounds, every action with its approver, every evidence hash, and the
lessons that follow from what happened."""

from datetime import UTC, datetime, timedelta

from models.case import (
    Action,
    ActionKind,
    ActionStatus,
    Approval,
    CaseStatus,
    Decision,
    EradicationPlan,
    EvidenceRecord,
    LoggingGap,
    Phase,
    PhaseChange,
    RecoveryOperation,
    RecoveryStep,
)
from models.principal import Credential, CredentialKind, Principal, PrincipalType
from playbook.classify import AttackerChange, AttackerResource, ChangeKind, Group, ResourceKind
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
