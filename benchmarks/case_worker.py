"""A worker that runs case workflows and no activities, for the finding-storm benchmark.

The webhook's answer comes from the case's update handler, so a worker must run for any
finding to be accepted; the cases' activities (AWS) are not part of taking a finding, so
none are registered and each case waits for its first one.
"""

import argparse
import asyncio

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from worker import WORKFLOWS

READY_LINE = "case worker polling"


async def main(address: str, namespace: str, task_queues: list[str]) -> None:
    client = await Client.connect(
        address, namespace=namespace, data_converter=pydantic_data_converter
    )
    workers = [Worker(client, task_queue=q, workflows=WORKFLOWS) for q in task_queues]
    async with asyncio.TaskGroup() as group:
        for worker in workers:
            group.create_task(worker.run())
        print(READY_LINE, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", action="append", required=True, dest="task_queues")
    args = parser.parse_args()
    asyncio.run(main(args.address, args.namespace, args.task_queues))
