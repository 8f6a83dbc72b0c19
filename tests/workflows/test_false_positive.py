"""A case marked a false positive after containment, on the time-skipping server: its
response stops, and each change its containment made is offered back on its own (the
key reactivated, the token deny deleted), never a key the attacker minted."""

import uuid
from datetime import timedelta

from config import names
from models.case import ActionKind, ActionStatus, CasePolicy, FalsePositiveInput, Phase
from models.principal import CredentialKind
from playbook.undone import containment_verdict
from tests.playbook.test_classify import _attack_records
from tests.support import STOLEN_KEY
from tests.workflows.test_case_workflow import (
    FakeAws,
    _approval,
    _decided,
    _pending,
    _record,
    _result,
    _second_generation_records,
    _start,
    _wait_for,
    _worker,
)
from workflows.case import CaseWorkflow

MARKED = FalsePositiveInput(by="carol", reason="the red team's key")


async def test_a_false_positive_releases_what_containment_changed_and_nothing_minted(
    time_skipping_env,
):
    fake = FakeAws(kind=CredentialKind.IAM_USER_KEY)
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        "AKIABACKDOORKEY00001": _second_generation_records(),
    }
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(
            time_skipping_env, fake, queue, CasePolicy(approval_deadline_seconds=7 * 24 * 3600)
        )
        for prefix in ("contain-key-", "remove-console-", "eradicate-"):
            status = await _wait_for(handle, _pending(prefix))
            action = next(a for a in status.pending_actions() if a.id.startswith(prefix))
            await handle.signal(CaseWorkflow.approve, _approval(action.id))
            await _wait_for(handle, _decided(action.id))
            await time_skipping_env.sleep(timedelta(minutes=50))
        # The second round waits: the case is marked a false positive then.
        waiting = await _wait_for(
            handle, lambda s: sum(a.kind is ActionKind.ERADICATE for a in s.actions) == 2
        )
        second = waiting.actions[-1]
        minted = [c.access_key_id for p in waiting.eradication for c in p.new_credentials]
        released = await handle.execute_update(CaseWorkflow.mark_false_positive_now, MARKED)
        again = await handle.query(CaseWorkflow.status)
        assert len(released.released) == 2
        # The key's deactivation and the tokens' deny are made at once: each is offered
        # back, in the order they were made.
        cutoff = next(c for c in again.made if c.kind == "policy_put").cutoff
        assert cutoff is not None
        offers = [a for a in again.actions if a.id in released.released]
        assert sorted(a.title for a in offers) == [
            f"Release: delete the inline policy {names.REVOKE_USER_TOKENS_POLICY_NAME} "
            f"(cut-off {cutoff.isoformat()}) from user alice",
            f"Release: reactivate access key {STOLEN_KEY} of user alice",
        ]
        assert next(a for a in again.actions if a.id == second.id).status is ActionStatus.REJECTED
        # Marked once only.
        await handle.signal(CaseWorkflow.mark_false_positive, MARKED.model_dump())
        await _wait_for(handle, lambda s: len(s.refused) == 1)
        for offer in offers:
            await handle.signal(CaseWorkflow.approve, _approval(offer.id))
        result = await _result(handle)
        await _record(handle, "false_positive_released")

    released_calls = [call for name, call in fake.calls if name == "release_change"]
    assert [c.change.kind for c in released_calls] == ["key_deactivated", "policy_put"]
    assert released_calls[0].change.access_key_id == STOLEN_KEY
    # The keys the attacker minted were deactivated in the first round, and stay so.
    assert minted and not any(c.change.access_key_id in minted for c in released_calls)
    assert result.phase is Phase.CLOSED
    assert result.outcome == "false positive, marked by carol: the red team's key"
    assert all(c.released_by for c in result.made)
    # Everything that contained it released: the case says it is not contained.
    assert containment_verdict(result) == "not contained"
    assert result.refused[0].reason == "marked a false positive already, by carol"
    (markdown,) = fake.report_markdown
    assert all(f"| {offer.id} |" in markdown for offer in offers)
