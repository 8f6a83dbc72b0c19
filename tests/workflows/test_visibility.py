"""A case as people find and read it, on the dev server: the search attributes at every
phase, list queries, the static summary and details, the current details, the queries, and
an event history whose activities and timers say what they do."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.worker import Worker

from config import names
from config.settings import Settings
from models.case import CaseStatus, Phase
from models.intake import FindingOutcome
from tests.support import ACCOUNT, INSTANCE, ROLE, finding
from tests.workflows.test_case_workflow import (
    FakeAws,
    _approval,
    _decided,
    _pending,
    _wait_for,
)
from webhook.intake import submit_finding
from worker import WORKFLOWS
from workflows.case import CaseWorkflow


@pytest_asyncio.fixture
async def opened(dev_server_env) -> AsyncIterator[tuple[Client, WorkflowHandle, Settings]]:
    """A case opened as the webhook opens it, waiting for approval of its containment."""
    client: Client = dev_server_env.client
    queue = f"visibility-{uuid.uuid4()}"
    settings = Settings(
        task_queue=queue,
        scan_task_queue=queue,
        watch_seconds=1,
        check_every_seconds=1,
        delivery_lag_seconds=0,
        approval_deadline_seconds=3600,
    )
    key = f"ASIA{uuid.uuid4().hex[:16].upper()}"
    async with Worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=FakeAws().activities()
    ):
        accepted = await submit_finding(client, settings, finding(access_key_id=key, severity=8.0))
        assert accepted.outcome is FindingOutcome.NEW_CASE and accepted.case_id
        handle = client.get_workflow_handle_for(CaseWorkflow.run, accepted.case_id)
        await _wait_for(handle, _pending("contain-"))
        yield client, handle, settings


async def test_a_waiting_case_is_findable_and_readable(opened):
    client, handle, _ = opened
    description = await handle.describe()
    attributes = description.typed_search_attributes
    status = await handle.query(CaseWorkflow.status)
    assert status.credential is not None
    expected: dict[SearchAttributeKey[Any], Any] = {
        names.SA_PHASE: "awaiting_approval",
        names.SA_ACCOUNT_ID: ACCOUNT,
        names.SA_ACCESS_KEY_ID: status.credential.access_key_id,
        names.SA_PRINCIPAL_ARN: f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/{INSTANCE}",
        names.SA_PRINCIPAL_TYPE: "AssumedRole",
        names.SA_FINDING_TYPE: status.findings[0].type,
        names.SA_SEVERITY: 8.0,
        names.SA_INSTANCE_ID: INSTANCE,
        names.SA_PENDING_APPROVALS: 1,
    }
    assert {key.name: attributes.get(key) for key in expected} == {
        key.name: value for key, value in expected.items()
    }
    # The summary and details the webhook set when it opened the case.
    summary = await description.static_summary()
    assert summary == f"{status.findings[0].type} on {status.credential.access_key_id}"
    details = await description.static_details()
    assert details is not None and "severity 8.0" in details and INSTANCE in details

    # The current details: what is pending and the command that approves it.
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    current = metadata.current_details
    action = status.pending_actions()[0]
    assert current.startswith(f"## Case {handle.id}")
    assert "**Phase:** awaiting_approval" in current
    assert f"**Now:** waiting for approval of {action.id} (since " in current
    assert f"#### {action.id}: {action.title}" in current
    assert f"1. {action.steps[0]}" in current
    assert f"temporal workflow update execute --workflow-id {handle.id}" in current
    assert action.deadline is not None
    deadline = action.deadline.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"Decide before {deadline}." in current

    # The list query the README gives for cases awaiting approval in an account finds it.
    query = (
        f"QuenchPhase = 'awaiting_approval' AND QuenchAccountId = '{ACCOUNT}' "
        f"AND QuenchAccessKeyId = '{status.credential.access_key_id}'"
    )
    assert await _listed(client, query) == [handle.id]
    # Visibility has caught up with the case by now: another phase does not find it.
    assert await _listed(client, query.replace("awaiting_approval", "closed"), wait=False) == []

    # The plan query answers before any round too.
    assert await handle.query(CaseWorkflow.plan) is None


async def test_search_attributes_follow_every_phase_to_the_close(opened):
    client, handle, _ = opened
    result = await _approve_until_closed(handle)

    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(names.SA_PHASE) == "closed"
    assert attributes.get(names.SA_PENDING_APPROVALS) == 0
    # Each phase the case went through was in the search attributes when it began.
    history = await handle.fetch_history()
    upserted = [
        json.loads(fields["QuenchPhase"].data)
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        and "QuenchPhase" in (fields := _indexed(event))
    ]
    assert _collapsed(upserted) == _collapsed([p.phase.value for p in result.phases])
    assert {"triage", "evidence", "awaiting_approval", "containment", "watching"} <= set(upserted)
    assert upserted[-1] == "closed"
    assert result.credential is not None
    key = result.credential.access_key_id
    closed = f"QuenchPhase = 'closed' AND QuenchAccessKeyId = '{key}'"
    assert await _listed(client, closed) == [handle.id]

    # The history reads as the playbook: every activity and every timer says what it does.
    scheduled = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    assert scheduled and timers
    unnamed = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in scheduled
        if not _summary(e)
    ]
    assert unnamed == []
    assert all(_summary(e) for e in timers)
    summaries = {_summary(e) for e in scheduled}
    assert "Resolve the principal behind the access key" in summaries
    assert any(s.startswith("Containment watch") for s in map(_summary, timers))


def _indexed(event: Any) -> Any:
    return event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields


def _summary(event: Any) -> str:
    payload = event.user_metadata.summary
    return str(json.loads(payload.data)) if payload.data else ""


def _collapsed(phases: list[str]) -> list[str]:
    return [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]


async def _listed(client: Client, query: str, wait: bool = True) -> list[str]:
    """The cases a list query finds; with `wait`, once it finds any (visibility lags a
    little behind the case)."""
    query = f"WorkflowType = 'CaseWorkflow' AND {query}"
    async with asyncio.timeout(20):
        while True:
            ids = [w.id async for w in client.list_workflows(query)]
            if ids or not wait:
                return ids
            await asyncio.sleep(0.2)


async def _approve_until_closed(handle: WorkflowHandle) -> CaseStatus:
    async with asyncio.timeout(90):
        while True:
            status = await _wait_for(
                handle, lambda s: s.phase is Phase.CLOSED or bool(s.pending_actions())
            )
            if status.phase is Phase.CLOSED:
                return await handle.result()
            action = status.pending_actions()[0]
            await handle.signal(CaseWorkflow.approve, _approval(action.id))
            await _wait_for(handle, _decided(action.id))
