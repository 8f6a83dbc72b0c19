"""The CloudTrail slice: a credential's records in a window, read from gzip log files in S3;
and the classification of them, with the changes others made in the same window."""

import dataclasses
import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.cloudtrail import (
    CloudTrailActivities,
    CloudTrailS3Source,
    LookupEventsSource,
    TrailQuery,
)
from activities.evidence import EvidenceStore
from activities.faults import FaultInjector, parse_fault_plan
from models.activities import CheckActivityInput, ClassifyActivityInput, CloudTrailSliceInput
from tests.support import ACCOUNT, REGION, STOLEN_KEY

TRAIL_BUCKET = "quench-trail-test"
OTHER_KEY = "ASIAOTHERKEYEXAMPLE1"
OTHER_REGION = "us-west-2"
START = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
END = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)


def record(event_id: str, at: str, access_key_id: str | None = STOLEN_KEY) -> dict[str, Any]:
    identity: dict[str, Any] = {"type": "AssumedRole", "accountId": ACCOUNT}
    if access_key_id is not None:
        identity["accessKeyId"] = access_key_id
    return {
        "eventVersion": "1.09",
        "eventID": event_id,
        "eventTime": at,
        "eventSource": "iam.amazonaws.com",
        "eventName": "ListUsers",
        "userIdentity": identity,
    }


def log_key(stamp: str, region: str = REGION, prefix: str = "", unique: str = "a1B2") -> str:
    day = f"{stamp[0:4]}/{stamp[4:6]}/{stamp[6:8]}"
    key = (
        f"AWSLogs/{ACCOUNT}/CloudTrail/{region}/{day}/"
        f"{ACCOUNT}_CloudTrail_{region}_{stamp}Z_{unique}.json.gz"
    )
    return f"{prefix}/{key}" if prefix else key


def put_log(s3: Any, key: str, records: list[dict[str, Any]]) -> None:
    body = gzip.compress(json.dumps({"Records": records}).encode())
    s3.put_object(Bucket=TRAIL_BUCKET, Key=key, Body=body)


# The key's records inside the window, across three files.
IN_WINDOW = ["a-in", "b-in-1", "b-in-2", "c-in"]


def write_trail(s3: Any, prefix: str = "") -> None:
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    put_log(
        s3,
        log_key("20261122T0705", prefix=prefix),
        [
            record("a-before", "2026-11-22T06:58:00Z"),
            record("a-in", "2026-11-22T07:01:10Z"),
            record("a-other-key", "2026-11-22T07:02:00Z", OTHER_KEY),
        ],
    )
    put_log(
        s3,
        log_key("20261122T0720", prefix=prefix),
        [
            record("b-in-2", "2026-11-22T07:16:00Z"),
            record("b-service", "2026-11-22T07:15:30Z", None),
            record("b-in-1", "2026-11-22T07:15:00Z"),
        ],
    )
    put_log(
        s3,
        log_key("20261122T0740", prefix=prefix),
        [
            record("c-in", "2026-11-22T07:30:00Z"),
            record("c-after", "2026-11-22T07:31:00Z"),
            record("c-other-key", "2026-11-22T07:20:00Z", OTHER_KEY),
        ],
    )
    # Delivered before the window opened: not even read.
    put_log(s3, log_key("20261122T0650", prefix=prefix), [record("d-early", "2026-11-22T06:45Z")])
    # Another day, and a region the trail source is not told to read.
    put_log(s3, log_key("20261120T0710", prefix=prefix), [record("e-day", "2026-11-20T07:05Z")])
    put_log(
        s3,
        log_key("20261122T0710", region=OTHER_REGION, prefix=prefix),
        [record("f-region", "2026-11-22T07:05:00Z")],
    )


class RecordingSource(CloudTrailS3Source):
    """The S3 source, remembering which log files it read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: list[str] = []

    def log_file(self, key: str) -> bytes:
        self.read.append(key)
        return super().log_file(key)


def slice_input(case_id: str = "case-1") -> CloudTrailSliceInput:
    return CloudTrailSliceInput(
        case_id=case_id, account_id=ACCOUNT, access_key_id=STOLEN_KEY, start=START, end=END
    )


def record_heartbeats(env: ActivityEnvironment) -> list[list[Any]]:
    """Each heartbeat's details as the next attempt would get them: encoded when sent."""
    beats: list[list[Any]] = []
    env.on_heartbeat = lambda *details: beats.append(json.loads(json.dumps(details)))
    return beats


def stored_document(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


@pytest.fixture
def source(clients: AwsClients) -> RecordingSource:
    return RecordingSource(clients, TRAIL_BUCKET, "", [REGION])


@pytest.fixture
def cloudtrail(source: RecordingSource, evidence: EvidenceStore) -> CloudTrailActivities:
    return CloudTrailActivities(source, evidence)


@pytest.mark.parametrize("prefix", ["", "org-trail"])
def test_capture_cloudtrail_slice_keeps_only_the_keys_records_in_the_window(
    s3: Any,
    clients: AwsClients,
    evidence: EvidenceStore,
    activity_env: ActivityEnvironment,
    prefix: str,
) -> None:
    write_trail(s3, prefix)
    source = RecordingSource(clients, TRAIL_BUCKET, f"/{prefix}/" if prefix else "", [REGION])

    result = activity_env.run(
        CloudTrailActivities(source, evidence).capture_cloudtrail_slice, slice_input()
    )

    assert result.event_count == len(IN_WINDOW)
    assert source.read == [
        log_key(stamp, prefix=prefix)
        for stamp in ("20261122T0705", "20261122T0720", "20261122T0740")
    ]
    assert result.evidence.key == f"cases/case-1/evidence/cloudtrail-{STOLEN_KEY.lower()}.json"
    document = stored_document(s3, result.evidence.bucket, result.evidence.key)
    # Sorted by time: b-in-1 was written after b-in-2 in its file.
    assert [r["eventID"] for r in document["records"]] == IN_WINDOW
    assert document["access_key_id"] == STOLEN_KEY
    assert document["source"] == f"s3://{TRAIL_BUCKET}/{prefix}"


def test_capture_cloudtrail_slice_heartbeats_its_cursor_after_each_file(
    s3: Any, cloudtrail: CloudTrailActivities
) -> None:
    write_trail(s3)
    env = ActivityEnvironment()
    beats = record_heartbeats(env)

    env.run(cloudtrail.capture_cloudtrail_slice, slice_input())

    assert [
        (len(cursor["done"]), sorted(r["eventID"] for r in matches))
        for cursor, matches, _query in beats
    ] == [
        (1, ["a-in"]),
        (2, ["a-in", "b-in-1", "b-in-2"]),
        (3, ["a-in", "b-in-1", "b-in-2", "c-in"]),
    ]


def test_capture_cloudtrail_slice_does_not_change_details_it_already_heartbeated(
    s3: Any, cloudtrail: CloudTrailActivities
) -> None:
    write_trail(s3)
    env = ActivityEnvironment()
    sent: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: sent.append(details)

    env.run(cloudtrail.capture_cloudtrail_slice, slice_input())

    first_cursor, first_matches, _query = sent[0]
    assert len(first_cursor["done"]) == 1
    assert [r["eventID"] for r in first_matches] == ["a-in"]


@pytest.mark.parametrize("files_done", [1, 2, 3])
def test_capture_cloudtrail_slice_resumes_from_its_heartbeat_without_double_counting(
    s3: Any, source: RecordingSource, cloudtrail: CloudTrailActivities, files_done: int
) -> None:
    write_trail(s3)
    first_attempt = ActivityEnvironment()
    beats = record_heartbeats(first_attempt)
    first_attempt.run(cloudtrail.capture_cloudtrail_slice, slice_input("case-first"))
    details = beats[files_done - 1]
    all_keys = list(source.read)
    source.read.clear()
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=details)

    result = retry.run(cloudtrail.capture_cloudtrail_slice, slice_input("case-retry"))

    assert source.read == all_keys[files_done:]
    assert result.event_count == len(IN_WINDOW)
    document = stored_document(s3, result.evidence.bucket, result.evidence.key)
    assert [r["eventID"] for r in document["records"]] == IN_WINDOW


def test_capture_cloudtrail_slice_with_no_logs_is_empty_evidence(
    s3: Any, cloudtrail: CloudTrailActivities, activity_env: ActivityEnvironment
) -> None:
    s3.create_bucket(Bucket=TRAIL_BUCKET)

    result = activity_env.run(cloudtrail.capture_cloudtrail_slice, slice_input())

    assert result.event_count == 0
    document = stored_document(s3, result.evidence.bucket, result.evidence.key)
    assert document["records"] == []


def test_capture_cloudtrail_slice_resume_survives_a_file_delivered_in_between(
    s3: Any, clients: AwsClients, evidence: EvidenceStore
) -> None:
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    put_log(s3, log_key("20261122T0705"), [record("east-1", "2026-11-22T07:01:00Z")])
    put_log(
        s3,
        log_key("20261122T0705", region=OTHER_REGION),
        [record("west-1", "2026-11-22T07:02:00Z")],
    )
    put_log(
        s3,
        log_key("20261122T0720", region=OTHER_REGION),
        [record("west-2", "2026-11-22T07:14:00Z")],
    )
    cloudtrail = CloudTrailActivities(
        CloudTrailS3Source(clients, TRAIL_BUCKET, "", [REGION, OTHER_REGION]), evidence
    )
    first_attempt = ActivityEnvironment()
    beats = record_heartbeats(first_attempt)
    first_attempt.run(cloudtrail.capture_cloudtrail_slice, slice_input("case-first"))
    # The first attempt died after two files; then us-east-1 delivered its next file.
    put_log(s3, log_key("20261122T0725"), [record("east-2", "2026-11-22T07:18:00Z")])
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=beats[1])

    result = retry.run(cloudtrail.capture_cloudtrail_slice, slice_input("case-retry"))

    document = stored_document(s3, result.evidence.bucket, result.evidence.key)
    assert sorted(r["eventID"] for r in document["records"]) == [
        "east-1",
        "east-2",
        "west-1",
        "west-2",
    ]


def test_a_heartbeat_of_another_query_is_not_resumed(
    s3: Any, source: RecordingSource, cloudtrail: CloudTrailActivities
) -> None:
    """An activity that scans several times resumes only the scan its heartbeat names."""
    write_trail(s3)
    first_attempt = ActivityEnvironment()
    beats = record_heartbeats(first_attempt)
    first_attempt.run(cloudtrail.capture_cloudtrail_slice, slice_input("case-first"))
    cursor, matches, _query = beats[0]
    all_keys = list(source.read)
    source.read.clear()
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(
        retry.info, heartbeat_details=[cursor, matches, "TrailQuery(another scan)"]
    )

    result = retry.run(cloudtrail.capture_cloudtrail_slice, slice_input("case-retry"))

    assert source.read == all_keys
    assert result.event_count == len(IN_WINDOW)


_FINGERPRINT = """
from datetime import datetime, UTC
from activities.cloudtrail import TrailQuery
keys = frozenset(f"AKIAEXAMPLE{i:09d}" for i in range(8))
events = frozenset({"PutRolePolicy", "DeleteRolePolicy", "AttachRolePolicy", "CreateRole"})
at = datetime(2026, 11, 22, tzinfo=UTC)
print(TrailQuery("123456789012", keys, at, at, "app-role", events).fingerprint())
"""


def test_a_query_names_itself_the_same_in_every_worker_process() -> None:
    """A retry may run on another worker, whose string hashes (and so set order) differ."""
    printed = {
        subprocess.run(
            [sys.executable, "-c", _FINGERPRINT],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(printed) == 1


# A log the scan has to parse whole (its key is there, and simdjson refuses the nesting),
# deeper than the json module goes.
_TOO_DEEP = gzip.compress(
    b'{"Records":[{"eventVersion":"1.09","userIdentity":{"accessKeyId":"'
    + STOLEN_KEY.encode()
    + b'"},"eventTime":"2026-11-22T07:12:00Z","requestParameters":'
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}]}"
)


@pytest.mark.parametrize(
    ("body", "because"),
    [
        (b"not gzip at all", "it is not gzip, or its gzip stream is damaged"),
        (gzip.compress(b'{"Records":[')[:-8], "its gzip stream ends early"),
        (
            gzip.compress(
                b'{"Records":[{"userIdentity":{"accessKeyId":"' + STOLEN_KEY.encode() + b'"'
            ),
            "its content is not JSON",
        ),
        (_TOO_DEEP, "its JSON nests too deeply to read"),
    ],
    ids=["not-gzip", "truncated", "not-json", "too-deep"],
)
def test_a_file_that_is_not_a_log_is_a_clear_error_and_other_objects_are_not_read(
    s3: Any, source: RecordingSource, cloudtrail: CloudTrailActivities, body: bytes, because: str
) -> None:
    write_trail(s3)
    planted = log_key("20261122T0712", unique="junk")
    s3.put_object(Bucket=TRAIL_BUCKET, Key=planted, Body=body)
    s3.put_object(Bucket=TRAIL_BUCKET, Key=planted.replace(".json.gz", ".txt"), Body=b"x")

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(cloudtrail.capture_cloudtrail_slice, slice_input())

    assert raised.value.message == (
        f"s3://{TRAIL_BUCKET}/{planted} is not a readable CloudTrail log file: {because}"
    )
    assert raised.value.non_retryable
    assert not any(key.endswith(".txt") for key in source.read)


def test_a_scan_heartbeats_records_with_their_secrets_redacted(
    s3: Any, cloudtrail: CloudTrailActivities
) -> None:
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    minted = record("a-assume", "2026-11-22T07:01:10Z")
    minted["responseElements"] = {
        "credentials": {"accessKeyId": "ASIAMINTED0000000001", "sessionToken": "s3cr3t-token"}
    }
    put_log(s3, log_key("20261122T0705"), [minted])
    env = ActivityEnvironment()
    beats = record_heartbeats(env)

    env.run(cloudtrail.capture_cloudtrail_slice, slice_input())

    assert beats and "s3cr3t-token" not in json.dumps(beats)
    (_, matches, _) = beats[-1]
    assert matches[0]["responseElements"]["credentials"]["accessKeyId"] == "ASIAMINTED0000000001"


def test_the_watch_check_names_the_stopped_trails_whose_files_it_reads(
    s3: Any, clients: AwsClients, cloudtrail: CloudTrailActivities
) -> None:
    write_trail(s3)
    s3.create_bucket(Bucket="elsewhere")
    api = clients.client("cloudtrail")
    for name, bucket in (("management-events", TRAIL_BUCKET), ("data-events", TRAIL_BUCKET)):
        api.create_trail(Name=name, S3BucketName=bucket)
        api.start_logging(Name=name)
    api.create_trail(Name="other-account-copy", S3BucketName="elsewhere")  # never logging
    check = CheckActivityInput(
        account_id=ACCOUNT,
        access_key_ids=[STOLEN_KEY],
        start=datetime(2026, 11, 22, 7, 0, tzinfo=UTC),
        end=datetime(2026, 11, 22, 7, 30, tzinfo=UTC),
    )
    env = ActivityEnvironment()
    assert env.run(cloudtrail.check_credential_activity, check).not_logging == []

    api.stop_logging(Name="management-events")  # what the attacker did

    result = env.run(cloudtrail.check_credential_activity, check)
    assert result.not_logging == ["management-events"]
    # Event history does not depend on a trail: that source is never blind.
    assert LookupEventsSource(clients, [REGION]).not_logging() == []


def test_a_denied_trail_status_still_reads_the_calls_and_says_it_could_not_tell(
    s3: Any, boto3_session: Any, evidence: EvidenceStore
) -> None:
    """GetTrailStatus denied: the watch still sees the key's calls, and says that whether
    the trails were logging is unknown, naming the call."""
    write_trail(s3)
    faults = FaultInjector(parse_fault_plan({"cloudtrail:GetTrailStatus": "access_denied"}))
    clients = AwsClients(boto3_session, REGION, faults=faults)
    clients.client("cloudtrail").create_trail(Name="management-events", S3BucketName=TRAIL_BUCKET)
    cloudtrail = CloudTrailActivities(
        CloudTrailS3Source(clients, TRAIL_BUCKET, "", [REGION]), evidence
    )
    check = CheckActivityInput(
        account_id=ACCOUNT,
        access_key_ids=[STOLEN_KEY],
        start=datetime(2026, 11, 22, 7, 0, tzinfo=UTC),
        end=datetime(2026, 11, 22, 7, 30, tzinfo=UTC),
    )

    result = ActivityEnvironment().run(cloudtrail.check_credential_activity, check)

    assert result.denied_count + result.effective_count > 0
    assert result.not_logging == []
    assert "AccessDenied" in result.logging_unknown
    assert "(call cloudtrail:GetTrailStatus)" in result.logging_unknown


def _change(event_id: str, at: str, key: str, name: str, user: str) -> dict[str, Any]:
    return {
        **record(event_id, at, key),
        "eventName": name,
        "sourceIPAddress": "203.0.113.10" if key == OTHER_KEY else "198.51.100.23",
        "requestParameters": {"userName": user},
    }


def test_classification_names_other_principals_changes_in_the_window(
    s3: Any, cloudtrail: CloudTrailActivities, activity_env: ActivityEnvironment
) -> None:
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    put_log(
        s3,
        log_key("20261122T0710"),
        [
            _change("attacker-user", "2026-11-22T07:02:00Z", STOLEN_KEY, "CreateUser", "backup"),
            _change("admin-user", "2026-11-22T07:03:00Z", OTHER_KEY, "CreateUser", "new-hire"),
            _change("admin-read", "2026-11-22T07:04:00Z", OTHER_KEY, "GetUser", "new-hire"),
            _change("admin-late", "2026-11-22T07:45:00Z", OTHER_KEY, "DeleteUser", "old"),
        ],
    )

    result = activity_env.run(
        cloudtrail.classify_credential_activity,
        ClassifyActivityInput(
            case_id="case-1", account_id=ACCOUNT, access_key_ids=[STOLEN_KEY], start=START, end=END
        ),
    )

    assert [r.name for r in result.report.resources] == ["backup"]
    assert result.report.others_read
    assert [
        (c.event_id, c.event_name, c.target, c.access_key_id, c.source_ip)
        for c in result.report.others_changes
    ] == [("admin-user", "CreateUser", "new-hire", OTHER_KEY, "203.0.113.10")]
    document = stored_document(s3, result.evidence.bucket, result.evidence.key)
    assert [r["eventID"] for r in document["changes_by_others"]] == ["admin-user"]


def test_a_query_by_event_name_reads_every_caller_of_those_names() -> None:
    query = TrailQuery(ACCOUNT, frozenset(), START, END, event_names=frozenset({"CreateUser"}))
    assert query.by_event_name() and query.needles() == {"CreateUser"}
    assert query.lookup_attributes() == [("EventName", "CreateUser")]
    assert query.matches(_change("x", "2026-11-22T07:03:00Z", OTHER_KEY, "CreateUser", "u"))
    assert not query.matches(_change("y", "2026-11-22T07:03:00Z", OTHER_KEY, "GetUser", "u"))
    # A resource query with event names is still a resource query.
    named = dataclasses.replace(query, resource_name="u")
    assert not named.by_event_name() and named.needles() == {"u"}
