"""The investigation runs beside the case on the time-skipping server: it starts once the
evidence is kept, never holds up containment, is finished before the report, and a failure
becomes an open item."""

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.exceptions import ApplicationError

from models.activities import InvestigateInput
from models.case import Phase
from tests.playbook.test_classify import _attack_records
from tests.support import STOLEN_KEY, finding
from tests.workflows.test_case_workflow import (
    FakeAws,
    _approval,
    _approve_everything,
    _approved_to_the_end,
    _pending,
    _record,
    _result,
    _second_generation_records,
    _start,
    _wait_for,
    _worker,
)
from workflows.case import CaseWorkflow

_INVESTIGATION_ACTIVITIES = {
    "plan_reads",
    "read_scope",
    "count_baseline",
    "investigate_credentials",
}


def _activities(history: WorkflowHistory) -> set[str]:
    """The activities a history scheduled, by name."""
    return {
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }


async def _first_call(fake: FakeAws, name: str) -> Any:
    """The input of the fake's first call of activity `name`, once it has come."""
    async with asyncio.timeout(30):
        while True:
            calls = [v for n, v in fake.calls if n == name]
            if calls:
                return calls[0]
            await asyncio.sleep(0.05)


async def test_the_investigation_runs_beside_containment_and_is_in_before_the_report(
    time_skipping_env,
):
    fake = FakeAws()
    fake.investigation_done = asyncio.Event()
    queue = f"q-{uuid.uuid4()}"
    async with _worker(time_skipping_env, fake, queue):
        handle = await _start(time_skipping_env, fake, queue)
        waiting = await _wait_for(handle, _pending("contain-"))
        # Asked for once the evidence is kept, the principal's snapshot with it (beside the
        # containment's proposal: it may come a little after it).
        asked: InvestigateInput = await _first_call(fake, "investigate_credentials")
        assert fake.names().index("capture_cloudtrail_slice") < fake.names().index(
            "investigate_credentials"
        )
        assert asked.credentials == [STOLEN_KEY]
        assert asked.scope_start == finding().first_seen - timedelta(hours=1)
        assert asked.principal_evidence is not None
        assert asked.principal_evidence.name.startswith("iam-role-")
        # The baseline was counted first, in parts (a region's day each), and only their
        # references reached the investigation.
        scope_plan, baseline_plan = [v for n, v in fake.calls if n == "plan_reads"]
        assert scope_plan.start == asked.scope_start
        assert scope_plan.end == asked.scope_end + timedelta(microseconds=1)
        assert (baseline_plan.start, baseline_plan.end) == (
            asked.scope_start - timedelta(days=45),
            asked.scope_start,
        )
        # So was the window itself, and the investigation got the parts' references.
        read = [v for n, v in fake.calls if n == "read_scope"]
        assert sorted(r.unit.region for r in read) == ["eu-west-1", "us-east-1"]
        assert all(r.credentials == [STOLEN_KEY] for r in read)
        assert [p.name for p in asked.scope_parts or []] == [
            "investigation-scope-us-east-1",
            "investigation-scope-eu-west-1",
        ]
        counted = [v.unit.region for n, v in fake.calls if n == "count_baseline"]
        assert sorted(counted) == ["eu-west-1", "us-east-1"]  # run at once, in any order
        assert [p.name for p in asked.baseline_parts or []] == [
            "baseline-us-east-1",
            "baseline-eu-west-1",
        ]
        await handle.signal(CaseWorkflow.approve, _approval(waiting.pending_actions()[0].id))
        # Contained while the investigation still reads CloudTrail.
        contained = await _wait_for(handle, lambda s: s.verified_access_key_id is not None)
        assert contained.investigation is None
        fake.investigation_done.set()
        result = await _result(handle)
        await _record(handle, "investigated_in_child_workflow")
        case_history = await handle.fetch_history()
        child = time_skipping_env.client.get_workflow_handle(f"{result.case_id}/investigation")
        child_history = await child.fetch_history()
        await _record(child, "investigation_workflow")

    # The reads are the child's: the case's own history holds none of them, only the child.
    assert _activities(case_history) & _INVESTIGATION_ACTIVITIES == set()
    started = [
        e.start_child_workflow_execution_initiated_event_attributes
        for e in case_history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert [(s.workflow_type.name, s.workflow_id) for s in started] == [
        ("InvestigationWorkflow", f"{result.case_id}/investigation")
    ]
    assert _activities(child_history) == _INVESTIGATION_ACTIVITIES

    assert result.investigation is not None
    assert result.investigation.chart.key.endswith("investigation-volume.png")
    names = [e.name for e in result.evidence]
    assert {"investigation", "investigation-volume"} <= set(names)
    # The report was written after the investigation came in, and from a case holding it.
    order = fake.names()
    assert order.index("investigate_credentials") < order.index("write_report")
    written = next(v for n, v in fake.calls if n == "write_report")
    assert written.status.investigation == result.investigation
    assert any(e.what.startswith("investigation of arn:aws:iam::") for e in result.timeline)


async def test_a_failed_investigation_is_an_open_item_and_the_case_goes_on(time_skipping_env):
    fake = FakeAws()
    fake.fail_next["investigate_credentials"] = ApplicationError(
        "read CloudTrail logs: AccessDenied", type="AwsAccessDenied", non_retryable=True
    )
    result = await _approved_to_the_end(time_skipping_env, fake)

    assert result.phase is Phase.CLOSED and result.investigation is None
    assert any(
        item.startswith("the CloudTrail investigation failed: read CloudTrail logs")
        for item in result.open_items
    )


async def test_the_credentials_the_attacker_minted_are_investigated_before_the_report(
    time_skipping_env,
):
    fake = FakeAws()
    fake.attacker_records = {
        STOLEN_KEY: _attack_records(),
        "AKIABACKDOORKEY00001": _second_generation_records(),
    }
    _, result = await _approve_everything(time_skipping_env, fake)

    asked = [v for n, v in fake.calls if n == "investigate_credentials"]
    first, again = asked
    assert first.credentials == [STOLEN_KEY] and first.name == "investigation"
    minted = [c.access_key_id for p in result.eradication for c in p.new_credentials]
    assert minted and again.credentials == [STOLEN_KEY, *minted]
    assert again.name == "investigation-all-credentials"
    # The baseline is not counted again: the parts counted for the first are reused.
    assert again.baseline_parts == first.baseline_parts
    assert fake.names().count("count_baseline") == 2  # two regions, once
    # The window is read again, with every key.
    assert {tuple(v.credentials) for n, v in fake.calls if n == "read_scope"} == {
        (STOLEN_KEY,),
        (STOLEN_KEY, *minted),
    }
    # The case, its report and its evidence hold the later one.
    assert result.investigation is not None
    assert result.investigation.credentials == again.credentials
    written = next(v for n, v in fake.calls if n == "write_report")
    assert written.status.investigation == result.investigation
    assert {"investigation", "investigation-all-credentials"} <= {e.name for e in result.evidence}
