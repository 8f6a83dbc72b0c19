"""Recovery against moto: the trails as the case found them, and each attacker change
undone to a version whose origin is known (the evidence snapshot, or the last earlier call
in CloudTrail), once, and not at all when no such version exists."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import ERROR_INVALID_REQUEST, AwsClients
from activities.cloudtrail import Cursor, TrailQuery
from activities.evidence import EvidenceStore
from activities.faults import FaultInjector, parse_fault_plan
from activities.recovery import RecoveryActivities
from models.activities import (
    CaptureTrailsInput,
    PlanRecoveryInput,
    RestoreChangeInput,
    StartTrailsLoggingInput,
)
from models.case import EvidenceRecord, RecoveryOperation, RecoveryStep
from playbook.classify import AttackerChange, ChangeKind
from tests.support import ACCOUNT, REGION

CASE = f"case-{ACCOUNT}-AKIAEXAMPLEMALLORY01"
TRAIL = "management-events"
TRAIL_BUCKET = "trail-logs"
ATTACKER_KEY = "AKIAEXAMPLEMALLORY01"
ADMIN_KEY = "AKIAEXAMPLEALICE0001"
ROLE = "audit-readonly"
OUTSIDE = "arn:aws:iam::999988887777:root"
ORIGINAL_TRUST: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
        }
    ],
}
SELECTORS = [
    {
        "ReadWriteType": "All",
        "IncludeManagementEvents": True,
        "DataResources": [],
        "ExcludeManagementEventSources": [],
    }
]


class RecordsSource:
    """CloudTrail records held in memory, served through the source interface."""

    description = "records in memory"
    regions = ["us-east-1"]

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.queries: list[TrailQuery] = []

    def pages(
        self, query: TrailQuery, cursor: Cursor | None
    ) -> Iterator[tuple[Cursor, list[dict[str, Any]]]]:
        self.queries.append(query)
        yield {"done": True}, [r for r in self.records if query.matches(r)]

    def not_logging(self) -> list[str]:
        return []


def _record(
    name: str, key: str, at: datetime, request: dict[str, Any], error: str | None = None
) -> dict[str, Any]:
    record = {
        "eventVersion": "1.08",
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventName": name,
        "eventID": f"{name}-{key}-{at.timestamp():.0f}",
        "userIdentity": {"accessKeyId": key, "arn": f"arn:aws:iam::{ACCOUNT}:user/{key}"},
        "requestParameters": request,
    }
    if error:
        record["errorCode"] = error
    return record


def _change(kind: ChangeKind, target: str, at: datetime) -> AttackerChange:
    return AttackerChange(
        kind=kind,
        target=target,
        made_by=ATTACKER_KEY,
        event_id=f"{kind.value}-{target}",
        event_time=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


@pytest.fixture
def trail(clients: AwsClients, s3: Any) -> Any:
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    api = clients.client("cloudtrail")
    api.create_trail(
        Name=TRAIL,
        S3BucketName=TRAIL_BUCKET,
        S3KeyPrefix="org",
        IsMultiRegionTrail=True,
        EnableLogFileValidation=True,
    )
    api.put_event_selectors(TrailName=TRAIL, EventSelectors=SELECTORS)
    api.start_logging(Name=TRAIL)
    return api


def _activities(
    clients: AwsClients, evidence: EvidenceStore, records: list[dict[str, Any]] | None = None
) -> RecoveryActivities:
    return RecoveryActivities(clients, evidence, RecordsSource(records or []))


def _plan(
    activities: RecoveryActivities,
    changes: list[AttackerChange],
    snapshot: EvidenceRecord | None = None,
) -> list[RecoveryStep]:
    request = PlanRecoveryInput(
        case_id=CASE,
        account_id=ACCOUNT,
        changes=changes,
        trail_evidence=snapshot,
        lookback_seconds=30 * 24 * 3600,
    )
    return ActivityEnvironment().run(activities.plan_recovery, request).steps


def _restore(activities: RecoveryActivities, step: RecoveryStep) -> Any:
    return ActivityEnvironment().run(
        activities.restore_change, RestoreChangeInput(case_id=CASE, step=step)
    )


def test_the_trails_are_captured_as_evidence_with_their_status_and_selectors(
    clients, evidence, trail
):
    trail.stop_logging(Name=TRAIL)
    result = ActivityEnvironment().run(
        _activities(clients, evidence).capture_trails, CaptureTrailsInput(case_id=CASE)
    )
    assert result.trails == [TRAIL] and result.not_logging == [TRAIL]
    (captured,) = evidence.read_json(result.evidence.key)["trails"]
    assert captured["trail"]["S3BucketName"] == TRAIL_BUCKET
    assert captured["trail"]["IsMultiRegionTrail"] is True
    assert captured["is_logging"] is False
    assert captured["event_selectors"][0]["ReadWriteType"] == "All"


def _snapshot(clients: AwsClients, evidence: EvidenceStore) -> EvidenceRecord:
    activities = _activities(clients, evidence)
    return (
        ActivityEnvironment()
        .run(activities.capture_trails, CaptureTrailsInput(case_id=CASE))
        .evidence
    )


def test_stopped_logging_is_started_again_once(clients, evidence, trail):
    trail.stop_logging(Name=TRAIL)
    activities = _activities(clients, evidence)
    (step,) = _plan(activities, [_change(ChangeKind.LOGGING_STOPPED, TRAIL, datetime.now(UTC))])
    assert step.operation is RecoveryOperation.START_LOGGING and step.manual is None
    assert trail.get_trail_status(Name=TRAIL)["IsLogging"] is False  # planning only reads
    assert _restore(activities, step).outcome == "restored"
    assert trail.get_trail_status(Name=TRAIL)["IsLogging"] is True
    assert _restore(activities, step).outcome == "already_restored"


def test_trails_found_stopped_are_started_before_the_watch_once_and_a_gone_one_is_said(
    clients, evidence, trail
):
    trail.stop_logging(Name=TRAIL)
    start = _activities(clients, evidence).start_trails_logging
    asked = StartTrailsLoggingInput(trail_names=[TRAIL, "deleted-since"])
    first = ActivityEnvironment().run(start, asked)
    assert (first.started, first.already_logging, first.missing) == ([TRAIL], [], ["deleted-since"])
    assert trail.get_trail_status(Name=TRAIL)["IsLogging"] is True
    again = ActivityEnvironment().run(start, asked)
    assert (again.started, again.already_logging) == ([], [TRAIL])


def test_a_trail_whose_status_cannot_be_read_is_started_anyway(
    clients, boto3_session, evidence, trail
):
    """GetTrailStatus denied: StartLogging on a trail that logs already changes nothing, so
    the trail is started rather than left off; the outcome says its status was unknown."""
    trail.stop_logging(Name=TRAIL)
    faults = FaultInjector(parse_fault_plan({"cloudtrail:GetTrailStatus": "access_denied"}))
    blind = _activities(AwsClients(boto3_session, REGION, faults=faults), evidence)
    (step,) = _plan(
        _activities(clients, evidence),
        [_change(ChangeKind.LOGGING_STOPPED, TRAIL, datetime.now(UTC))],
    )

    restored = _restore(blind, step)
    started = ActivityEnvironment().run(
        blind.start_trails_logging, StartTrailsLoggingInput(trail_names=[TRAIL, "deleted-since"])
    )

    assert restored.outcome == "restored" and "could not be read" in restored.detail
    assert trail.get_trail_status(Name=TRAIL)["IsLogging"] is True
    assert (started.started, started.missing) == ([TRAIL], ["deleted-since"])


def test_a_trail_stopped_by_its_arn_is_started_by_name(clients, evidence, trail):
    arn = trail.describe_trails()["trailList"][0]["TrailARN"]
    trail.stop_logging(Name=TRAIL)
    activities = _activities(clients, evidence)
    (step,) = _plan(activities, [_change(ChangeKind.LOGGING_STOPPED, arn, datetime.now(UTC))])
    assert _restore(activities, step).outcome == "restored"
    assert trail.get_trail_status(Name=TRAIL)["IsLogging"] is True


def test_a_trail_deleted_after_the_snapshot_is_recreated_as_it_was(clients, evidence, trail):
    snapshot = _snapshot(clients, evidence)
    trail.delete_trail(Name=TRAIL)
    deleted_at = datetime.now(UTC) + timedelta(seconds=5)
    activities = _activities(clients, evidence)
    (step,) = _plan(activities, [_change(ChangeKind.TRAIL_DELETED, TRAIL, deleted_at)], snapshot)
    assert step.operation is RecoveryOperation.RECREATE_TRAIL
    assert step.source == f"evidence {snapshot.uri}"
    assert _restore(activities, step).outcome == "restored"
    (recreated,) = trail.describe_trails()["trailList"]
    assert recreated["Name"] == TRAIL and recreated["S3BucketName"] == TRAIL_BUCKET
    assert recreated["S3KeyPrefix"] == "org" and recreated["IsMultiRegionTrail"] is True
    assert recreated["LogFileValidationEnabled"] is True
    assert trail.get_event_selectors(TrailName=TRAIL)["EventSelectors"][0]["ReadWriteType"] == (
        "All"
    )
    assert trail.get_trail_status(Name=TRAIL)["IsLogging"] is True
    assert _restore(activities, step).outcome == "already_restored"


def test_a_trail_deleted_before_any_snapshot_goes_to_a_human(clients, evidence, trail):
    deleted_at = datetime.now(UTC) - timedelta(minutes=5)
    snapshot = _snapshot(clients, evidence)  # taken after the deletion: it cannot show the trail
    activities = _activities(clients, evidence)
    (step,) = _plan(activities, [_change(ChangeKind.TRAIL_DELETED, TRAIL, deleted_at)], snapshot)
    assert step.operation is None and step.outcome == "manual"
    assert step.manual is not None and "create-trail" in step.manual
    with pytest.raises(ApplicationError) as raised:
        _restore(activities, step)
    assert raised.value.type == ERROR_INVALID_REQUEST


def test_narrowed_event_selectors_come_back_from_the_snapshot(clients, evidence, trail):
    snapshot = _snapshot(clients, evidence)
    trail.put_event_selectors(
        TrailName=TRAIL,
        EventSelectors=[{"ReadWriteType": "ReadOnly", "IncludeManagementEvents": False}],
    )
    changed_at = datetime.now(UTC) + timedelta(seconds=5)
    activities = _activities(clients, evidence)
    (step,) = _plan(activities, [_change(ChangeKind.EVENT_SELECTORS, TRAIL, changed_at)], snapshot)
    assert step.operation is RecoveryOperation.RESTORE_EVENT_SELECTORS
    assert _restore(activities, step).outcome == "restored"
    (selector,) = trail.get_event_selectors(TrailName=TRAIL)["EventSelectors"]
    assert selector["ReadWriteType"] == "All" and selector["IncludeManagementEvents"] is True
    assert _restore(activities, step).outcome == "already_restored"


def test_event_selectors_changed_before_the_case_come_back_from_cloudtrail(
    clients, evidence, trail
):
    changed_at = datetime.now(UTC) - timedelta(hours=1)
    earlier = _record(
        "PutEventSelectors",
        ADMIN_KEY,
        changed_at - timedelta(days=3),
        {
            "trailName": TRAIL,
            "eventSelectors": [{"readWriteType": "All", "includeManagementEvents": True}],
        },
    )
    trail.put_event_selectors(
        TrailName=TRAIL,
        EventSelectors=[{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True}],
    )
    activities = _activities(clients, evidence, [earlier])
    (step,) = _plan(activities, [_change(ChangeKind.EVENT_SELECTORS, TRAIL, changed_at)])
    assert step.restore_to == {
        "EventSelectors": [{"ReadWriteType": "All", "IncludeManagementEvents": True}],
        "AdvancedEventSelectors": [],
    }
    assert step.source is not None and earlier["eventID"] in step.source
    assert _restore(activities, step).outcome == "restored"
    (selector,) = trail.get_event_selectors(TrailName=TRAIL)["EventSelectors"]
    assert selector["ReadWriteType"] == "All"


def _rewritten_role(iam: Any) -> None:
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(ORIGINAL_TRUST))
    attacker_trust = {
        "Version": "2012-10-17",
        "Statement": [
            *ORIGINAL_TRUST["Statement"],
            {"Effect": "Allow", "Principal": {"AWS": OUTSIDE}, "Action": "sts:AssumeRole"},
        ],
    }
    iam.update_assume_role_policy(RoleName=ROLE, PolicyDocument=json.dumps(attacker_trust))


def test_a_rewritten_trust_policy_is_restored_to_the_last_version_before_it(clients, evidence, iam):
    _rewritten_role(iam)
    changed_at = datetime.now(UTC) - timedelta(minutes=20)
    records = [
        # The creation, then the administrator's own later version: that one is restored.
        _record(
            "CreateRole",
            ADMIN_KEY,
            changed_at - timedelta(days=20),
            {"roleName": ROLE, "assumeRolePolicyDocument": json.dumps({"Statement": []})},
        ),
        _record(
            "UpdateAssumeRolePolicy",
            ADMIN_KEY,
            changed_at - timedelta(days=2),
            {"roleName": ROLE, "policyDocument": json.dumps(ORIGINAL_TRUST)},
        ),
        # A refused attempt and another role's change are not versions of this policy.
        _record(
            "UpdateAssumeRolePolicy",
            ADMIN_KEY,
            changed_at - timedelta(days=1),
            {"roleName": ROLE, "policyDocument": "{}"},
            error="MalformedPolicyDocument",
        ),
        _record(
            "UpdateAssumeRolePolicy",
            ADMIN_KEY,
            changed_at - timedelta(hours=2),
            {"roleName": "other-role", "policyDocument": "{}"},
        ),
        _record(
            "UpdateAssumeRolePolicy",
            ATTACKER_KEY,
            changed_at,
            {"roleName": ROLE, "policyDocument": "attacker's"},
        ),
    ]
    activities = _activities(clients, evidence, records)
    (step,) = _plan(activities, [_change(ChangeKind.TRUST_POLICY, ROLE, changed_at)])
    assert step.operation is RecoveryOperation.RESTORE_TRUST_POLICY
    assert step.restore_to == json.loads(json.dumps(ORIGINAL_TRUST, sort_keys=True))
    assert step.source is not None and records[1]["eventID"] in step.source
    result = _restore(activities, step)
    assert result.outcome == "restored"
    document = iam.get_role(RoleName=ROLE)["Role"]["AssumeRolePolicyDocument"]
    assert OUTSIDE not in json.dumps(document)
    assert document["Statement"][0]["Condition"] == ORIGINAL_TRUST["Statement"][0]["Condition"]
    # The attacker's version is kept as evidence before it is overwritten.
    kept = evidence.read_json(result.evidence.key)
    assert OUTSIDE in json.dumps(kept["document"])
    again = _restore(activities, step)
    assert again.outcome == "already_restored"
    assert evidence.read_json(again.evidence.key) == kept


def test_a_trust_policy_with_no_earlier_version_goes_to_a_human(clients, evidence, iam):
    _rewritten_role(iam)
    activities = _activities(clients, evidence)
    changed_at = datetime.now(UTC)
    (step,) = _plan(activities, [_change(ChangeKind.TRUST_POLICY, ROLE, changed_at)])
    assert step.operation is None and step.manual is not None and ROLE in step.manual
    document = iam.get_role(RoleName=ROLE)["Role"]["AssumeRolePolicyDocument"]
    assert OUTSIDE in json.dumps(document)  # untouched


def test_replaced_function_code_is_left_to_a_human(clients, evidence):
    activities = _activities(clients, evidence)
    (step,) = _plan(
        activities, [_change(ChangeKind.FUNCTION_CODE, "orders-api", datetime.now(UTC))]
    )
    assert step.operation is None and "orders-api" in (step.manual or "")


def test_a_snapshot_that_does_not_match_its_hash_is_not_restored_from(clients, evidence, trail, s3):
    snapshot = _snapshot(clients, evidence)
    s3.put_object(Bucket=snapshot.bucket, Key=snapshot.key, Body=b'{"trails": []}')
    activities = _activities(clients, evidence)
    change = _change(ChangeKind.TRAIL_DELETED, TRAIL, datetime.now(UTC) + timedelta(seconds=5))
    with pytest.raises(ApplicationError) as raised:
        _plan(activities, [change], snapshot)
    assert raised.value.type == ERROR_INVALID_REQUEST and "SHA-256" in str(raised.value)


def test_only_the_latest_change_of_a_kind_and_target_is_planned(clients, evidence, trail):
    activities = _activities(clients, evidence)
    now = datetime.now(UTC)
    steps = _plan(
        activities,
        [
            _change(ChangeKind.LOGGING_STOPPED, TRAIL, now),
            _change(ChangeKind.LOGGING_STOPPED, TRAIL, now - timedelta(minutes=3)),
        ],
    )
    assert len(steps) == 1 and steps[0].change.event_time == now.strftime("%Y-%m-%dT%H:%M:%SZ")
