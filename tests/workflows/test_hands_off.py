"""A protected credential, or Quench's own, on the time-skipping server: never contained
on Quench's own say-so. A protected one is offered to a human (manual-N) beside a
containment that two different people must approve; Quench's own only to a human."""

import uuid

from models.case import ActionKind, ActionStatus, CasePolicy, Phase
from tests.support import STOLEN_KEY
from tests.workflows.test_case_workflow import (
    FakeAws,
    _approval,
    _approve_each_round,
    _decided,
    _minted_session_records,
    _pending,
    _record,
    _result,
    _start,
    _wait_for,
    _worker,
)
from workflows.case import CaseWorkflow

PROTECTED = "web-app-role is on the protected list"
# What containment of an instance role changes, and the login profile's removal.
CHANGES = {"revoke_role_sessions", "stop_instance", "start_instance", "deactivate_access_key"}
# The policy would let containment run without anyone: a protected one still waits.
HANDS_FREE = CasePolicy(without_approval=[ActionKind.CONTAIN_INSTANCE_ROLE])


async def test_a_protected_credential_is_contained_only_once_two_people_approve(
    time_skipping_env,
):
    fake = FakeAws()
    fake.hands_off = PROTECTED
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, HANDS_FREE)
        waiting = await _wait_for(handle, lambda s: len(s.pending_actions()) == 2)
        contain, by_hand = sorted(waiting.pending_actions(), key=lambda a: a.kind != "contain")
        assert contain.kind is ActionKind.CONTAIN_INSTANCE_ROLE
        assert contain.protected == PROTECTED and contain.approvals_needed == 2
        assert contain.steps[0].startswith(f"Protected: {PROTECTED}")
        assert by_hand.kind is ActionKind.MANUAL_CONTAINMENT
        assert by_hand.steps[0] == f"{PROTECTED}: Quench does not contain it on its own"
        assert waiting.hands_off == PROTECTED and not waiting.quench_own

        # One person is not enough, nor the same person twice.
        await handle.signal(CaseWorkflow.approve, _approval(contain.id, "alice"))
        await handle.signal(CaseWorkflow.approve, _approval(contain.id, "alice"))
        once = await _wait_for(handle, lambda s: len(s.refused) == 1)
        assert once.refused[0].reason == "alice approved it already: it needs a second person"
        assert not CHANGES & set(fake.names())

        await handle.signal(CaseWorkflow.approve, _approval(contain.id, "bob"))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        await _approve_each_round(time_skipping_env, handle)
        result = await _result(handle)
        await _record(handle, "protected_contained_by_two_people")

    assert {"revoke_role_sessions", "stop_instance", "start_instance"} <= set(fake.names())
    actions = {a.id: a for a in result.actions}
    assert actions[contain.id].status is ActionStatus.DONE
    assert [e.approver for e in actions[contain.id].endorsements] == ["alice"]
    approval = actions[contain.id].approval
    assert approval is not None and approval.approver == "bob"
    assert actions[by_hand.id].status is ActionStatus.WITHDRAWN
    assert actions[by_hand.id].outcome == f"not needed: {contain.id} was approved"


async def test_a_protected_credential_contained_by_hand_is_never_touched(time_skipping_env):
    fake = FakeAws()
    fake.hands_off = PROTECTED
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, HANDS_FREE)
        waiting = await _wait_for(handle, lambda s: len(s.pending_actions()) == 2)
        by_hand = next(a for a in waiting.pending_actions() if a.id.startswith("manual-"))
        contain = next(a for a in waiting.pending_actions() if a is not by_hand)
        # A rejection of Quench's containment leaves the one by hand to decide.
        await handle.signal(
            CaseWorkflow.reject,
            _approval(contain.id, "carol").model_copy(update={"reason": "not by a tool"}),
        )
        await _wait_for(handle, _decided(contain.id))
        await handle.signal(CaseWorkflow.approve, _approval(by_hand.id, "carol"))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        await _approve_each_round(time_skipping_env, handle)
        result = await _result(handle)

    assert not CHANGES & set(fake.names())
    assert result.outcome == "contained by a human"
    actions = {a.id: a for a in result.actions}
    assert actions[contain.id].status is ActionStatus.REJECTED
    assert actions[by_hand.id].status is ActionStatus.DONE
    assert actions[by_hand.id].outcome == "contained by carol"


async def test_a_finding_naming_quench_itself_goes_to_a_human_only(time_skipping_env):
    fake = FakeAws()
    fake.hands_off = "role web-app-role is Quench's own in account 123456789012"
    fake.quench_own = True
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, HANDS_FREE)
        waiting = await _wait_for(handle, _pending("manual-"))
        (only,) = waiting.pending_actions()
        assert only.kind is ActionKind.MANUAL_CONTAINMENT
        assert only.steps[0].startswith(
            f"This finding names Quench's own identity: {fake.hands_off}"
        )
        assert waiting.phase is Phase.NEEDS_HUMAN
        await handle.signal(
            CaseWorkflow.reject,
            _approval(only.id).model_copy(update={"reason": "it was Quench's own call"}),
        )
        result = await _result(handle)

    assert not CHANGES & set(fake.names())
    assert result.phase is Phase.CLOSED
    assert result.outcome == "not contained: alice: it was Quench's own call"
    assert result.quench_own


async def test_a_minted_session_of_a_protected_role_is_left_to_a_human(time_skipping_env):
    """The attacker assumed a protected role: its sessions are not revoked by Quench (no
    containment proposed for it), and the case says who must contain them."""
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _minted_session_records()}
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(
            time_skipping_env, fake, queue, CasePolicy(protected_names=["audit-readonly"])
        )
        waiting = await _wait_for(handle, _pending("contain-"))
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        await _wait_for(handle, lambda s: s.phase is Phase.WATCHING)
        await _approve_each_round(time_skipping_env, handle)
        result = await _result(handle)

    revoked = [call.role_name for name, call in fake.calls if name == "revoke_role_sessions"]
    assert "audit-readonly" not in revoked
    assert not any(a.kind is ActionKind.CONTAIN_ROLE_SESSION for a in result.actions)
    assert "ASIAMINTEDAUDIT00001" in result.uncontained
    assert any(
        item.startswith("contain role_session ASIAMINTEDAUDIT00001") for item in result.open_items
    )
