"""No input can fail a workflow task, on the dev server (updates need it): every handler is
sent no input, two inputs, wrong types, unknown fields, blank words and 100 KB strings; a
malformed signal is kept in `refused` with its reason and what was sent, a malformed update
is refused naming the field and not retried, and the case still answers and completes."""

import json
import uuid
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from config import names
from models.case import ActionStatus, CaseInput, CasePolicy, CaseStatus, Phase
from tests.support import ACCOUNT, finding
from tests.workflows.test_case_workflow import FakeAws, _pending, _wait_for
from tests.workflows.test_decisions import _settled
from worker import WORKFLOWS
from workflows.case import CaseWorkflow

BIG = "x" * 100_000
SHORT_WATCH = CasePolicy(watch_seconds=1, check_every_seconds=1, delivery_lag_seconds=0)


def _bad_inputs(action_id: str) -> list[tuple[str, list[Any], str]]:
    """(what, the arguments sent, a word the refusal's reason must hold)."""
    good = {"action_id": action_id, "approver": "alice", "reason": "seen it"}
    return [
        ("no input", [], "got 0"),
        ("two inputs", [good, good], "got 2"),
        ("a number", [42], "input"),
        ("a wrong type", [{**good, "action_id": 5}], "action_id"),
        ("a missing field", [{"action_id": action_id, "approver": "alice"}], "reason"),
        ("an unknown field", [{**good, "by": "alice"}], "by"),
        ("a blank approver", [{**good, "approver": "   "}], "approver"),
        ("a blank reason", [{**good, "reason": " \t "}], "reason"),
        ("100 KB", [{**good, "reason": BIG}], "reason"),
    ]


async def _waiting_case(client: Client, queue: str) -> tuple[WorkflowHandle, str]:
    case_id = f"case-{ACCOUNT}-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        CaseWorkflow.run,
        # A watch of seconds: the dev server runs in real time.
        CaseInput(case_id=case_id, finding=finding(), policy=SHORT_WATCH),
        id=case_id,
        task_queue=queue,
    )
    waiting = await _wait_for(handle, _pending("contain-"))
    return handle, waiting.pending_actions()[0].id


async def test_malformed_signals_are_kept_as_refused_and_the_case_completes(dev_server_env):
    client: Client = dev_server_env.client
    queue = f"malformed-{uuid.uuid4()}"
    fake = FakeAws()
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=fake.activities()):
        handle, action_id = await _waiting_case(client, queue)
        sent = 0
        for signal in (names.SIGNAL_APPROVE, names.SIGNAL_REJECT):
            for _, args, _ in _bad_inputs(action_id):
                await handle.signal(signal, args=args)
                sent += 1
        for args in ([], [{"author": "alice"}], [{"author": " ", "text": "x"}], [{"text": BIG}]):
            await handle.signal(names.SIGNAL_ADD_NOTE, args=args)
            sent += 1
        for args in ([], [{"id": "not a finding"}], [finding(), finding()]):
            await handle.signal(names.SIGNAL_ADD_FINDING, args=args)
            sent += 1
        # A name the case does not take: an update's name sent as a signal, a typo.
        good = {"action_id": action_id, "approver": "alice", "reason": "seen it"}
        for name in (names.UPDATE_APPROVE, "approvee"):
            await handle.signal(name, good)
            sent += 1
        # Unknown, and nested too deep for any JSON parser: below and above the size the
        # case parses at all.
        for depth in (9_000, 100_000):
            nested = Payload(metadata={"encoding": b"json/plain"}, data=b"[" * depth)
            await handle.signal("approvee", RawValue(nested))
            sent += 1

        # Still answering, queries with an input they do not take included.
        status = await _wait_for(handle, lambda s: len(s.refused) == sent)
        assert await handle.query(names.QUERY_STATUS, "unexpected") is not None
        assert status.phase is Phase.AWAITING_APPROVAL
        assert status.actions[0].status is ActionStatus.PENDING_APPROVAL
        assert status.approvals == [] and status.notes == []
        refused = status.refused
        unknown, deep = refused[-4:-2], refused[-2:]
        assert [r.signal for r in unknown + deep] == [names.UPDATE_APPROVE] + ["approvee"] * 3
        assert all(r.reason.startswith("no such signal: ") for r in unknown + deep)
        # Kept as sent: the JSON once, not encoded again as a string.
        assert all(json.loads(r.sent or "") == [good] for r in unknown)
        assert all(r.sent is not None and r.sent.startswith('["[[[[') for r in deep)
        refused = refused[:-4]
        assert all(r.reason.startswith("malformed input: ") for r in refused)
        decisions = refused[: len(_bad_inputs(action_id))]
        for (what, args, word), kept in zip(_bad_inputs(action_id), decisions, strict=True):
            assert word in kept.reason, (what, kept.reason)
            assert kept.signal == names.SIGNAL_APPROVE
            assert kept.sent is not None and len(kept.sent) <= 1001
            if args and isinstance(args[0], dict) and isinstance(args[0].get("action_id"), str):
                assert kept.action_id == action_id
        # What was sent is kept as sent, cut short.
        assert decisions[-1].sent is not None and decisions[-1].sent.endswith("…")

        # A well-formed approval still moves the case on, to its end.
        await handle.signal(
            CaseWorkflow.approve,
            {"action_id": f" {action_id} ", "approver": " alice ", "reason": "contain it"},
        )
        result: CaseStatus = await handle.result()
        approval = result.actions[0].approval
        assert approval is not None and (approval.approver, approval.reason) == (
            "alice",
            "contain it",
        )
        assert result.phase is Phase.CLOSED


@pytest.mark.parametrize(
    "update", [names.UPDATE_APPROVE, names.UPDATE_REJECT, names.UPDATE_ADD_NOTE]
)
async def test_malformed_updates_are_refused_naming_the_field_and_leave_no_trace(
    dev_server_env, update
):
    client: Client = dev_server_env.client
    queue = f"malformed-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=FakeAws().activities()
    ):
        handle, action_id = await _waiting_case(client, queue)
        await _settled(handle)
        before = len((await handle.fetch_history()).events)
        bad = _bad_inputs(action_id)
        if update == names.UPDATE_ADD_NOTE:
            bad = [
                ("no input", [], "got 0"),
                ("a blank author", [{"author": " ", "text": "x"}], "author"),
                ("100 KB", [{"author": "alice", "text": BIG}], "text"),
            ]
        for what, args, word in bad:
            with pytest.raises(WorkflowUpdateFailedError) as raised:
                await handle.execute_update(update, args=args)
            cause = raised.value.cause
            assert isinstance(cause, ApplicationError), what
            assert cause.type == names.INVALID_INPUT_ERROR, (what, cause.type)
            assert cause.non_retryable
            assert word in cause.message, (what, cause.message)

        status = await handle.query(CaseWorkflow.status)
        assert status.refused == [] and status.notes == [] and status.approvals == []
        # Refused by the validator: the history keeps nothing of them.
        assert len((await handle.fetch_history()).events) == before
        await handle.terminate("test over")
