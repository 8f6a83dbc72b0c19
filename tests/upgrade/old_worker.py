"""Run inside an older Quench's source tree (its path first on PYTHONPATH): that version's
worker, with its own test double for AWS, on a task queue; with --start, it also opens a
case the way that version did, and prints the case's id once it awaits its first approval.

Only what every version has is used: `worker.WORKFLOWS`, the case workflow's `run`, its
`CaseInput` and `CasePolicy`, and the FakeAws and attack records of its tests."""

import argparse
import asyncio
import uuid

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from models.case import CaseInput, CasePolicy
from tests.playbook.test_classify import _attack_records
from tests.support import STOLEN_KEY, finding
from tests.workflows.test_case_workflow import FakeAws
from worker import WORKFLOWS
from workflows.case import CaseWorkflow


def attacked_aws() -> FakeAws:
    """AWS as the attacker left it: a backdoor user and more, for eradication to remove."""
    fake = FakeAws()
    fake.attacker_records = {STOLEN_KEY: _attack_records()}
    return fake


async def main(address: str, queue: str, start: bool) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    async with Worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=FakeAws().activities()
    ):
        if start:
            opening = finding()  # the stolen key the attack records name
            case_id = f"case-upgrade-{uuid.uuid4().hex[:12]}"
            policy = CasePolicy(watch_seconds=1, check_every_seconds=1, delivery_lag_seconds=0)
            handle = await client.start_workflow(
                CaseWorkflow.run,
                CaseInput(case_id=case_id, finding=opening, policy=policy),
                id=case_id,
                task_queue=queue,
            )
            while True:
                if (await handle.query(CaseWorkflow.status)).pending_actions():
                    break
                await asyncio.sleep(0.2)
            print(f"awaiting approval: {case_id}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--start", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.address, args.task_queue, args.start))
