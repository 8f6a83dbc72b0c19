"""Both lab scenarios in a dry run, with every real piece, the worker's AWS calls counted
at the botocore layer (QUENCH_LAB_LOG_CALLS): until a person approves going live, the
case makes no call that is not a read (Describe, Get, List, Lookup, Head), but for the
evidence bucket's own writes, counted apart, and the two calls that change nothing in
the account, counted apart too: sessions Quench takes (sts:AssumeRole) and its own
notifications (sns:Publish). Gone live, the real rounds plan exactly what the dry run did."""

import asyncio
import re
from collections import Counter

import pytest

from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab.scenario import run_scenario
from lab.world import EVIDENCE_BUCKET
from models.case import ActionKind, CaseStatus, Phase
from stack.embedded import EmbeddedStack
from tests.e2e.support import lab_stack_config, starter_approve, wait_for
from workflows.case import CaseWorkflow

pytestmark = pytest.mark.e2e
CALL = re.compile(r"aws call (\w[\w-]*):(\w+)(?: bucket=(\S+))?(?: workflow=(\S+))?")
READS = ("Describe", "Get", "List", "Lookup", "Head")
# Calls that change nothing in the account: a session Quench takes, its own notification.
QUENCH_OWN = {"sts:AssumeRole", "sns:Publish"}


@pytest.fixture(scope="module")
def dry_stack(tmp_path_factory):
    """A stack of its own, logging each AWS call the worker makes."""
    config = lab_stack_config(tmp_path_factory.mktemp("quench-dry-run"))
    config.extra_env["QUENCH_LAB_LOG_CALLS"] = "true"
    stack = EmbeddedStack(config)
    stack.start()
    yield stack
    stack.stop()


def _calls(stack, case_id: str) -> Counter[str]:
    """The worker's calls for this case (and its investigation), each as `kind service:Op`
    where kind is read, evidence (the evidence bucket's writes), quench (QUENCH_OWN) or
    change."""
    worker = next(p for p in stack.processes if p.name == "worker")
    counted: Counter[str] = Counter()
    for line in worker.log_path.read_text(errors="replace").splitlines():
        found = CALL.search(line)
        if found is None or not (found[4] or "").startswith(case_id):
            continue
        call = f"{found[1]}:{found[2]}"
        if found[2].startswith(READS):
            kind = "read"
        elif found[1] == "s3" and found[3] == EVIDENCE_BUCKET:
            kind = "evidence"
        elif call in QUENCH_OWN:
            kind = "quench"
        else:
            kind = "change"
        counted[f"{kind} {call}"] += 1
    return counted


def _changes(calls: Counter[str]) -> dict[str, int]:
    return {call: n for call, n in calls.items() if call.startswith("change ")}


def _plans(plans) -> list[list[str]]:
    return [[step.describe() for step in plan.steps] for plan in plans]


async def _approve_until(stack, handle, case_id: str, done) -> CaseStatus:
    """Approve each action but going live, with Quench's command line, until `done`."""
    approved: set[str] = set()
    async with asyncio.timeout(300):
        while True:
            status = await handle.query(CaseWorkflow.status)
            if done(status):
                return status
            pending = [
                a
                for a in status.pending_actions()
                if a.kind is not ActionKind.GO_LIVE and a.id not in approved
            ]
            for action in pending:
                approved.add(action.id)
                await starter_approve(stack, case_id, action.id)
            await asyncio.sleep(0.5)


def _go_live_waits(status: CaseStatus) -> bool:
    return any(a.kind is ActionKind.GO_LIVE for a in status.pending_actions())


@pytest.mark.parametrize("scenario", ["ec2-role", "user-key"])
async def test_a_lab_scenario_in_dry_run_changes_nothing_then_goes_live_to_the_same_plan(
    dry_stack, scenario
):
    stack = dry_stack
    case = await asyncio.to_thread(
        lambda: run_scenario(
            stack.aws_url,
            stack.webhook_url,
            LAB_WEBHOOK_TOKEN,
            Settings(lab=True).webhook_token_header,
            stack.state_dir,
            scenario,
            dry_run=True,
        )
    )
    client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case.case_id)
    dry = await _approve_until(stack, handle, case.case_id, _go_live_waits)

    calls = _calls(stack, case.case_id)
    assert _changes(calls) == {}, calls
    assert calls["evidence s3:PutObject"] > 0 and sum(calls.values()) > 20
    assert dry.dry_run and dry.would and len(dry.eradication) >= 2
    dry_plans = _plans(dry.eradication)
    assert sum(len(plan) for plan in dry_plans) >= 3

    go_live = next(a for a in dry.pending_actions() if a.kind is ActionKind.GO_LIVE)
    await starter_approve(stack, case.case_id, go_live.id)
    await wait_for(handle, lambda s: not s.dry_run)
    result = await _approve_until(
        stack, handle, case.case_id, lambda s: s.phase is Phase.CLOSED and s.report is not None
    )
    # The same world, now acted on: the real rounds found and planned what the dry run did.
    assert _plans(result.dry_run_eradication) == dry_plans
    assert _plans(result.eradication) == dry_plans
    assert all(s.outcome != "dry_run" for p in result.eradication for s in p.steps)
    # And the count sees changes when they are made.
    assert _changes(_calls(stack, case.case_id))
