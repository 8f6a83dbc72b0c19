"""Whether a case's credentials are contained, and what it leaves undone, from its record;
and a report that never says "none" or "nothing found" while something is undone."""

from models.case import ActionKind, ActionStatus, Approval, Decision, Phase, PhaseChange
from playbook.report import build_report, render_markdown
from playbook.undone import (
    closing_outcome,
    containment_verdict,
    own_credential_contained,
    undone,
)
from tests.playbook.test_report import OPENED, _action, _at, _status
from tests.support import STOLEN_KEY


def test_a_case_whose_containment_is_done_is_contained_and_leaves_nothing_undone():
    status = _status()
    assert own_credential_contained(status) == (True, "")
    assert containment_verdict(status) == "contained"
    assert undone(status) == []


def test_a_credential_the_case_found_but_could_not_contain_makes_it_partly_contained():
    status = _status().model_copy(update={"uncontained": ["ASIAFED"]})
    assert containment_verdict(status) == "partly contained"


def test_a_rejected_containment_is_not_contained_and_says_who_decided():
    status = _status()
    contain = status.actions[0]
    contain.status = ActionStatus.REJECTED
    contain.approval = Approval(
        action_id=contain.id,
        decision=Decision.REJECTED,
        approver="bob",
        reason="false positive",
        decided_at=_at(3),
    )
    assert containment_verdict(status) == "not contained"
    assert undone(status)[0] == (
        f"{STOLEN_KEY} is not contained (contain-1 was rejected by bob: false positive): "
        "contain it by hand"
    )


def test_a_containment_the_watch_undid_and_nobody_redid_is_not_contained():
    status = _status()
    again = _action(ActionKind.RECONTAIN, 5, "alice", 40)
    again.title = f"Contain {STOLEN_KEY} again, then watch again"
    again.status = ActionStatus.PENDING_APPROVAL
    status.actions.insert(1, again)
    assert own_credential_contained(status)[0] is False
    # Once done, it is contained again.
    again.status = ActionStatus.DONE
    assert own_credential_contained(status) == (True, "")


def test_a_protected_credential_is_contained_by_whichever_offer_was_decided_last():
    """Containment by hand (proposed first) and Quench's, which needs two people: the one
    withdrawn does not count, and a rejection of Quench's is overtaken by the one by hand."""
    status = _status()
    by_hand = _action(ActionKind.MANUAL_CONTAINMENT, 1, "carol", 30)
    ours = status.actions[0]
    ours.id, ours.status = "contain-2", ActionStatus.WITHDRAWN
    status.actions.insert(0, by_hand)
    assert own_credential_contained(status) == (True, "")
    ours.status, ours.finished_at = ActionStatus.REJECTED, _at(20)
    assert own_credential_contained(status) == (True, "")
    by_hand.status = ActionStatus.REJECTED
    assert own_credential_contained(status) == (False, "manual-1 was rejected by carol: go")


def test_an_unresolved_principal_is_not_contained():
    status = _status().model_copy(update={"credential": None})
    assert undone(status)[0].endswith(
        "is not contained (its principal was never resolved): contain it by hand"
    )


def test_removals_and_restores_never_carried_out_are_undone_unless_already_open():
    status = _status()
    step = status.eradication[0].steps[0]
    step.outcome = None
    status.recovery[0].outcome = None
    assert undone(status) == [
        f"{step.describe()}: not carried out; it is still in AWS",
        "restore by hand: Start logging on trail management-events (not carried out)",
    ]
    status.open_items.append(f"{step.describe()}: removal declined by bob; it is still in AWS")
    assert len(undone(status)) == 1


def test_the_report_of_a_case_closed_before_containment_says_so_everywhere():
    status = _status().model_copy(
        update={
            "phases": [PhaseChange(phase=Phase.TRIAGE, at=OPENED)],
            "eradication": [],
            "recovery": [],
            "actions": [],
            "evidence": [],
            "open_items": [],
        }
    )
    markdown = render_markdown(build_report(status, written_at=_at(5)))
    assert "**Containment:** not contained." in markdown
    assert "Eradication did not run: the case closed before it." in markdown
    assert "Recovery did not run: the case closed before it." in markdown
    assert "| No evidence was kept |" in markdown
    assert "Nothing the attacker made was found to remove" not in markdown
    assert "The attacker changed nothing" not in markdown


def test_a_case_closes_partly_contained_while_a_credential_it_found_is_not():
    status = _status()
    assert closing_outcome(status, "contained") == "contained"
    status.uncontained = ["AKIACLOUDSYNC0000001"]
    assert closing_outcome(status, "contained") == (
        "partly contained: contained, but not AKIACLOUDSYNC0000001"
    )
