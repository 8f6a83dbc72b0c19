"""CloudTrail: the records a credential produced over a time window, read from the trail's
log files in S3 (gzip JSON under AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/)."""

import gzip
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity

from activities.aws import AwsClients, aws_errors
from activities.evidence import EvidenceStore
from models.activities import CloudTrailSliceInput, CloudTrailSliceResult

# CloudTrail delivers a file about every 5 minutes, usually within 15 minutes of the calls
# in it: a record at time t sits in a file stamped between t and t + this margin.
DELIVERY_MARGIN = timedelta(hours=1)
_STAMP = re.compile(r"_(\d{8}T\d{4})Z_")


def file_stamp(key: str) -> datetime | None:
    match = _STAMP.search(key)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M").replace(tzinfo=UTC)


def record_time(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["eventTime"]).replace("Z", "+00:00"))


def uses_access_key(record: dict[str, Any], access_key_id: str) -> bool:
    return bool(record.get("userIdentity", {}).get("accessKeyId") == access_key_id)


class CloudTrailS3Source:
    """Reads a trail's log files from its S3 bucket."""

    def __init__(self, clients: AwsClients, bucket: str, prefix: str, regions: list[str]) -> None:
        self._clients = clients
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.regions = regions

    def _day_prefix(self, account_id: str, region: str, day: datetime) -> str:
        base = f"AWSLogs/{account_id}/CloudTrail/{region}/{day:%Y/%m/%d}/"
        return f"{self.prefix}/{base}" if self.prefix else base

    def log_keys(self, account_id: str, start: datetime, end: datetime) -> list[str]:
        """Every log file that can hold records between start and end, in a stable order."""
        last = end + DELIVERY_MARGIN
        keys = []
        s3 = self._clients.client("s3")
        for region in self.regions:
            day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            while day <= last:
                with aws_errors(f"list CloudTrail logs s3://{self.bucket}/{day:%Y/%m/%d}"):
                    for page in s3.get_paginator("list_objects_v2").paginate(
                        Bucket=self.bucket, Prefix=self._day_prefix(account_id, region, day)
                    ):
                        for obj in page.get("Contents", []):
                            stamp = file_stamp(obj["Key"])
                            if stamp is None or start - timedelta(minutes=5) <= stamp <= last:
                                keys.append(obj["Key"])
                day += timedelta(days=1)
        return sorted(keys)

    def records(self, key: str) -> list[dict[str, Any]]:
        with aws_errors(f"read CloudTrail log s3://{self.bucket}/{key}"):
            body = self._clients.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return list(json.loads(gzip.decompress(body)).get("Records", []))

    def scan(
        self, access_key_id: str, start: datetime, end: datetime, keys: list[str]
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """For each file, its index and the records of the key between start and end."""
        for index, key in enumerate(keys):
            yield (
                index,
                [
                    r
                    for r in self.records(key)
                    if uses_access_key(r, access_key_id) and start <= record_time(r) <= end
                ],
            )


class CloudTrailActivities:
    def __init__(self, source: CloudTrailS3Source, evidence: EvidenceStore) -> None:
        self._source = source
        self._evidence = evidence

    @activity.defn
    def capture_cloudtrail_slice(self, input: CloudTrailSliceInput) -> CloudTrailSliceResult:
        """Evidence: every CloudTrail record of the credential in the window.

        Heartbeats the files read so far with their matches, and after a retry reads only
        the files not yet read, even if more were delivered in between.
        """
        name = f"cloudtrail-{input.access_key_id.lower()}"
        keys = self._source.log_keys(input.account_id, input.start, input.end)
        details = activity.info().heartbeat_details
        done, matches = (list(details[0]), list(details[1])) if details else ([], [])
        already = set(done)
        todo = [k for k in keys if k not in already]
        for index, found in self._source.scan(input.access_key_id, input.start, input.end, todo):
            matches.extend(found)
            done.append(todo[index])
            # Copies: the worker sends heartbeat details later, not at this call.
            activity.heartbeat(list(done), list(matches))
        matches.sort(key=lambda r: (r["eventTime"], r.get("eventID", "")))
        evidence = self._evidence.put_json(
            input.case_id,
            name,
            {
                "access_key_id": input.access_key_id,
                "window": {"start": input.start.isoformat(), "end": input.end.isoformat()},
                "source": f"s3://{self._source.bucket}/{self._source.prefix}",
                "files": len(keys),
                "records": matches,
            },
        )
        return CloudTrailSliceResult(
            evidence=evidence, event_count=len(matches), files_scanned=len(keys)
        )
