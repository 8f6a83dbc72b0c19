"""The investigation: the Detective-grade view of the credentials from CloudTrail (their
sessions, the principal's call volume against its 45-day baseline, what is new), read in
parts that any worker can take and kept as evidence. It runs beside the case; a failure
is an open item, never a stuck case."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

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
    from models.case import EvidenceRecord
    from models.principal import Credential
    from playbook.investigation import BASELINE_DAYS
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY

T = TypeVar("T")

# Parts of the investigation's reads run at once (each a region's day of logs).
_READS_AT_ONCE = 8


class Investigation:
    def __init__(self, record: CaseRecord) -> None:
        self._record = record

    async def investigate(
        self, credential: Credential, keys: list[str], name: str = "investigation"
    ) -> None:
        """Investigate `keys`, the credential and any the attacker minted, from the likely
        compromise to now."""
        record = self._record
        status = record.status
        findings = status.findings
        scope_start = min(f.first_seen for f in findings) - timedelta(
            seconds=record.policy.compromise_margin_seconds
        )
        snapshot = next(
            (e for e in status.evidence if e.name.startswith(("iam-role-", "iam-user-"))),
            None,
        )
        try:
            scope_end = workflow.now()
            scope = await self._read_scope(
                scope_start,
                # The plan's end is not part of the window; now is.
                scope_end + timedelta(microseconds=1),
                keys,
                snapshot,
                credential,
                name,
            )
            earlier = status.investigation
            parts = (
                earlier.baseline_parts
                if earlier is not None and earlier.baseline_parts
                else await self._count_baseline(scope_start, snapshot, credential)
            )
            ref = await workflow.execute_activity_method(
                InvestigationActivities.investigate_credentials,
                InvestigateInput(
                    case_id=status.case_id,
                    account_id=status.account_id,
                    credentials=keys,
                    findings=findings,
                    scope_start=scope_start,
                    scope_end=scope_end,
                    principal_evidence=snapshot,
                    principal_arn=credential.principal.arn,
                    baseline_parts=parts,
                    scope_parts=scope,
                    name=name,
                ),
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=AWS_RETRY,
                summary="Investigate from CloudTrail: the session, call volume against the "
                "principal's 45-day baseline, new behaviour",
            )
        except ActivityError as failure:
            cause = failure.cause
            reason = cause.message if isinstance(cause, FailureError) else failure.message
            status.open_items.append(f"the CloudTrail investigation failed: {reason}")
            record.refresh()
            return
        status.investigation = ref
        record.record_evidence(ref.investigation)
        record.record_evidence(ref.chart)
        record.note(
            f"investigation of {ref.principal_arn}: {ref.hours_above_baseline} hours above "
            f"baseline; new source IPs {', '.join(ref.new_source_ips) or 'none'}; "
            f"{len(ref.new_api_calls)} API calls never made before"
        )
        record.refresh()

    async def every_credential(self) -> None:
        """Once the rounds found the credentials the attacker minted, the investigation
        again with all of them, so the report's session timeline has every one."""
        status = self._record.status
        credential = status.credential
        if status.investigation is None or credential is None:
            return
        keys = [credential.access_key_id]
        for plan in status.eradication:
            keys += [c.access_key_id for c in plan.new_credentials if c.access_key_id not in keys]
        if len(keys) == 1:
            return
        await self.investigate(credential, keys, name="investigation-all-credentials")

    async def _plan_reads(
        self,
        start: datetime,
        end: datetime,
        snapshot: EvidenceRecord | None,
        credential: Credential,
        what: str,
    ) -> ReadPlan:
        return await workflow.execute_activity_method(
            InvestigationActivities.plan_reads,
            PlanReadsInput(
                account_id=self._record.status.account_id,
                start=start,
                end=end,
                principal_evidence=snapshot,
                principal_arn=credential.principal.arn,
            ),
            start_to_close_timeout=timedelta(minutes=1),
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

    async def _count_baseline(
        self, scope_start: datetime, snapshot: EvidenceRecord | None, credential: Credential
    ) -> list[EvidenceRecord]:
        """The principal's baseline counted in parts (a region's day each); each part is
        kept as evidence and only its reference comes back, so the history stays small
        however busy the principal."""
        status = self._record.status
        plan = await self._plan_reads(
            scope_start - timedelta(days=BASELINE_DAYS),
            scope_start,
            snapshot,
            credential,
            f"the {BASELINE_DAYS}-day baseline",
        )

        def count(unit: ReadUnit) -> Awaitable[CountBaselineResult]:
            return workflow.execute_activity_method(
                InvestigationActivities.count_baseline,
                CountBaselineInput(
                    case_id=status.case_id,
                    account_id=status.account_id,
                    principal_arn=plan.principal_arn,
                    unit=unit,
                ),
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=AWS_RETRY,
                summary=f"Baseline: the principal's calls in {unit.region} on "
                f"{unit.start:%Y-%m-%d}",
            )

        return [c.counts for c in await self._in_parts(plan.units, count)]

    async def _read_scope(
        self,
        scope_start: datetime,
        scope_end: datetime,
        keys: list[str],
        snapshot: EvidenceRecord | None,
        credential: Credential,
        name: str,
    ) -> list[EvidenceRecord]:
        """The scope's records read in parts (a region's day each), each kept as evidence."""
        status = self._record.status
        plan = await self._plan_reads(
            scope_start, scope_end, snapshot, credential, "the investigation's window"
        )

        def read(unit: ReadUnit) -> Awaitable[ReadScopeResult]:
            return workflow.execute_activity_method(
                InvestigationActivities.read_scope,
                ReadScopeInput(
                    case_id=status.case_id,
                    account_id=status.account_id,
                    credentials=keys,
                    principal_arn=plan.principal_arn,
                    unit=unit,
                    name=f"{name}-scope",
                ),
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=AWS_RETRY,
                summary=f"Investigation: calls in {unit.region} on {unit.start:%Y-%m-%d}",
            )

        return [r.records for r in await self._in_parts(plan.units, read)]
