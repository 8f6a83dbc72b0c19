"""The investigation activity on moto's S3: the scope and the baseline read from the trail's
log files, the principal from its evidence snapshot, the investigation and its chart kept
as evidence with their hashes, and a retried baseline count that resumes without counting
a file twice."""

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.cloudtrail import CloudTrailS3Source
from activities.evidence import EvidenceStore
from activities.investigation import InvestigationActivities
from models.activities import (
    CountBaselineInput,
    InvestigateInput,
    PlanReadsInput,
    ReadScopeInput,
)
from models.investigation import Investigation
from tests.activities.test_cloudtrail import TRAIL_BUCKET, RecordingSource, log_key, put_log
from tests.support import ACCOUNT, REGION, ROLE, STOLEN_KEY, finding

ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/apps/{ROLE}"
LEGIT_KEY = "ASIALEGITSESSION0001"
CASE = "case-investigation"
SCOPE_START = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
SCOPE_END = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def _call(n: int, at: datetime, key: str, name: str, ip: str, arn: str = ROLE_ARN):
    return {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/session",
            "accessKeyId": key,
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": arn}},
        },
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "ec2.amazonaws.com",
        "eventName": name,
        "sourceIPAddress": ip,
        "userAgent": "Boto3/1.34.0" if key == LEGIT_KEY else "aws-cli/2.15.30",
        "eventID": f"event-{n:05d}",
    }


def _write_trail(s3: Any) -> None:
    """Two days of the application calling every hour, one file an hour; then the stolen
    key's calls in the scope window, and another role's calls nobody asked about."""
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    n = 0
    for hour in range(48):
        at = SCOPE_START - timedelta(days=2) + timedelta(hours=hour, minutes=10)
        n += 1
        put_log(
            s3,
            log_key(at.strftime("%Y%m%dT%H%M"), unique=f"b{hour:02d}"),
            [_call(n, at, LEGIT_KEY, "DescribeInstances", "10.0.0.5")],
        )
    scope = [
        _call(9001, SCOPE_START + timedelta(minutes=5), LEGIT_KEY, "DescribeInstances", "10.0.0.5"),
        _call(9002, SCOPE_START + timedelta(minutes=20), STOLEN_KEY, "ListUsers", "198.51.100.23"),
        _call(9003, SCOPE_START + timedelta(minutes=21), STOLEN_KEY, "ListRoles", "198.51.100.23"),
        _call(
            9004,
            SCOPE_START + timedelta(minutes=22),
            "ASIASOMEONEELSE00001",
            "ListUsers",
            "10.9.9.9",
            arn=f"arn:aws:iam::{ACCOUNT}:role/other",
        ),
        # Another role asks whose the stolen key is: it names the key, so it is one of the
        # key's events, and not one of the principal's calls.
        {
            **_call(
                9005,
                SCOPE_START + timedelta(minutes=30),
                "ASIASOMEONEELSE00001",
                "GetAccessKeyInfo",
                "10.9.9.9",
                arn=f"arn:aws:iam::{ACCOUNT}:role/other",
            ),
            "eventSource": "sts.amazonaws.com",
            "requestParameters": {"accessKeyId": STOLEN_KEY},
        },
    ]
    put_log(s3, log_key(SCOPE_START.strftime("%Y%m%dT%H%M"), unique="scope"), scope)


def _read(evidence: EvidenceStore, ref: Any) -> Investigation:
    """The investigation an activity kept, checked against its hash."""
    return Investigation.model_validate_json(evidence.read_verified(ref.investigation))


@pytest.fixture
def source(clients: AwsClients) -> RecordingSource:
    return RecordingSource(clients, TRAIL_BUCKET, "", [REGION])


def _input(evidence: EvidenceStore) -> InvestigateInput:
    snapshot = evidence.put_json(
        CASE,
        f"iam-role-{ROLE}",
        {
            "role": {"RoleName": ROLE, "Arn": ROLE_ARN},
            "inline_policies": [
                {
                    "name": "orders",
                    "document": {
                        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]
                    },
                }
            ],
            "attached_policies": [],
        },
    )
    return InvestigateInput(
        case_id=CASE,
        account_id=ACCOUNT,
        credentials=[STOLEN_KEY],
        findings=[finding(first_seen=SCOPE_START + timedelta(minutes=20))],
        scope_start=SCOPE_START,
        scope_end=SCOPE_END,
        baseline_days=2,
        principal_evidence=snapshot,
        # What the finding resolved to: the session, not the role; the snapshot wins.
        principal_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/session",
    )


def test_the_investigation_is_read_from_the_trail_and_kept_as_evidence(
    s3: Any, source: CloudTrailS3Source, evidence: EvidenceStore
):
    _write_trail(s3)
    env = ActivityEnvironment()

    ref = env.run(
        InvestigationActivities(source, evidence).investigate_credentials, _input(evidence)
    )

    assert ref.principal_arn == ROLE_ARN
    investigation = Investigation.model_validate_json(evidence.read_verified(ref.investigation))
    (stolen,) = investigation.sessions
    assert (stolen.calls, stolen.source_ips) == (2, ["198.51.100.23"])
    assert stolen.first_observed == SCOPE_START + timedelta(minutes=20)
    (asked,) = investigation.credential_events
    assert (asked.at, asked.access_key_id, asked.api, asked.caller_key) == (
        SCOPE_START + timedelta(minutes=30),
        STOLEN_KEY,
        "sts.amazonaws.com:GetAccessKeyInfo",
        "ASIASOMEONEELSE00001",
    )
    # 48 calls in 48 hours: one an hour; the first scope hour holds three.
    assert (investigation.baseline.calls, investigation.baseline.hourly_average) == (48, 1.0)
    assert [(h.hour, h.total, h.above_baseline) for h in investigation.hours] == [
        (SCOPE_START, 3, True),
        (SCOPE_START + timedelta(hours=1), 0, False),
        (SCOPE_START + timedelta(hours=2), 0, False),
    ]
    assert investigation.new_behaviour.api_calls == [
        "ec2.amazonaws.com:ListRoles",
        "ec2.amazonaws.com:ListUsers",
    ]
    assert ref.new_source_ips == ["198.51.100.23"] == investigation.new_behaviour.source_ips
    assert investigation.permissions == ["inline orders: Allow s3:* on *"]
    chart = evidence.read_verified(ref.chart)
    assert chart.startswith(b"\x89PNG") and ref.chart.key.endswith("investigation-volume.png")
    assert ref.hours_above_baseline == 1


@pytest.mark.parametrize("files_done", [1, 20, 47])
def test_a_retried_baseline_count_resumes_without_counting_a_file_twice(
    s3: Any, source: RecordingSource, evidence: EvidenceStore, files_done: int
):
    _write_trail(s3)
    activities = InvestigationActivities(source, evidence)
    first = ActivityEnvironment()
    beats: list[Any] = []
    first.on_heartbeat = lambda *details: beats.append(json.loads(json.dumps(details)))
    first.run(activities.investigate_credentials, _input(evidence))
    # The baseline's heartbeats are the ones with counts, not records.
    counting = [b for b in beats if isinstance(b[1], dict)]
    assert len(counting) == 49  # one a log file from the baseline's first day on
    source.read.clear()
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=counting[files_done - 1])

    ref = retry.run(
        activities.investigate_credentials,
        _input(evidence).model_copy(update={"case_id": f"{CASE}-retry"}),
    )

    investigation = Investigation.model_validate_json(evidence.read_verified(ref.investigation))
    assert investigation.baseline.calls == 48
    # The scope is read again (its heartbeat is not the one kept); the baseline's files
    # already counted are not.
    baseline_files = [k for k in source.read if not k.endswith("_scope.json.gz")]
    assert len(baseline_files) == 48 - files_done


def _read_whole_and_planned(
    s3: Any, source: RecordingSource, evidence: EvidenceStore, start: datetime, end: datetime
) -> tuple[ActivityEnvironment, InvestigationActivities, InvestigateInput, Any, Any]:
    """The trail written, the investigation read in one piece, and the read from start to
    end planned in parts, to hold the parts' answer to."""
    _write_trail(s3)
    activities = InvestigationActivities(source, evidence)
    env = ActivityEnvironment()
    asked = _input(evidence)
    whole = env.run(activities.investigate_credentials, asked)
    plan = env.run(
        activities.plan_reads,
        PlanReadsInput(
            account_id=ACCOUNT, start=start, end=end, principal_evidence=asked.principal_evidence
        ),
    )
    return env, activities, asked, whole, plan


def test_the_baseline_counted_in_parts_gives_the_same_investigation(
    s3: Any, source: RecordingSource, evidence: EvidenceStore
):
    env, activities, asked, whole, plan = _read_whole_and_planned(
        s3, source, evidence, SCOPE_START - timedelta(days=2), SCOPE_START
    )
    # The role's ARN, from its snapshot, once for every part.
    assert plan.principal_arn == ROLE_ARN
    units = plan.units
    # A region's UTC day each, back to back, ending just before the scope.
    tick = timedelta(microseconds=1)
    midnights = [datetime(2026, 11, day, tzinfo=UTC) for day in (21, 22)]
    assert [(u.region, u.start, u.end) for u in units] == [
        (REGION, SCOPE_START - timedelta(days=2), midnights[0] - tick),
        (REGION, midnights[0], midnights[1] - tick),
        (REGION, midnights[1], SCOPE_START - tick),
    ]
    parts = [
        env.run(
            activities.count_baseline,
            CountBaselineInput(
                case_id=CASE,
                account_id=ACCOUNT,
                principal_arn=plan.principal_arn,
                unit=unit,
            ),
        )
        for unit in units
    ]
    assert [p.calls for p in parts] == [18, 24, 6]
    split = env.run(
        activities.investigate_credentials,
        asked.model_copy(
            update={"case_id": f"{CASE}-parts", "baseline_parts": [p.counts for p in parts]}
        ),
    )

    assert _read(evidence, split).baseline == _read(evidence, whole).baseline
    assert _read(evidence, split).new_behaviour == _read(evidence, whole).new_behaviour


def test_the_scope_read_in_parts_gives_the_same_investigation(
    s3: Any, source: RecordingSource, evidence: EvidenceStore
):
    env, activities, asked, whole, plan = _read_whole_and_planned(
        s3, source, evidence, SCOPE_START, SCOPE_END + timedelta(microseconds=1)
    )
    units = plan.units
    parts = [
        env.run(
            activities.read_scope,
            ReadScopeInput(
                case_id=CASE,
                account_id=ACCOUNT,
                credentials=[STOLEN_KEY],
                principal_arn=plan.principal_arn,
                unit=unit,
                name="investigation-scope",
            ),
        )
        for unit in units
    ]
    # The role's three calls and the stolen key's, and the other role's call that names
    # the stolen key, not its call that does not.
    assert [p.count for p in parts] == [4]
    split = env.run(
        activities.investigate_credentials,
        asked.model_copy(
            update={"case_id": f"{CASE}-parts", "scope_parts": [p.records for p in parts]}
        ),
    )

    assert _read(evidence, split).hours == _read(evidence, whole).hours
    assert _read(evidence, split).sessions == _read(evidence, whole).sessions
    assert _read(evidence, split).credential_events == _read(evidence, whole).credential_events
