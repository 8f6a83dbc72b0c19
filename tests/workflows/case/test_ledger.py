"""The approvals ledger on its own: proposing, deciding, refusing, deadlines and
escalation, with a clock the test moves. No Temporal server."""

from datetime import UTC, datetime, timedelta

import pytest

from config import names
from models.case import (
    ActionKind,
    ActionStatus,
    ApprovalInput,
    CasePolicy,
    CaseStatus,
    Decision,
    Phase,
)
from tests.support import finding
from workflows.case.ledger import ApprovalLedger

OPENED = datetime(2026, 11, 22, 7, 30, 0, 250_000, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = OPENED

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _status(severity: float = 8.0) -> CaseStatus:
    opening = finding(severity=severity)
    return CaseStatus(
        case_id="case-test",
        phase=Phase.TRIAGE,
        account_id=opening.account_id,
        findings=[opening],
        phases=[],
        actions=[],
        approvals=[],
        evidence=[],
    )


def _ledger(
    policy: CasePolicy | None = None, severity: float = 8.0, proposed: int = 0
) -> tuple[ApprovalLedger, CaseStatus, Clock]:
    status, clock = _status(severity), Clock()
    return ApprovalLedger(status, policy or CasePolicy(), clock, proposed), status, clock


def _decision(action_id: str, who: str = "alice", why: str = "looked at it") -> ApprovalInput:
    return ApprovalInput(action_id=action_id, approver=who, reason=why)


def test_proposed_actions_get_ids_unique_in_the_case_and_wait_for_a_decision():
    ledger, status, clock = _ledger(CasePolicy(two_person=[ActionKind.ERADICATE]), proposed=4)
    contain = ledger.propose(ActionKind.CONTAIN_INSTANCE_ROLE, "Contain", ["revoke", "rotate"])
    clock.advance(5)
    eradicate = ledger.propose(ActionKind.ERADICATE, "Remove", ["delete user"])

    assert [a.id for a in status.actions] == ["contain-1", "eradicate-1"]
    assert ledger.proposed == 6
    assert contain.status is ActionStatus.PENDING_APPROVAL
    assert contain.steps == ["revoke", "rotate"]
    assert contain.requested_at == OPENED
    assert eradicate.requested_at == OPENED + timedelta(seconds=5)
    assert (contain.approvals_needed, eradicate.approvals_needed) == (1, 2)
    assert status.pending_actions() == [contain, eradicate]


def test_each_kind_is_numbered_on_its_own_and_never_reuses_an_id():
    ledger, status, _ = _ledger()
    # Numbered case-wide, as a case continued as new from an older version was.
    ledger.number_by_kind = False
    ledger.propose(ActionKind.CONTAIN_INSTANCE_ROLE, "Contain", [])
    ledger.propose(ActionKind.ERADICATE, "Round 1", [])
    ledger.number_by_kind = True
    ledger.propose(ActionKind.ERADICATE, "Round 2", [])
    ledger.propose(ActionKind.ERADICATE, "Round 3", [])
    ledger.propose(ActionKind.RETRY, "Retry", [])

    assert [a.id for a in status.actions] == [
        "contain-1",
        "eradicate-2",
        "eradicate-3",  # the second eradicate, whose own number 2 was taken
        "eradicate-4",
        "retry-1",
    ]


def test_an_approval_settles_the_action_and_is_kept_with_who_and_why():
    ledger, status, clock = _ledger()
    action = ledger.propose(ActionKind.CONTAIN_USER_KEY, "Contain", [])
    clock.advance(60)

    decided = ledger.decide(_decision(action.id), Decision.APPROVED, names.SIGNAL_APPROVE)

    assert decided is action
    assert action.status is ActionStatus.APPROVED
    assert action.approval is not None
    assert (action.approval.approver, action.approval.reason) == ("alice", "looked at it")
    assert action.approval.decided_at == OPENED + timedelta(seconds=60)
    assert not action.approval.automatic
    assert status.approvals == [action.approval]
    assert status.timeline[-1].what == f"{action.id} approved by alice: looked at it"
    result = ledger.result(action)
    assert (result.status, result.approvals, result.needed) == (ActionStatus.APPROVED, 1, 1)


@pytest.mark.parametrize(
    ("setup", "decision", "reason"),
    [
        ("unknown", Decision.APPROVED, "no such action"),
        ("decided", Decision.REJECTED, "action is approved"),
        ("not-allowed", Decision.APPROVED, "mallory may not decide contain actions"),
        ("twice", Decision.APPROVED, "mallory approved it already: it needs a second person"),
    ],
)
def test_a_refused_decision_changes_nothing_and_is_kept_with_its_reason(setup, decision, reason):
    policy = CasePolicy()
    if setup == "not-allowed":
        policy = CasePolicy(approvers={ActionKind.CONTAIN_INSTANCE_ROLE: ["alice"]})
    if setup == "twice":
        policy = CasePolicy(two_person=[ActionKind.CONTAIN_INSTANCE_ROLE])
    ledger, status, _ = _ledger(policy)
    action = ledger.propose(ActionKind.CONTAIN_INSTANCE_ROLE, "Contain", [])
    if setup == "decided":
        ledger.decide(_decision(action.id), Decision.APPROVED, names.SIGNAL_APPROVE)
    if setup == "twice":
        ledger.decide(_decision(action.id, "mallory"), Decision.APPROVED, names.SIGNAL_APPROVE)
    before = action.model_copy(deep=True)
    action_id = "contain-99" if setup == "unknown" else action.id

    assert ledger.refusal(_decision(action_id, "mallory"), decision) == reason
    assert ledger.decide(_decision(action_id, "mallory"), decision, "a-signal") is None

    assert action == before
    refused = status.refused[-1]
    assert (refused.signal, refused.action_id, refused.by, refused.reason) == (
        "a-signal",
        action_id,
        "mallory",
        reason,
    )


def test_two_people_must_approve_under_the_two_person_rule():
    ledger, status, _ = _ledger(CasePolicy(two_person=[ActionKind.ERADICATE]))
    action = ledger.propose(ActionKind.ERADICATE, "Remove", [])

    ledger.decide(_decision(action.id, "alice"), Decision.APPROVED, names.SIGNAL_APPROVE)
    assert action.status is ActionStatus.PENDING_APPROVAL
    assert action.approval is None
    assert [e.approver for e in action.endorsements] == ["alice"]
    assert status.approvals == []
    assert "1 of 2 approvals" in status.timeline[-1].what
    assert ledger.result(action).approvals == 1

    ledger.decide(_decision(action.id, "bob"), Decision.APPROVED, names.SIGNAL_APPROVE)
    assert action.status is ActionStatus.APPROVED
    assert action.approval is not None and action.approval.approver == "bob"
    result = ledger.result(action)
    assert (result.approvals, result.needed) == (2, 2)


def test_one_rejection_decides_at_once_under_the_two_person_rule():
    ledger, _, _ = _ledger(CasePolicy(two_person=[ActionKind.ERADICATE]))
    action = ledger.propose(ActionKind.ERADICATE, "Remove", [])
    ledger.decide(_decision(action.id, "alice"), Decision.APPROVED, names.SIGNAL_APPROVE)

    ledger.decide(_decision(action.id, "bob"), Decision.REJECTED, names.SIGNAL_REJECT)

    assert action.status is ActionStatus.REJECTED
    assert action.approval is not None and action.approval.decision is Decision.REJECTED


def test_the_deadline_comes_from_the_policy_per_kind_of_action():
    policy = CasePolicy(
        approval_deadline_seconds=1800, approval_deadlines={ActionKind.ERADICATE: 600}
    )
    ledger, _, _ = _ledger(policy)
    contain = ledger.propose(ActionKind.CONTAIN_INSTANCE_ROLE, "Contain", [])
    eradicate = ledger.propose(ActionKind.ERADICATE, "Remove", [])

    assert ledger.open_deadline(contain) == timedelta(seconds=1800)
    assert ledger.open_deadline(eradicate) == timedelta(seconds=600)
    assert contain.deadline == OPENED + timedelta(seconds=1800)
    assert eradicate.deadline == OPENED + timedelta(seconds=600)


def test_each_missed_deadline_escalates_and_sets_the_next():
    ledger, status, clock = _ledger(CasePolicy(approval_deadline_seconds=600))
    action = ledger.propose(ActionKind.ERADICATE, "Remove", [])
    other = ledger.propose(ActionKind.RECOVER, "Restore", [])
    wait = ledger.open_deadline(action)
    assert not ledger.may_proceed(action)

    clock.advance(600)
    assert ledger.escalate(action, wait) == "10m"
    clock.advance(600)
    assert ledger.escalate(action, wait) == "20m"
    ledger.escalate(other, wait)

    assert action.escalations == 2
    assert action.deadline == OPENED + timedelta(seconds=1800)
    assert action.status is ActionStatus.PENDING_APPROVAL
    assert ledger.escalations() == 3
    assert f"{action.id} escalated (time 2): nobody decided in 20m" in [
        e.what for e in status.timeline
    ]


@pytest.mark.parametrize(
    ("kind", "severity", "threshold", "proceeds"),
    [
        (ActionKind.CONTAIN_INSTANCE_ROLE, 8.0, 7.0, True),
        (ActionKind.RECONTAIN, 7.0, 7.0, True),
        (ActionKind.CONTAIN_INSTANCE_ROLE, 5.0, 7.0, False),
        (ActionKind.CONTAIN_INSTANCE_ROLE, 8.0, None, False),
        (ActionKind.ERADICATE, 8.0, 7.0, False),
    ],
)
def test_only_containment_of_a_severe_enough_finding_proceeds_at_its_deadline(
    kind, severity, threshold, proceeds
):
    ledger, _, _ = _ledger(CasePolicy(auto_contain_min_severity=threshold), severity=severity)
    action = ledger.propose(kind, "Act", [])
    assert ledger.may_proceed(action) is proceeds


def test_a_containment_that_proceeds_at_its_deadline_is_recorded_as_the_policy_s():
    ledger, status, clock = _ledger(
        CasePolicy(auto_contain_min_severity=7.0, approval_deadline_seconds=900), severity=8.0
    )
    action = ledger.propose(ActionKind.CONTAIN_INSTANCE_ROLE, "Contain", [])
    wait = ledger.open_deadline(action)
    clock.advance(900)

    reason = ledger.proceed_without_decision(action, wait)

    assert reason == (
        "nobody decided within 15m; the policy lets containment of findings of severity 7.0 "
        "or more proceed (this case: 8.0)"
    )
    assert action.status is ActionStatus.APPROVED
    assert action.approval is not None
    assert action.approval.approver == names.AUTO_APPROVER
    assert action.approval.automatic
    assert action.approval.reason == reason
    assert status.approvals == [action.approval]


def test_kinds_the_policy_runs_without_approval():
    ledger, _, _ = _ledger(CasePolicy(without_approval=[ActionKind.CONTAIN_USER_KEY]))
    key = ledger.propose(ActionKind.CONTAIN_USER_KEY, "Contain", [])
    removal = ledger.propose(ActionKind.ERADICATE, "Remove", [])
    assert ledger.runs_without_approval(key)
    assert not ledger.runs_without_approval(removal)


def test_starting_an_action_decides_its_cut_off_after_the_second_of_the_approval():
    ledger, status, clock = _ledger()
    action = ledger.propose(ActionKind.CONTAIN_INSTANCE_ROLE, "Contain", [])
    clock.advance(10)

    cutoff = ledger.start(action)
    assert action.status is ActionStatus.RUNNING
    assert action.started_at == OPENED + timedelta(seconds=10)
    # 07:30:10.25 -> 07:30:11: a session issued within the approval's second is denied too.
    assert cutoff == datetime(2026, 11, 22, 7, 30, 11, tzinfo=UTC)

    clock.advance(3)
    ledger.finish(action, ActionStatus.DONE, "sessions revoked")
    assert (action.status, action.outcome) == (ActionStatus.DONE, "sessions revoked")
    assert action.finished_at == OPENED + timedelta(seconds=13)
    assert status.timeline[-1].what == f"{action.id} done: sessions revoked"


@pytest.mark.parametrize("kind", [ActionKind.QUARANTINE, ActionKind.LIFT_QUARANTINE])
def test_an_organisation_change_is_decided_by_recontainments_approvers_unless_named(kind):
    ledger, _, _ = _ledger(CasePolicy(approvers={ActionKind.RECONTAIN: ["alice"]}))
    action = ledger.propose(kind, "Quarantine", [])
    assert ledger.refusal(_decision(action.id, "mallory"), Decision.APPROVED) == (
        f"mallory may not decide {kind.value} actions"
    )
    assert ledger.refusal(_decision(action.id, "alice"), Decision.APPROVED) is None
    own, _, _ = _ledger(CasePolicy(approvers={ActionKind.RECONTAIN: ["alice"], kind: ["mallory"]}))
    named = own.propose(kind, "Quarantine", [])
    assert own.refusal(_decision(named.id, "mallory"), Decision.APPROVED) is None
