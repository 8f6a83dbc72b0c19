"""CloudTrail's LookupEvents source (botocore's Stubber: moto lacks the API) and the
containment watch's check over either source."""

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.stub import Stubber
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.cloudtrail import (
    CloudTrailActivities,
    CloudTrailS3Source,
    LookupEventsSource,
    RateLimiter,
    TrailQuery,
)
from activities.evidence import EvidenceStore
from models.activities import CheckActivityInput
from tests.activities.test_cloudtrail import TRAIL_BUCKET, log_key, put_log, record
from tests.support import ACCOUNT, REGION, STOLEN_KEY

OTHER_KEY = "AKIABACKDOORKEY00001"
START = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
END = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)


class StubbedTrailClients(AwsClients):
    def __init__(self, cloudtrail: Any) -> None:
        super().__init__(boto3.Session(region_name=REGION), REGION)
        self._cloudtrail = cloudtrail

    def client(self, service: str, region: str | None = None) -> Any:
        assert service == "cloudtrail"
        return self._cloudtrail


def _client() -> Any:
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("cloudtrail")


def _event(event_id: str, at: str, key: str, error: str | None = None) -> dict[str, Any]:
    cloudtrail_event = record(event_id, at, key)
    if error:
        cloudtrail_event["errorCode"] = error
    return {
        "EventId": event_id,
        "EventName": "ListUsers",
        "EventTime": datetime.fromisoformat(at.replace("Z", "+00:00")),
        "AccessKeyId": key,
        "CloudTrailEvent": json.dumps(cloudtrail_event),
    }


def _expect(
    stub: Stubber,
    key: str,
    events: list[dict],
    token_in=None,
    token_out=None,
    attribute: str = "AccessKeyId",
) -> None:
    params: dict[str, Any] = {
        "LookupAttributes": [{"AttributeKey": attribute, "AttributeValue": key}],
        "StartTime": START,
        "EndTime": END,
        "MaxResults": 50,
    }
    if token_in:
        params["NextToken"] = token_in
    response: dict[str, Any] = {"Events": events}
    if token_out:
        response["NextToken"] = token_out
    stub.add_response("lookup_events", response, params)


def _no_wait() -> RateLimiter:
    return RateLimiter(2.0, clock=lambda: 0.0, sleep=lambda _: None)


def _query(mentions: bool = False) -> TrailQuery:
    return TrailQuery(ACCOUNT, frozenset({STOLEN_KEY, OTHER_KEY}), START, END, mentions=mentions)


def test_lookup_pages_through_every_key_and_token():
    client = _client()
    with Stubber(client) as stub:
        # Keys are looked up in sorted order: the AKIA key first.
        _expect(stub, OTHER_KEY, [_event("k2-1", "2026-11-22T07:05:00Z", OTHER_KEY)])
        _expect(
            stub, STOLEN_KEY, [_event("k1-1", "2026-11-22T07:01:00Z", STOLEN_KEY)], token_out="t1"
        )
        _expect(
            stub,
            STOLEN_KEY,
            [_event("k1-2", "2026-11-22T07:02:00Z", STOLEN_KEY, "AccessDenied")],
            token_in="t1",
        )
        source = LookupEventsSource(StubbedTrailClients(client), [REGION], limiter=_no_wait)
        pages = list(source.pages(_query(), None))
        stub.assert_no_pending_responses()
    assert [cursor for cursor, _ in pages] == [
        {"unit": 1, "token": None},
        {"unit": 1, "token": "t1"},
        {"unit": 2, "token": None},
    ]
    assert [r["eventID"] for _, found in pages for r in found] == ["k2-1", "k1-1", "k1-2"]


def test_calls_that_name_a_key_are_looked_up_by_it_as_a_resource():
    named = _event("m-1", "2026-11-22T07:10:00Z", "AKIAADMINKEY00000001")
    named_event = json.loads(named["CloudTrailEvent"])
    named_event.update(
        eventName="UpdateAccessKey",
        requestParameters={"accessKeyId": OTHER_KEY, "status": "Inactive"},
    )
    named["CloudTrailEvent"] = json.dumps(named_event)
    # Event history can list a resource the call's documents do not hold: matches() decides.
    unrelated = _event("m-2", "2026-11-22T07:11:00Z", "AKIAADMINKEY00000001")
    client = _client()
    with Stubber(client) as stub:
        _expect(stub, OTHER_KEY, [])
        _expect(stub, STOLEN_KEY, [_event("k1-1", "2026-11-22T07:01:00Z", STOLEN_KEY)])
        _expect(stub, OTHER_KEY, [named, unrelated], attribute="ResourceName")
        _expect(stub, STOLEN_KEY, [], attribute="ResourceName")
        source = LookupEventsSource(StubbedTrailClients(client), [REGION], limiter=_no_wait)
        found = [r for _, page in source.pages(_query(mentions=True), None) for r in page]
        stub.assert_no_pending_responses()
    assert [r["eventID"] for r in found] == ["k1-1", "m-1"]


def test_lookup_resumes_at_its_token_after_a_retry():
    client = _client()
    with Stubber(client) as stub:
        _expect(
            stub,
            STOLEN_KEY,
            [_event("k1-2", "2026-11-22T07:02:00Z", STOLEN_KEY)],
            token_in="t1",
        )
        source = LookupEventsSource(StubbedTrailClients(client), [REGION], limiter=_no_wait)
        pages = list(source.pages(_query(), {"unit": 1, "token": "t1"}))
        stub.assert_no_pending_responses()
    assert [r["eventID"] for _, found in pages for r in found] == ["k1-2"]


def test_rate_limiter_spaces_calls_to_its_rate():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    assert slept == [0.5, 0.5, 0.5]
    now[0] += 10
    limiter.wait()
    assert slept == [0.5, 0.5, 0.5]


def test_the_watch_check_separates_denied_attempts_from_calls_that_worked(
    s3: Any, clients: AwsClients, evidence: EvidenceStore
):
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    denied = record("denied", "2026-11-22T07:10:00Z", STOLEN_KEY)
    denied["errorCode"] = "AccessDenied"
    authorised_failure = record("no-such", "2026-11-22T07:11:00Z", OTHER_KEY)
    authorised_failure["errorCode"] = "NoSuchEntity"
    # AWS answers GetCallerIdentity for a revoked session too: no sign containment failed.
    who_am_i = record("whoami", "2026-11-22T07:13:00Z", STOLEN_KEY)
    who_am_i.update(eventSource="sts.amazonaws.com", eventName="GetCallerIdentity")
    put_log(
        s3,
        log_key("20261122T0715"),
        [
            denied,
            record("worked", "2026-11-22T07:12:00Z", OTHER_KEY),
            authorised_failure,
            record("someone-else", "2026-11-22T07:12:00Z", "AKIAUNRELATED0000001"),
            who_am_i,
        ],
    )
    activities = CloudTrailActivities(
        CloudTrailS3Source(clients, TRAIL_BUCKET, "", [REGION]), evidence
    )
    result = ActivityEnvironment().run(
        activities.check_credential_activity,
        CheckActivityInput(
            account_id=ACCOUNT, access_key_ids=[STOLEN_KEY, OTHER_KEY], start=START, end=END
        ),
    )
    assert (result.effective_count, result.denied_count) == (2, 2)
    # A call that failed after authorisation (NoSuchEntity) still proves the key works; the
    # attempts follow the calls that worked.
    assert [(e.event_id, e.denied) for e in result.events] == [
        ("no-such", False),
        ("worked", False),
        ("denied", True),
        ("whoami", False),
    ]


def test_the_watch_check_resumes_from_its_heartbeat(
    s3: Any, clients: AwsClients, evidence: EvidenceStore
):
    s3.create_bucket(Bucket=TRAIL_BUCKET)
    put_log(s3, log_key("20261122T0705"), [record("one", "2026-11-22T07:01:00Z")])
    put_log(s3, log_key("20261122T0715"), [record("two", "2026-11-22T07:11:00Z")])
    activities = CloudTrailActivities(
        CloudTrailS3Source(clients, TRAIL_BUCKET, "", [REGION]), evidence
    )
    first = ActivityEnvironment()
    beats: list[Any] = []
    first.on_heartbeat = lambda *details: beats.append(json.loads(json.dumps(details)))
    request = CheckActivityInput(
        account_id=ACCOUNT, access_key_ids=[STOLEN_KEY], start=START, end=END
    )
    first.run(activities.check_credential_activity, request)
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=beats[0])
    result = retry.run(activities.check_credential_activity, request)
    assert [e.event_id for e in result.events] == ["one", "two"]
