"""The S3 source's scan of realistic log files (benchmarks/trail_files.py) in moto: a
file's matching records are exactly those of parsing every record and asking the query,
for a credential's calls and for the calls on a resource."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from activities.aws import AwsClients
from activities.cloudtrail import CloudTrailS3Source, TrailQuery
from benchmarks.trail_files import ACCOUNT, NEAR_MISS_KEY, START, TARGET_KEY, TrailSet, generate

BUCKET = "quench-trail-scan-test"
END = START + timedelta(hours=3)


@pytest.fixture
def trail(s3: Any, tmp_path: Path) -> TrailSet:
    """About twenty minutes of a busy account's trail, in its bucket."""
    written = generate(tmp_path, 4_000, seed=11)
    s3.create_bucket(Bucket=BUCKET)
    for key, path in zip(written.keys, written.paths(), strict=True):
        s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    return written


@pytest.fixture
def source(clients: AwsClients) -> CloudTrailS3Source:
    return CloudTrailS3Source(clients, BUCKET, "", ["us-east-1", "eu-west-1", "us-west-2"])


def every_record_asked(source: CloudTrailS3Source, query: TrailQuery) -> list[dict[str, Any]]:
    """What the source returned before it matched bytes: each file parsed whole."""
    keys = source.log_keys(query.account_id, query.start, query.end)
    return [r for key in keys for r in source.records(key) if query.matches(r)]


def scanned(source: CloudTrailS3Source, query: TrailQuery) -> list[dict[str, Any]]:
    return [r for _cursor, found in source.pages(query, None) for r in found]


@pytest.mark.parametrize(
    "keys",
    [{TARGET_KEY}, {NEAR_MISS_KEY}, {TARGET_KEY, NEAR_MISS_KEY}, {"AKIANOSUCHKEY0000001"}],
)
def test_a_credentials_records_are_those_of_parsing_every_record(
    trail: TrailSet, source: CloudTrailS3Source, keys: set[str]
) -> None:
    query = TrailQuery(ACCOUNT, frozenset(keys), START, END)
    found = scanned(source, query)
    assert found == every_record_asked(source, query)
    if keys == {TARGET_KEY}:
        assert len(found) == trail.by_target > 0


def test_a_window_keeps_its_records_only(trail: TrailSet, source: CloudTrailS3Source) -> None:
    query = TrailQuery(ACCOUNT, frozenset({TARGET_KEY}), START, START + timedelta(minutes=12))
    found = scanned(source, query)
    assert found == every_record_asked(source, query)
    assert 0 < len(found) < trail.by_target


@pytest.mark.parametrize(
    ("resource", "events"),
    [
        ("ci-deploy", {"CreateAccessKey", "UpdateAccessKey", "TagUser"}),
        ("web-app-role", {"PutRolePolicy"}),
        ("/app/prod/db-host", set()),
    ],
)
def test_a_resources_calls_are_those_of_parsing_every_record(
    trail: TrailSet, source: CloudTrailS3Source, resource: str, events: set[str]
) -> None:
    query = TrailQuery(
        ACCOUNT, frozenset(), START, END, resource_name=resource, event_names=frozenset(events)
    )
    found = scanned(source, query)
    assert found == every_record_asked(source, query)
    assert found
