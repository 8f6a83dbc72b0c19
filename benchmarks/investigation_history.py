"""How much history a case's investigation makes, by how many regions the account logs.

The investigation reads CloudTrail in parts, a region's day each: the principal's 45-day
baseline and the case's window, then again with every credential the attacker minted.
Each part is an activity of its own. This runs the investigation workflow on the dev
server with activities that answer at once (so only the history is measured, not AWS),
for 1, 4 and 17 regions, and prints each history's events and bytes: what the case's own
history would carry if the investigation ran inline, as it did before it was a child.

    python -m benchmarks.investigation_history
"""

import argparse
import asyncio
import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from benchmarks.finding_storm import machine
from models.activities import (
    CountBaselineInput,
    CountBaselineResult,
    InvestigateInput,
    PlanReadsInput,
    ReadPlan,
    ReadScopeInput,
    ReadScopeResult,
    ReadUnit,
)
from models.case import EvidenceRecord, InvestigationInput, InvestigationRef
from stack.binaries import temporal_cli
from tests.support import finding
from workflows.investigation import InvestigationWorkflow

# Every region an account has enabled by default, as an organisation trail logs them.
ALL_REGIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-west-1",
    "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "ap-south-1", "ap-northeast-1",
    "ap-northeast-2", "ap-northeast-3", "ap-southeast-1", "ap-southeast-2", "sa-east-1",
]  # fmt: skip
# Temporal's documented limits on one history: a warning at 10,240 events, failure at 51,200.
WARN_EVENTS, LIMIT_EVENTS = 10_240, 51_200


def _evidence(case_id: str, name: str) -> EvidenceRecord:
    key = f"cases/{case_id}/{name}.json"
    return EvidenceRecord(
        name=name,
        bucket="quench-evidence-123456789012",
        key=key,
        sha256=hashlib.sha256(key.encode()).hexdigest(),
        size_bytes=4096,
        captured_at=datetime(2026, 11, 22, 8, tzinfo=UTC),
    )


def _activities(regions: list[str]) -> list[Callable[..., Any]]:
    @activity.defn(name="plan_reads")
    async def plan_reads(input: PlanReadsInput) -> ReadPlan:
        units, day = [], input.start.replace(hour=0, minute=0, second=0, microsecond=0)
        while day < input.end:
            units += [ReadUnit(region=r, start=day, end=day + timedelta(days=1)) for r in regions]
            day += timedelta(days=1)
        return ReadPlan(principal_arn=input.principal_arn, units=units)

    @activity.defn(name="count_baseline")
    async def count_baseline(input: CountBaselineInput) -> CountBaselineResult:
        name = f"baseline-{input.unit.region}-{input.unit.start:%Y%m%dT%H%M%S}"
        return CountBaselineResult(counts=_evidence(input.case_id, name), calls=100)

    @activity.defn(name="read_scope")
    async def read_scope(input: ReadScopeInput) -> ReadScopeResult:
        name = f"{input.name}-{input.unit.region}-{input.unit.start:%Y%m%d}"
        return ReadScopeResult(records=_evidence(input.case_id, name), count=100)

    @activity.defn(name="investigate_credentials")
    async def investigate_credentials(input: InvestigateInput) -> InvestigationRef:
        return InvestigationRef(
            investigation=_evidence(input.case_id, input.name),
            chart=_evidence(input.case_id, f"{input.name}-volume"),
            principal_arn=input.principal_arn or "",
            hours_above_baseline=3,
            new_source_ips=["198.51.100.23"],
            new_api_calls=["iam:ListUsers"],
            credentials=input.credentials,
            baseline_parts=input.baseline_parts or [],
        )

    return [plan_reads, count_baseline, read_scope, investigate_credentials]


async def _history(client: Client, input: InvestigationInput, queue: str) -> tuple[int, int]:
    """The events and serialized bytes of one investigation's history."""
    handle = await client.start_workflow(
        InvestigationWorkflow.run, input, id=f"{input.case_id}/{input.name}", task_queue=queue
    )
    await handle.result()
    history = await handle.fetch_history()
    return len(history.events), len(history.to_json().encode())


async def measure(region_counts: list[int]) -> list[dict[str, int]]:
    opening = finding()
    rows = []
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=["--log-level", "error"],
    ) as env:
        for count in region_counts:
            queue = f"investigation-{uuid.uuid4()}"
            case_id = f"case-{count}-regions-{uuid.uuid4().hex[:8]}"
            first = InvestigationInput(
                case_id=case_id,
                account_id=opening.account_id,
                credentials=[opening.access_key.access_key_id],
                findings=[opening],
                scope_start=opening.first_seen - timedelta(hours=1),
                scope_end=opening.first_seen + timedelta(days=1),
                principal_arn="arn:aws:iam::123456789012:role/web-app-role",
            )
            activities = _activities(ALL_REGIONS[:count])
            async with Worker(
                env.client, task_queue=queue, workflows=[InvestigationWorkflow],
                activities=activities,
            ):  # fmt: skip
                events, size = await _history(env.client, first, queue)
                # Again with the minted credentials, the baseline's parts reused.
                again = first.model_copy(
                    update={
                        "credentials": [*first.credentials, "AKIABACKDOORKEY00001"],
                        "name": "investigation-all-credentials",
                        "baseline_parts": [
                            _evidence(case_id, f"baseline-{i}") for i in range(46 * count)
                        ],
                    }
                )
                events_again, size_again = await _history(env.client, again, queue)
            rows.append(
                {
                    "regions": count,
                    "events": events + events_again,
                    "bytes": size + size_again,
                    "first_events": events,
                    "again_events": events_again,
                }
            )
    return rows


def report(rows: list[dict[str, int]]) -> str:
    lines = [
        f"Machine: {machine()}",
        "| regions | investigation events (first + again) | history bytes | share of "
        f"Temporal's {WARN_EVENTS:,}-event warning |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['regions']} | {r['events']:,} ({r['first_events']:,} + {r['again_events']:,}) "
        f"| {r['bytes'] / 2**20:.1f} MiB | {r['events'] / WARN_EVENTS:.0%} |"
        for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--regions", type=int, nargs="+", default=[1, 4, 17])
    args = parser.parse_args()
    print(report(asyncio.run(measure(args.regions))))


if __name__ == "__main__":
    main()
