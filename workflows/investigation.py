"""The investigation workflow: a case's credentials read from CloudTrail in parts (a
region's day each, the principal's 45-day baseline and the case's window) and
investigated over them. A child of the case, so its hundreds of reads in a busy,
many-region account live in a history of their own and not in the case's."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.investigation import InvestigationActivities
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
    from playbook.investigation import BASELINE_DAYS
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT

T = TypeVar("T")

# Parts of the reads run at once (each a region's day of logs).
_READS_AT_ONCE = 8


@workflow.defn
class InvestigationWorkflow:
    @workflow.run
    async def run(self, input: InvestigationInput) -> InvestigationRef:
        found = await CredentialInvestigation(input).run()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return found


class CredentialInvestigation:
    """The reads in parts and the investigation over them: run by the investigation
    workflow, and inline by cases recorded before it existed."""

    def __init__(self, input: InvestigationInput) -> None:
        self._input = input

    async def run(self) -> InvestigationRef:
        input = self._input
        # The plan's end is not part of the window; the window's end is.
        scope = await self._read_scope(input.scope_end + timedelta(microseconds=1))
        parts = input.baseline_parts or await self._count_baseline()
        return await workflow.execute_activity_method(
            InvestigationActivities.investigate_credentials,
            InvestigateInput(
                case_id=input.case_id,
                account_id=input.account_id,
                credentials=input.credentials,
                findings=input.findings,
                scope_start=input.scope_start,
                scope_end=input.scope_end,
                principal_evidence=input.principal_evidence,
                principal_arn=input.principal_arn,
                baseline_parts=parts,
                scope_parts=scope,
                name=input.name,
            ),
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=AWS_RETRY,
            summary="Investigate from CloudTrail: the session, call volume against the "
            "principal's 45-day baseline, new behaviour",
        )

    async def _plan_reads(self, start: datetime, end: datetime, what: str) -> ReadPlan:
        input = self._input
        return await workflow.execute_activity_method(
            InvestigationActivities.plan_reads,
            PlanReadsInput(
                case_id=input.case_id,
                account_id=input.account_id,
                start=start,
                end=end,
                principal_evidence=input.principal_evidence,
                principal_arn=input.principal_arn,
            ),
            start_to_close_timeout=timedelta(minutes=1),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=AWS_RETRY,
            summary=f"Split {what} by region and day",
        )

    async def _in_parts(
        self, units: list[ReadUnit], read: Callable[[ReadUnit], Awaitable[T]]
    ) -> list[T]:
        """A read of each part that any worker can take, a few at once, in order."""
        done: list[T] = []
        for first in range(0, len(units), _READS_AT_ONCE):
            batch = units[first : first + _READS_AT_ONCE]
            done += await asyncio.gather(*(read(unit) for unit in batch))
        return done

    async def _count_baseline(self) -> list[EvidenceRecord]:
        """The principal's baseline counted in parts; each part is kept as evidence and
        only its reference comes back, so the history stays small however busy the
        principal."""
        input = self._input
        plan = await self._plan_reads(
            input.scope_start - timedelta(days=BASELINE_DAYS),
            input.scope_start,
            f"the {BASELINE_DAYS}-day baseline",
        )

        def count(unit: ReadUnit) -> Awaitable[CountBaselineResult]:
            return workflow.execute_activity_method(
                InvestigationActivities.count_baseline,
                CountBaselineInput(
                    case_id=input.case_id,
                    account_id=input.account_id,
                    principal_arn=plan.principal_arn,
                    unit=unit,
                ),
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Baseline: the principal's calls in {unit.region} on "
                f"{unit.start:%Y-%m-%d}",
            )

        return [c.counts for c in await self._in_parts(plan.units, count)]

    async def _read_scope(self, end: datetime) -> list[EvidenceRecord]:
        """The window's records read in parts, each kept as evidence."""
        input = self._input
        plan = await self._plan_reads(input.scope_start, end, "the investigation's window")

        def read(unit: ReadUnit) -> Awaitable[ReadScopeResult]:
            return workflow.execute_activity_method(
                InvestigationActivities.read_scope,
                ReadScopeInput(
                    case_id=input.case_id,
                    account_id=input.account_id,
                    credentials=input.credentials,
                    principal_arn=plan.principal_arn,
                    unit=unit,
                    name=f"{input.name}-scope",
                ),
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary=f"Investigation: calls in {unit.region} on {unit.start:%Y-%m-%d}",
            )

        return [r.records for r in await self._in_parts(plan.units, read)]
