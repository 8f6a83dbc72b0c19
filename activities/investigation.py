"""The investigation activity: a Detective-grade view of the compromised credential from
CloudTrail (the computations are in playbook/investigation.py).

Two reads of the trail: the scope window, every call of the principal and of the case's
credentials and every call that names one of those credentials, kept as records; and the
baseline, the principal's calls in the days before, kept only as counts, so months of a
busy role stay small. Both resume after a retry from their heartbeat. The investigation
and its chart are stored as evidence with their SHA-256.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity

from activities.cloudtrail import CloudTrailSource, TrailQuery, scan, unique_in_time_order
from activities.evidence import EvidenceStore
from activities.liveness import beat, heartbeating
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
from models.case import EvidenceRecord, InvestigationRef
from models.investigation import BaselineCounts
from playbook.chart import volume_chart
from playbook.investigation import count_baseline, investigate, merge_counts, permissions

_TICK = timedelta(microseconds=1)


class InvestigationActivities:
    def __init__(self, source: CloudTrailSource, evidence: EvidenceStore) -> None:
        self._source = source
        self._evidence = evidence

    @activity.defn
    @heartbeating
    def plan_reads(self, input: PlanReadsInput) -> ReadPlan:
        """A window in parts any worker can read: a region's UTC day each; and the
        principal's ARN, read once from its snapshot for every part."""
        principal_arn = _arn_of(self._read_snapshot(input.principal_evidence))
        units = []
        last = input.end - _TICK
        for region in self._source.regions:
            day = input.start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            while day <= last:
                units.append(
                    ReadUnit(
                        region=region,
                        start=max(day, input.start),
                        end=min(day + timedelta(days=1) - _TICK, last),
                    )
                )
                day += timedelta(days=1)
        return ReadPlan(principal_arn=principal_arn or input.principal_arn, units=units)

    @activity.defn
    @heartbeating
    def count_baseline(self, input: CountBaselineInput) -> CountBaselineResult:
        """One part of the principal's baseline, counted (resuming from its heartbeat) and
        kept as evidence, so the workflow holds only its reference."""
        unit = input.unit
        counts = BaselineCounts()
        if input.principal_arn:
            counts = count_scan(
                self._source,
                _baseline_query(
                    input.account_id, input.principal_arn, unit.start, unit.end, unit.region
                ),
            )
        name = f"baseline-{unit.region}-{unit.start:%Y%m%dT%H%M%S}"
        stored = self._evidence.put_json(input.case_id, name, counts.model_dump(mode="json"))
        return CountBaselineResult(counts=stored, calls=counts.calls)

    @activity.defn
    @heartbeating
    def read_scope(self, input: ReadScopeInput) -> ReadScopeResult:
        """One part of the scope read (resuming from its heartbeat) and kept as evidence,
        so the workflow holds only its reference."""
        unit = input.unit
        records = scan(
            self._source,
            _scope_query(
                input.account_id,
                input.credentials,
                input.principal_arn,
                unit.start,
                unit.end,
                unit.region,
            ),
        )
        name = f"{input.name}-{unit.region}-{unit.start:%Y%m%dT%H%M%S}"
        stored = self._evidence.put_json(input.case_id, name, {"records": records})
        return ReadScopeResult(records=stored, count=len(records))

    @activity.defn
    @heartbeating
    def investigate_credentials(self, input: InvestigateInput) -> InvestigationRef:
        snapshot = self._read_snapshot(input.principal_evidence)
        principal_arn = _arn_of(snapshot) or input.principal_arn or ""
        if input.scope_parts is not None:
            scope = unique_in_time_order(
                record
                for part in input.scope_parts
                for record in json.loads(self._evidence.read_verified(part))["records"]
            )
        else:
            scope = scan(
                self._source,
                _scope_query(
                    input.account_id,
                    input.credentials,
                    principal_arn or None,
                    input.scope_start,
                    input.scope_end,
                ),
            )
        baseline_start = input.scope_start - timedelta(days=input.baseline_days)
        counts = BaselineCounts()
        if input.baseline_parts is not None:
            counts = merge_counts(
                BaselineCounts.model_validate_json(self._evidence.read_verified(part))
                for part in input.baseline_parts
            )
        elif principal_arn:
            counts = count_scan(
                self._source,
                # The scope window starts here: its first second is not the baseline's.
                _baseline_query(
                    input.account_id, principal_arn, baseline_start, input.scope_start - _TICK
                ),
            )
        investigation = investigate(
            account_id=input.account_id,
            principal_arn=principal_arn or "unknown",
            credentials=input.credentials,
            findings=input.findings,
            permissions=permissions(snapshot),
            scope_start=input.scope_start,
            scope_end=input.scope_end,
            scope_records=scope,
            baseline_counts=counts,
            baseline_days=input.baseline_days,
        )
        stored = self._evidence.put_json(
            input.case_id, input.name, investigation.model_dump(mode="json")
        )
        chart = self._evidence.put_bytes(
            input.case_id, f"{input.name}-volume", volume_chart(investigation), "png", "image/png"
        )
        return InvestigationRef(
            investigation=stored,
            chart=chart,
            principal_arn=investigation.principal_arn,
            hours_above_baseline=len(investigation.hours_above_baseline()),
            new_source_ips=investigation.new_behaviour.source_ips,
            new_api_calls=investigation.new_behaviour.api_calls,
            credentials=input.credentials,
            baseline_parts=input.baseline_parts or [],
        )

    def _read_snapshot(self, record: EvidenceRecord | None) -> dict[str, Any]:
        if record is None:
            return {}
        document = json.loads(self._evidence.read_verified(record))
        return document if isinstance(document, dict) else {}


def _scope_query(
    account_id: str,
    credentials: list[str],
    principal_arn: str | None,
    start: datetime,
    end: datetime,
    region: str | None = None,
) -> TrailQuery:
    """The scope's read: the credentials' and the principal's calls, and every call that
    names a credential (in one region, or all the source reads)."""
    return TrailQuery(
        account_id=account_id,
        access_key_ids=frozenset(credentials),
        start=start,
        end=end,
        principal_arn=principal_arn,
        regions=frozenset({region} if region else ()),
        mentions=True,
    )


def _baseline_query(
    account_id: str, principal_arn: str, start: datetime, end: datetime, region: str | None = None
) -> TrailQuery:
    """The baseline's read: the principal's own calls (in one region, or all)."""
    return TrailQuery(
        account_id=account_id,
        access_key_ids=frozenset(),
        start=start,
        end=end,
        principal_arn=principal_arn,
        regions=frozenset({region} if region else ()),
    )


def _arn_of(snapshot: dict[str, Any]) -> str | None:
    """The role's or user's ARN (with its path) from its evidence snapshot."""
    for kind in ("role", "user"):
        arn = (snapshot.get(kind) or {}).get("Arn")
        if arn:
            return str(arn)
    return None


def count_scan(source: CloudTrailSource, query: TrailQuery) -> BaselineCounts:
    """The counts of every matching record, from inside an activity: the cursor and the
    counts so far are heartbeated (never the records), and a retry resumes from them."""
    details = activity.info().heartbeat_details
    asked = query.fingerprint()
    resume: dict[str, Any] | None = None
    counts = BaselineCounts()
    if len(details) == 3 and details[2] == asked:
        resume, counts = dict(details[0]), BaselineCounts.model_validate(details[1])
    for cursor, found in source.pages(query, resume):
        counts = count_baseline(counts, found)
        beat(dict(cursor), counts.model_dump(), asked)
    return counts
