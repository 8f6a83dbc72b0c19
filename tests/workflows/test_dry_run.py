"""A dry run on the time-skipping server: every read, plan and approval of a real case,
no activity that changes AWS, and what it would have changed recorded in order; then a
person either keeps it a dry run or makes it real, which contains from the current state
and plans the same eradication as the dry run did."""

import uuid
from datetime import timedelta

from models.case import ActionKind, ActionStatus, CasePolicy, CaseStatus, Phase
from playbook.undone import containment_verdict, undone
from tests.playbook.test_classify import _attack_records
from tests.support import STOLEN_KEY
from tests.workflows.test_case_workflow import (
    FakeAws,
    _approval,
    _decided,
    _record,
    _result,
    _second_generation_records,
    _start,
    _wait_for,
    _worker,
)
from workflows.case import CaseWorkflow

# The fake's activities that change AWS: none may run in a dry run.
CHANGING = {
    "snapshot_volumes",
    "revoke_role_sessions",
    "stop_instance",
    "start_instance",
    "probe_instance_credentials",
    "deactivate_access_key",
    "deny_user_tokens_before",
    "deny_user_everything",
    "remove_login_profile",
    "start_trails_logging",
    "remove_resource",
    "restore_change",
    "attach_quarantine",
    "lift_quarantine",
}
DRY_RUN = CasePolicy(dry_run=True, approval_deadline_seconds=7 * 24 * 3600)


def _attacked() -> FakeAws:
    fake = FakeAws()
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        "AKIABACKDOORKEY00001": _second_generation_records(),
    }
    return fake


async def _approve_until(env, handle, done) -> CaseStatus:
    """Approve every action as it comes (time passing while the case waits on none),
    until `done` says the case is where the test wants it."""
    while True:
        status = await handle.query(CaseWorkflow.status)
        if done(status):
            return status
        pending = [a for a in status.pending_actions() if a.kind is not ActionKind.GO_LIVE]
        if not pending:
            await env.sleep(timedelta(minutes=50))
            continue
        await handle.signal(CaseWorkflow.approve, _approval(pending[0].id))
        await _wait_for(handle, _decided(pending[0].id))


def _go_live_waits(status: CaseStatus) -> bool:
    return any(a.kind is ActionKind.GO_LIVE for a in status.pending_actions())


def _plans(plans) -> list[list[str]]:
    return [[step.describe() for step in plan.steps] for plan in plans]


async def test_a_dry_run_changes_nothing_and_says_what_it_would_have_in_order(time_skipping_env):
    fake = _attacked()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, DRY_RUN)
        waiting = await _approve_until(time_skipping_env, handle, _go_live_waits)
        (go_live,) = [a for a in waiting.pending_actions() if a.kind is ActionKind.GO_LIVE]
        await handle.signal(
            CaseWorkflow.reject,
            _approval(go_live.id).model_copy(update={"reason": "seen enough"}),
        )
        result = await _result(handle)
        await _record(handle, "dry_run_kept")

    assert not CHANGING & set(fake.names())
    assert result.dry_run and result.phase is Phase.CLOSED
    assert result.outcome == "dry run: nothing was changed in AWS"
    # Everything a real case does, in its order, each under the action that approved it.
    ids = [w.action_id for w in result.would]
    where = [w for n, w in enumerate(ids) if n == 0 or ids[n - 1] != w]
    assert where[0] == "evidence" and where[1].startswith("contain-") and where[2] == "watch"
    assert sum(w.startswith("eradicate-") for w in where) >= 2
    assert where[-1].startswith("recover-") or where[-1] == "watch"
    changes = [w.change for w in result.would]
    assert any(c.startswith("Stop instance") for c in changes)
    assert any("AWSRevokeOlderSessions" in c for c in changes)
    # The rounds ran to the same end as a real case's: each minted credential followed.
    assert len(result.eradication) == 3
    assert all(
        s.outcome in {"dry_run", "skipped", "kept"} for p in result.eradication for s in p.steps
    )
    # Nothing reads as done: the credential is not contained, every removal still open.
    assert any(item.startswith(f"{STOLEN_KEY} is not contained") for item in undone(result))
    assert any("(dry run); it is still in AWS" in item for item in result.open_items)
    (markdown,) = fake.report_markdown
    assert "(DRY RUN)" in markdown.splitlines()[0]
    assert "**DRY RUN: Quench changed nothing in AWS.**" in markdown
    assert f"1. evidence: {changes[0]}" in markdown


async def test_a_dry_run_made_real_contains_from_now_and_plans_the_same(time_skipping_env):
    fake = _attacked()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue, DRY_RUN)
        waiting = await _approve_until(time_skipping_env, handle, _go_live_waits)
        assert not CHANGING & set(fake.names())
        dry_plans = _plans(waiting.eradication)
        would = len(waiting.would)
        (go_live,) = [a for a in waiting.pending_actions() if a.kind is ActionKind.GO_LIVE]
        await handle.signal(CaseWorkflow.approve, _approval(go_live.id, "bob"))
        await _approve_until(time_skipping_env, handle, lambda s: s.phase is Phase.CLOSED)
        result = await _result(handle)
        await _record(handle, "dry_run_made_real")

    names = fake.names()
    assert {"revoke_role_sessions", "stop_instance", "start_instance"} <= set(names)
    assert "remove_resource" in names
    assert not result.dry_run and result.went_live_at is not None
    # Containment ran with the go-live's approval, before any removal.
    actions = {a.id: a for a in result.actions}
    assert actions[go_live.id].status is ActionStatus.DONE
    assert names.index("revoke_role_sessions") < names.index("remove_resource")
    # The real rounds planned what the dry run did; its plans and changes are kept apart.
    assert _plans(result.dry_run_eradication) == dry_plans
    assert _plans(result.eradication) == dry_plans
    assert len(result.would) == would
    # Contained for real now: nothing says otherwise.
    assert containment_verdict(result) == "partly contained"
    assert not any(item.startswith(f"{STOLEN_KEY} is not contained") for item in undone(result))
    # The same end as a case that was never a dry run (the fake's federation token).
    assert result.outcome == "partly contained: contained, but not ASIAFEDERATED0000001"
    (markdown,) = fake.report_markdown
    assert "**A dry run until" in markdown
