"""Both lab scenarios in a dry run, with every real piece, the worker's AWS calls counted
at the botocore layer (QUENCH_LAB_LOG_CALLS): until a person approves going live, the
case makes no call that is not a read (Describe, Get, List, Lookup, Head), but for the
evidence bucket's own writes, counted apart, and the two calls that change nothing in
the account, counted apart too: sessions Quench takes (sts:AssumeRole) and its own
notifications (sns:Publish). Gone live, the real rounds plan exactly what the dry run did.
The stack asks for signed decisions: each approval goes with the approver's key."""

import asyncio
import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lab.world import EVIDENCE_BUCKET
from models.case import Action, ActionKind, ApprovalInput, CaseStatus, DecisionSignature, Phase
from playbook import signing
from stack.embedded import EmbeddedStack
from tests.e2e.support import (
    PROJECT_ROOT,
    lab_stack_config,
    open_lab_case,
    run_starter,
    wait_for,
)
from tests.playbook.test_signing import _keypair
from workflows.case import CaseWorkflow

pytestmark = pytest.mark.e2e
CALL = re.compile(r"aws call (\w[\w-]*):(\w+)(?: bucket=(\S+))?(?: workflow=(\S+))?")
READS = ("Describe", "Get", "List", "Lookup", "Head")
APPROVER = "e2e@example.com"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "dry-run"
# Calls that change nothing in the account: a session Quench takes, its own notification.
QUENCH_OWN = {"sts:AssumeRole", "sns:Publish"}


@pytest.fixture(scope="module")
def dry_stack(tmp_path_factory):
    """A stack of its own, logging each AWS call the worker makes, whose cases take only
    decisions signed with the approver's key (kept beside its state)."""
    state = tmp_path_factory.mktemp("quench-dry-run")
    private, public = _keypair()
    (state / "approver.key").write_bytes(private)
    config = lab_stack_config(state / "stack")
    config.extra_env["QUENCH_LAB_LOG_CALLS"] = "true"
    # No attacker returns here: a short watch, once gone live, is watch enough.
    config.extra_env["QUENCH_WATCH_SECONDS"] = "3"
    config.extra_env["QUENCH_CHECK_EVERY_SECONDS"] = "1"
    config.extra_env["QUENCH_APPROVER_KEYS"] = json.dumps({APPROVER: [public]})
    stack = EmbeddedStack(config)
    stack.start()
    yield stack, state / "approver.key"
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


async def _approve(stack, key: Path, case_id: str, action_id: str) -> None:
    out = await run_starter(
        stack,
        "approve",
        case_id,
        action_id,
        "--by",
        APPROVER,
        "--reason",
        "seen",
        "--key",
        str(key),
    )
    assert f"approve sent for {action_id}" in out


async def _approve_signed(handle, key: Path, action: Action) -> None:
    """What `quench approve --key` sends, from here: a process a decision costs seconds."""
    signed_at = datetime.now(UTC).replace(microsecond=0)
    message = signing.signed_message(
        handle.id, action.id, action.requested_at, "approved", APPROVER, "seen", signed_at
    )
    private = signing.private_key(await asyncio.to_thread(key.read_bytes))
    signature = signing.sign(private, message)
    decision = ApprovalInput(
        action_id=action.id,
        approver=APPROVER,
        reason="seen",
        signature=DecisionSignature(signed_at=signed_at, signature=signature),
    )
    await handle.execute_update(CaseWorkflow.approve_action, decision)


async def _approve_until(stack, key: Path, handle, case_id: str, done) -> CaseStatus:
    """Approve each action but going live, signed, until `done` (the first with Quench's
    command line, the rest as it sends them)."""
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
                if approved:
                    await _approve_signed(handle, key, action)
                else:
                    await _approve(stack, key, case_id, action.id)
                approved.add(action.id)
            await asyncio.sleep(0.5)


def _go_live_waits(status: CaseStatus) -> bool:
    return any(a.kind is ActionKind.GO_LIVE for a in status.pending_actions())


@pytest.mark.parametrize("scenario", ["ec2-role", "user-key"])
async def test_a_lab_scenario_in_dry_run_changes_nothing_then_goes_live_to_the_same_plan(
    dry_stack, scenario
):
    stack, key = dry_stack
    case, handle, opened = await open_lab_case(stack, scenario, dry_run=True)
    # Unsigned, a decision is refused and changes nothing.
    first = opened.pending_actions()[0]
    refused = await run_starter(
        stack,
        "approve",
        case.case_id,
        first.id,
        "--by",
        APPROVER,
        "--reason",
        "r",
        expect_status=1,
    )
    assert "unsigned: the approval policy asks for" in refused
    dry = await _approve_until(stack, key, handle, case.case_id, _go_live_waits)

    calls = _calls(stack, case.case_id)
    assert _changes(calls) == {}, calls
    # The count, for whoever wants the figures (test-artifacts/, as the Web UI's shots).
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"calls-{scenario}.json").write_text(json.dumps(dict(sorted(calls.items()))))
    assert calls["evidence s3:PutObject"] > 0 and sum(calls.values()) > 20
    assert dry.dry_run and dry.would and len(dry.eradication) >= 2
    dry_plans = _plans(dry.eradication)
    assert sum(len(plan) for plan in dry_plans) >= 3

    go_live = next(a for a in dry.pending_actions() if a.kind is ActionKind.GO_LIVE)
    await _approve(stack, key, case.case_id, go_live.id)
    await wait_for(handle, lambda s: not s.dry_run)
    result = await _approve_until(
        stack, key, handle, case.case_id, lambda s: s.phase is Phase.CLOSED and s.report is not None
    )
    # Every decision a person took is kept with the key that signed it.
    decided = [a.approval for a in result.actions if a.approval and not a.approval.automatic]
    assert decided and all(a.signed_with and a.signature for a in decided)
    # The same world, now acted on: the real rounds found and planned what the dry run did.
    assert _plans(result.dry_run_eradication) == dry_plans
    assert _plans(result.eradication) == dry_plans
    assert all(s.outcome != "dry_run" for p in result.eradication for s in p.steps)
    # And the count sees changes when they are made.
    assert _changes(_calls(stack, case.case_id))
