"""CloudTrail: what credentials did over a time window, from one of two sources behind one
interface, chosen by configuration:

- the trail's log files in S3 (gzip JSON under AWSLogs/<account>/CloudTrail/<region>/...),
  complete and cheap for any window; a file is parsed only around the keys or resource
  name asked for (activities/trailscan.py);
- the LookupEvents API, for small recent windows where no trail bucket is readable
  (management events only, 90 days, 2 calls per second per account and region).

Scans heartbeat their cursor and the matches so far, and resume from them after a retry.
"""

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.accounts import acting_in
from activities.aws import ERROR_INVALID_REQUEST, AwsClients, aws_errors
from activities.evidence import EvidenceStore
from activities.liveness import beat, heartbeating
from activities.redaction import redact
from activities.trailscan import (
    UNREADABLE_LOG_ERRORS,
    by_credential,
    log_records,
    mentions_credential,
    read_log,
    scan_log,
    unreadable_because,
)
from models.activities import (
    CheckActivityInput,
    CheckActivityResult,
    ClassifyActivityInput,
    ClassifyActivityResult,
    CloudTrailSliceInput,
    CloudTrailSliceResult,
    TrailEvent,
)
from playbook.classify import CHANGE_EVENTS, changes_by_others, classify
from playbook.investigation import by_principal

# CloudTrail delivers a file about every 5 minutes, usually within 15 minutes of the calls
# in it: a record at time t sits in a file stamped between t and t + this margin.
DELIVERY_MARGIN = timedelta(hours=1)
# A file's name is stamped a little before the last of its records may be: files stamped up
# to this long before a window can hold its first records.
EARLY_STAMP = timedelta(minutes=5)
# Error codes that mean the call was refused for lack of permission: the credential is
# contained. Any other outcome, success or a failure after authorisation, means it works.
DENIED_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "Client.UnauthorizedOperation",
        "UnauthorizedOperation",
        "Client.InvalidClientTokenId",
        "InvalidClientTokenId",
        "ExpiredToken",
        "Client.AuthFailure",
    }
)
EVENTS_KEPT_IN_RESULT = 100
# Other principals' changes a round hands the workflow at most (all are in its evidence).
OTHERS_KEPT_IN_RESULT = 200
_STAMP = re.compile(r"_(\d{8}T\d{4})Z_")


# Request parameters that name the resource a call acts on, for resource-scoped scans.
_RESOURCE_PARAMETERS = ("roleName", "userName", "name", "trailName", "functionName", "policyArn")


@dataclass(frozen=True)
class TrailQuery:
    """The records of some credentials in a window, and with `principal_arn` every call of
    that user or of any session of that role; or, with `resource_name`, the calls (of
    `event_names`, by anyone) that acted on one resource; or, with `event_names` alone,
    every call of those names by anyone."""

    account_id: str
    access_key_ids: frozenset[str]
    start: datetime
    end: datetime
    resource_name: str | None = None
    event_names: frozenset[str] = frozenset()
    principal_arn: str | None = None
    # Only these of the source's regions (all of them when empty): a large read is split
    # by region and day.
    regions: frozenset[str] = frozenset()
    # Also the calls, by anyone, that name one of the keys in their requestParameters or
    # responseElements: the CreateAccessKey that minted it, the UpdateAccessKey that
    # deactivated it.
    mentions: bool = False

    def in_regions(self, regions: list[str]) -> list[str]:
        return [r for r in regions if not self.regions or r in self.regions]

    def matches(self, record: dict[str, Any]) -> bool:
        if not self.start <= record_time(record) <= self.end:
            return False
        if self.by_event_name():
            return record.get("eventName") in self.event_names
        if self.resource_name is None:
            made = mentions_credential if self.mentions else by_credential
            return made(record, self.access_key_ids) or bool(
                self.principal_arn and by_principal(record, self.principal_arn)
            )
        if self.event_names and record.get("eventName") not in self.event_names:
            return False
        request = record.get("requestParameters") or {}
        return any(request.get(p) == self.resource_name for p in _RESOURCE_PARAMETERS)

    def by_event_name(self) -> bool:
        """Every call of `event_names`, by anyone: no credential, principal or resource."""
        return bool(
            self.event_names
            and self.resource_name is None
            and not self.access_key_ids
            and not self.principal_arn
        )

    def needles(self) -> frozenset[str]:
        """Strings every matching record holds as a whole JSON string value: a log file
        without one of them has no match (activities/trailscan.py)."""
        if self.by_event_name():
            return self.event_names
        if self.resource_name is not None:
            return frozenset({self.resource_name})
        if self.principal_arn:
            return self.access_key_ids | {self.principal_arn}
        return self.access_key_ids

    def fingerprint(self) -> str:
        """The query as the same text in every process (a set's repr is not: string
        hashes differ between processes), so a retry on another worker can tell its own
        heartbeat."""
        return json.dumps(
            [
                self.account_id,
                sorted(self.access_key_ids),
                self.start.isoformat(),
                self.end.isoformat(),
                self.resource_name,
                sorted(self.event_names),
                self.principal_arn,
                sorted(self.regions),
                self.mentions,
            ]
        )

    def lookup_attributes(self) -> list[tuple[str, str]]:
        """What LookupEvents can filter on (one attribute a lookup)."""
        if self.by_event_name():
            return [("EventName", name) for name in sorted(self.event_names)]
        if self.resource_name is not None:
            return [("ResourceName", self.resource_name)]
        attributes = [("AccessKeyId", key) for key in sorted(self.access_key_ids)]
        if self.mentions:
            # A call that only names a key is found in event history where the event
            # lists the key among its resources; matches() decides on what comes back.
            attributes += [("ResourceName", key) for key in sorted(self.access_key_ids)]
        if self.principal_arn:
            resource = self.principal_arn.partition(":iam::")[2].partition(":")[2]
            kind, _, path = resource.partition("/")
            if kind != "user":
                # No attribute names every session of a role: read every event.
                return [("", "")]
            attributes.append(("Username", path.rsplit("/", 1)[-1]))
        return attributes


Cursor = dict[str, Any]


class CloudTrailSource(Protocol):
    """Matching records page by page, each page with the cursor to resume after it."""

    @property
    def description(self) -> str: ...

    @property
    def regions(self) -> list[str]: ...

    def pages(
        self, query: TrailQuery, cursor: Cursor | None
    ) -> Iterator[tuple[Cursor, list[dict[str, Any]]]]: ...

    def not_logging(self) -> list[str]:
        """The trails whose files the source reads that are not logging now: a call made
        while one is off is in no file, and the source cannot see it."""
        ...


def trails_not_logging(clients: AwsClients, bucket: str | None, prefix: str) -> list[str]:
    """The trails delivering to s3://bucket/prefix that are not logging now."""
    if bucket is None:
        return []
    stopped = set()
    with aws_errors("read the logging status of the trails that deliver the logs"):
        trails = clients.client("cloudtrail").describe_trails(includeShadowTrails=True)
        for trail in trails["trailList"]:
            if trail.get("S3BucketName") != bucket:
                continue
            if (trail.get("S3KeyPrefix") or "").strip("/") != prefix.strip("/"):
                continue
            # A trail answers for its status in its home region.
            home = clients.client("cloudtrail", trail.get("HomeRegion"))
            if not home.get_trail_status(Name=trail["TrailARN"]).get("IsLogging"):
                stopped.add(str(trail["Name"]))
    return sorted(stopped)


def file_stamp(key: str) -> datetime | None:
    match = _STAMP.search(key)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M").replace(tzinfo=UTC)


def record_time(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["eventTime"]).replace("Z", "+00:00"))


class CloudTrailS3Source:
    """Reads a trail's log files from its S3 bucket: an account's own trail, or an
    organisation trail's, whose files are under AWSLogs/<org id>/<account>/."""

    def __init__(
        self,
        clients: AwsClients,
        bucket: str,
        prefix: str,
        regions: list[str],
        organization_id: str | None = None,
        trails_of: AwsClients | None = None,
    ) -> None:
        self._clients = clients
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.regions = regions
        self.organization_id = organization_id
        # Whose trails are asked whether they are logging: the account the case acts in,
        # where an organisation trail shows too, though its bucket is read by Quench.
        self._trails_of = trails_of or clients
        self.description = f"s3://{bucket}/{self.prefix}"

    def not_logging(self) -> list[str]:
        return trails_not_logging(self._trails_of, self.bucket, self.prefix)

    def _day_prefix(self, account_id: str, region: str, day: datetime) -> str:
        logs = f"AWSLogs/{self.organization_id}" if self.organization_id else "AWSLogs"
        base = f"{logs}/{account_id}/CloudTrail/{region}/{day:%Y/%m/%d}/"
        return f"{self.prefix}/{base}" if self.prefix else base

    def log_keys(
        self, account_id: str, start: datetime, end: datetime, regions: list[str] | None = None
    ) -> list[str]:
        """Every log file that can hold records between start and end (of these regions,
        or all the source reads), in a stable order."""
        last = end + DELIVERY_MARGIN
        keys = []
        s3 = self._clients.client("s3")
        for region in self.regions if regions is None else regions:
            first = start - EARLY_STAMP
            day = first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            while day <= last:
                with aws_errors(f"list CloudTrail logs s3://{self.bucket}/{day:%Y/%m/%d}"):
                    for page in s3.get_paginator("list_objects_v2").paginate(
                        Bucket=self.bucket, Prefix=self._day_prefix(account_id, region, day)
                    ):
                        for obj in page.get("Contents", []):
                            if not obj["Key"].endswith(".json.gz"):
                                continue  # CloudTrail writes only gzip JSON log files here
                            stamp = file_stamp(obj["Key"])
                            if stamp is None or first <= stamp <= last:
                                keys.append(obj["Key"])
                day += timedelta(days=1)
        return sorted(keys)

    def log_file(self, key: str) -> bytes:
        """One log file as stored: gzip."""
        with aws_errors(f"read CloudTrail log s3://{self.bucket}/{key}"):
            return self._clients.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def records(self, key: str) -> list[dict[str, Any]]:
        """Every record of a log file."""
        return log_records(read_log(self.log_file(key)))

    def matching_records(self, key: str, query: TrailQuery) -> list[dict[str, Any]]:
        """The records of a log file that match the query, in file order: only the records
        around the query's keys (or resource name) in the file are parsed."""
        try:
            return scan_log(self.log_file(key), query.needles(), query.matches)
        except UNREADABLE_LOG_ERRORS as exc:
            # A damaged or planted file: no retry can read it, and a human must look.
            raise ApplicationError(
                f"s3://{self.bucket}/{key} is not a readable CloudTrail log file: "
                f"{unreadable_because(exc)}",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            ) from None

    def pages(
        self, query: TrailQuery, cursor: Cursor | None
    ) -> Iterator[tuple[Cursor, list[dict[str, Any]]]]:
        """One page a log file. The cursor names the files read, so files delivered while a
        scan was interrupted are still read after the retry, and none is read twice."""
        done = list((cursor or {}).get("done", []))
        already = set(done)
        regions = query.in_regions(self.regions)
        for key in self.log_keys(query.account_id, query.start, query.end, regions):
            if key in already:
                continue
            found = self.matching_records(key, query)
            done.append(key)
            yield {"done": list(done)}, found


class RateLimiter:
    """At most `per_second` calls, shared by every thread of the worker."""

    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            self._sleep(delay)


class TrailSourceByAccount:
    """The trail source of the account the running activity acts in; the QUENCH_CLOUDTRAIL_*
    source for an account that names none of its own."""

    def __init__(self, sources: dict[str, CloudTrailSource], default: CloudTrailSource) -> None:
        self._sources = sources
        self._default = default

    def source_for(self, account_id: str | None) -> CloudTrailSource:
        return self._sources.get(account_id or "", self._default)

    def _current(self) -> CloudTrailSource:
        scope = acting_in()
        return self.source_for(scope.account_id if scope else None)

    @property
    def description(self) -> str:
        return self._current().description

    @property
    def regions(self) -> list[str]:
        return self._current().regions

    def pages(
        self, query: TrailQuery, cursor: Cursor | None
    ) -> Iterator[tuple[Cursor, list[dict[str, Any]]]]:
        return self._current().pages(query, cursor)

    def not_logging(self) -> list[str]:
        return self._current().not_logging()


class LookupEventsSource:
    """CloudTrail's LookupEvents API: one lookup per access key and region, paginated."""

    def __init__(
        self,
        clients: AwsClients,
        regions: list[str],
        limiter: Callable[[], RateLimiter] = lambda: RateLimiter(2.0),
    ) -> None:
        self._clients = clients
        self.regions = regions
        self.description = f"cloudtrail:LookupEvents {','.join(regions)}"
        # The limit is per account and region; one worker serves one account's clients.
        self._limiters = {region: limiter() for region in regions}

    def not_logging(self) -> list[str]:
        """None: event history holds management events whether or not a trail logs."""
        return []

    def pages(
        self, query: TrailQuery, cursor: Cursor | None
    ) -> Iterator[tuple[Cursor, list[dict[str, Any]]]]:
        """One page a LookupEvents response; the cursor is the (region, attribute) lookup
        under way and its NextToken."""
        units = [
            (region, attr)
            for region in query.in_regions(self.regions)
            for attr in query.lookup_attributes()
        ]
        position = cursor or {"unit": 0, "token": None}
        for index in range(int(position["unit"]), len(units)):
            region, (attribute, value) = units[index]
            token = position.get("token") if index == position["unit"] else None
            while True:
                request: dict[str, Any] = {
                    "StartTime": query.start,
                    "EndTime": query.end,
                    "MaxResults": 50,
                }
                if attribute:
                    request["LookupAttributes"] = [
                        {"AttributeKey": attribute, "AttributeValue": value}
                    ]
                if token:
                    request["NextToken"] = token
                self._limiters[region].wait()
                with aws_errors(f"look up CloudTrail events of {value or 'everyone'} in {region}"):
                    response = self._clients.client("cloudtrail", region).lookup_events(**request)
                found = [
                    record
                    for event in response.get("Events", [])
                    if query.matches(record := json.loads(event["CloudTrailEvent"]))
                ]
                token = response.get("NextToken")
                if not token:
                    yield {"unit": index + 1, "token": None}, found
                    break
                yield {"unit": index, "token": token}, found


def summarize(record: dict[str, Any]) -> TrailEvent:
    identity = record.get("userIdentity", {})
    session = identity.get("sessionContext", {})
    issued = session.get("attributes", {}).get("creationDate")
    return TrailEvent(
        event_id=str(record.get("eventID", "")),
        event_time=record_time(record),
        event_name=str(record.get("eventName", "")),
        event_source=str(record.get("eventSource", "")),
        aws_region=str(record.get("awsRegion", "")),
        source_ip=str(record.get("sourceIPAddress", "")),
        user_agent=str(record.get("userAgent", "")),
        access_key_id=str(identity.get("accessKeyId", "")),
        principal_arn=identity.get("arn"),
        error_code=record.get("errorCode"),
        denied=record.get("errorCode") in DENIED_ERROR_CODES,
        session_issued_at=datetime.fromisoformat(issued.replace("Z", "+00:00")) if issued else None,
    )


def scan(source: CloudTrailSource, query: TrailQuery) -> list[dict[str, Any]]:
    """Every matching record, in time order, from inside an activity: the cursor and the
    matches so far are heartbeated, and a retried attempt resumes from them. The details
    name their query, so an activity that scans several times resumes only the scan they
    belong to."""
    details = activity.info().heartbeat_details
    asked = query.fingerprint()
    resume, matches = (None, [])
    if len(details) == 3 and details[2] == asked:
        resume, matches = dict(details[0]), list(details[1])
    if not query.needles():
        return []  # no key, principal or resource: nothing can match
    for cursor, found in source.pages(query, resume):
        # Redacted before they are heartbeated: an AssumeRole's response holds a token.
        matches.extend(redact(found))
        # Copies: the worker sends heartbeat details later, not at this call.
        beat(dict(cursor), list(matches), asked)
    return unique_in_time_order(matches)


def unique_in_time_order(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in time order, each once: a record two lookups (or two parts of a read)
    both found is one call."""
    ordered = sorted(records, key=lambda r: (r["eventTime"], r.get("eventID", "")))
    seen: set[str] = set()
    unique = []
    for record in ordered:
        event_id = record.get("eventID")
        if event_id and event_id in seen:
            continue
        if event_id:
            seen.add(str(event_id))
        unique.append(record)
    return unique


class CloudTrailActivities:
    def __init__(self, source: CloudTrailSource, evidence: EvidenceStore) -> None:
        self._source = source
        self._evidence = evidence

    @activity.defn
    @heartbeating
    def capture_cloudtrail_slice(self, input: CloudTrailSliceInput) -> CloudTrailSliceResult:
        """Evidence: every CloudTrail record of the credential in the window."""
        query = TrailQuery(
            input.account_id, frozenset({input.access_key_id}), input.start, input.end
        )
        records = scan(self._source, query)
        evidence = self._evidence.put_json(
            input.case_id,
            f"cloudtrail-{input.access_key_id.lower()}",
            {
                "access_key_id": input.access_key_id,
                "window": {"start": input.start.isoformat(), "end": input.end.isoformat()},
                "source": self._source.description,
                "records": records,
            },
        )
        return CloudTrailSliceResult(evidence=evidence, event_count=len(records))

    @activity.defn
    @heartbeating
    def classify_credential_activity(self, input: ClassifyActivityInput) -> ClassifyActivityResult:
        """Playbook 3.1-3.3: everything the credentials did since the compromise, in the
        playbook's groups, with what they made, changed and minted. The records go to
        evidence; the workflow gets the report."""
        query = TrailQuery(
            input.account_id, frozenset(input.access_key_ids), input.start, input.end
        )
        records = scan(self._source, query)
        # Changes by anyone else in the same window: not the attacker's by the case's
        # judgement (no key of its own made them), so a human can confirm them.
        others_query = TrailQuery(
            input.account_id, frozenset(), input.start, input.end, event_names=CHANGE_EVENTS
        )
        others = [
            r
            for r in scan(self._source, others_query)
            if not by_credential(r, frozenset(input.access_key_ids))
        ]
        name = "activity-" + "-".join(sorted(k.lower() for k in input.access_key_ids))[:100]
        evidence = self._evidence.put_json(
            input.case_id,
            name,
            {
                "access_key_ids": sorted(input.access_key_ids),
                "window": {"start": input.start.isoformat(), "end": input.end.isoformat()},
                "source": self._source.description,
                "records": records,
                "changes_by_others": others,
            },
        )
        report = classify(records)
        changes = changes_by_others(others, frozenset(input.access_key_ids))
        report.others_changes = changes[:OTHERS_KEPT_IN_RESULT]
        report.others_read = True
        return ClassifyActivityResult(report=report, evidence=evidence)

    @activity.defn
    @heartbeating
    def check_credential_activity(self, input: CheckActivityInput) -> CheckActivityResult:
        """The containment watch's look at CloudTrail: every call of the contained
        credentials in the window, split into denied attempts and calls that worked."""
        query = TrailQuery(
            input.account_id, frozenset(input.access_key_ids), input.start, input.end
        )
        events = [summarize(r) for r in scan(self._source, query)]
        effective = [e for e in events if e.worked]
        # The calls that worked come first: they are what a human must see.
        kept = (effective + [e for e in events if e not in effective])[:EVENTS_KEPT_IN_RESULT]
        not_logging: list[str] = []
        logging_unknown = ""
        try:
            not_logging = self._source.not_logging()
        except ApplicationError as err:
            # A denied status read must not blind the watch to the calls it can read.
            if not err.non_retryable:
                raise
            logging_unknown = err.message
        return CheckActivityResult(
            events=kept,
            denied_count=len(events) - len(effective),
            effective_count=len(effective),
            not_logging=not_logging,
            logging_unknown=logging_unknown,
        )
