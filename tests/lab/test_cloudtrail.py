"""The lab's CloudTrail: records in CloudTrail's format, files in its key layout, and the
logging gap a StopLogging leaves."""

import gzip
import json
import re
from datetime import UTC, datetime, timedelta

from activities import trailscan
from lab.cloudtrail import Actor, TrailRecorder, assumed_role_identity, iam_user_identity

ACCOUNT = "123456789012"
T0 = datetime(2026, 11, 22, 7, 3, 10, tzinfo=UTC)
KEY_LAYOUT = re.compile(
    r"^AWSLogs/123456789012/CloudTrail/(?P<region>[a-z0-9-]+)/2026/11/22/"
    r"123456789012_CloudTrail_(?P=region)_20261122T(?P<hhmm>\d{4})Z_[A-Za-z0-9]{16}\.json\.gz$"
)


def _session_actor() -> Actor:
    return Actor(
        assumed_role_identity(
            account_id=ACCOUNT,
            role_name="web-app-role",
            role_id="AROAEXAMPLE",
            session_name="i-0abc",
            access_key_id="ASIAEXAMPLE000000001",
            issued_at=T0 - timedelta(hours=1),
            ec2_role_delivery=True,
        ),
        "198.51.100.23",
        "aws-cli/2.15.30",
    )


def test_records_have_cloudtrail_shape_and_hide_secrets():
    recorder = TrailRecorder(account_id=ACCOUNT, bucket="trail")
    created = recorder.record(
        _session_actor(),
        service="iam",
        operation="CreateAccessKey",
        region="eu-west-1",
        at=T0,
        request={"UserName": "backup-svc"},
        response={
            "AccessKey": {
                "UserName": "backup-svc",
                "AccessKeyId": "AKIANEWKEY0000000001",
                "SecretAccessKey": "very-secret",
                "CreateDate": T0,
            },
            "ResponseMetadata": {"RequestId": "x"},
        },
    )
    assert created["eventSource"] == "iam.amazonaws.com"
    assert created["awsRegion"] == "us-east-1"  # IAM is global
    assert created["eventTime"] == "2026-11-22T07:03:10Z"
    assert created["requestParameters"] == {"userName": "backup-svc"}
    access_key = created["responseElements"]["accessKey"]
    assert access_key["accessKeyId"] == "AKIANEWKEY0000000001"
    assert access_key["secretAccessKey"] == "HIDDEN_DUE_TO_SECURITY_REASONS"
    assert "very-secret" not in json.dumps(created)
    identity = created["userIdentity"]
    assert identity["type"] == "AssumedRole"
    assert identity["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/web-app-role/i-0abc"
    assert identity["sessionContext"]["sessionIssuer"]["userName"] == "web-app-role"
    assert identity["sessionContext"]["ec2RoleDelivery"] == "2.0"

    listed = recorder.record(
        _session_actor(),
        service="iam",
        operation="ListUsers",
        region="us-east-1",
        at=T0,
        request=None,
        response={"Users": []},
    )
    assert listed["readOnly"] is True and listed["responseElements"] is None
    denied = recorder.record(
        _session_actor(),
        service="secretsmanager",
        operation="ListSecrets",
        region="us-east-1",
        at=T0,
        request=None,
        response=None,
        error_code="AccessDenied",
    )
    assert denied["errorCode"] == "AccessDenied"
    function = recorder.record(
        _session_actor(),
        service="lambda",
        operation="CreateFunction",
        region="us-east-1",
        at=T0,
        request={"FunctionName": "f", "Code": {"ZipFile": b"PK..."}},
        response={"FunctionName": "f"},
    )
    assert function["eventName"] == "CreateFunction20150331"
    assert function["requestParameters"]["code"]["zipFile"] == "HIDDEN_DUE_TO_SECURITY_REASONS"


def test_log_files_follow_the_key_layout_and_five_minute_windows():
    recorder = TrailRecorder(account_id=ACCOUNT, bucket="trail")
    user = Actor(
        iam_user_identity(
            account_id=ACCOUNT, user_name="alice", user_id="AIDA1", access_key_id="AKIA1"
        ),
        "203.0.113.10",
        "console",
    )
    for minutes, region in [(0, "us-east-1"), (1, "us-east-1"), (7, "us-east-1"), (0, "eu-west-1")]:
        recorder.record(
            user,
            service="ec2",
            operation="RunInstances",
            region=region,
            at=T0 + timedelta(minutes=minutes),
            request={},
            response={},
        )
    files = recorder.log_files()
    windows = {}
    for key, body in files.items():
        match = KEY_LAYOUT.match(key)
        assert match, key
        records = json.loads(gzip.decompress(body))["Records"]
        windows[(match["region"], match["hhmm"])] = len(records)
    assert windows == {("us-east-1", "0705"): 2, ("us-east-1", "0715"): 1, ("eu-west-1", "0705"): 1}


def test_log_files_are_written_as_cloudtrail_writes_them_for_the_scans_fast_path():
    """Compact UTF-8, eventVersion first, errorCode after userAgent: the scan finds the
    session's key by its bytes and parses only its records, as it does on AWS's files."""
    recorder = TrailRecorder(account_id=ACCOUNT, bucket="trail")
    session = _session_actor()
    other = Actor(
        iam_user_identity(
            account_id=ACCOUNT,
            user_name="bob",
            user_id="AIDA2",
            access_key_id="AKIABOB0000000000002",
        ),
        "203.0.113.11",
        "Boto3/1.40.0 md/Résumé",
    )
    for minute, actor in enumerate([other, session, other, session, other]):
        recorder.record(
            actor,
            service="iam",
            operation="ListUsers",
            region="us-east-1",
            at=T0 + timedelta(seconds=minute),
            request={},
            response=None,
            error_code="AccessDenied" if actor is session and minute == 3 else None,
        )
    [body] = recorder.log_files().values()
    text = gzip.decompress(body)
    assert text.startswith(b'{"Records":[{"eventVersion":"1.09","userIdentity":')
    assert b'"userAgent":"Boto3/1.40.0 md/R\xc3\xa9sum\xc3\xa9"' in text
    assert b'"userAgent":"aws-cli/2.15.30","errorCode":"AccessDenied","errorMessage"' in text
    keys = {"ASIAEXAMPLE000000001"}
    stats = trailscan.ScanStats()
    found = trailscan.scan_log(body, keys, lambda r: trailscan.by_credential(r, keys), stats)
    assert [r["eventTime"] for r in found] == ["2026-11-22T07:03:11Z", "2026-11-22T07:03:13Z"]
    assert (stats.by_hits, stats.parsed, stats.records_parsed) == (1, 0, 2)


def test_records_made_while_logging_is_stopped_are_not_delivered():
    recorder = TrailRecorder(account_id=ACCOUNT, bucket="trail")
    actor = _session_actor()

    def call(operation: str, minute: int) -> None:
        recorder.record(
            actor,
            service="cloudtrail" if "Logging" in operation else "iam",
            operation=operation,
            region="us-east-1",
            at=T0 + timedelta(minutes=minute),
            request={"Name": "trail"},
            response={},
        )

    call("CreateUser", 0)
    call("StopLogging", 1)
    call("CreateUser", 2)
    call("StartLogging", 3)
    call("DeleteUser", 4)
    assert [r["eventName"] for r in recorder.records] == [
        "CreateUser",
        "StopLogging",
        "DeleteUser",
    ]
    assert recorder.dropped == 2


def test_run_instances_is_recorded_in_ec2s_own_shapes():
    recorder = TrailRecorder(account_id=ACCOUNT, bucket="trail")
    launched = T0 + timedelta(seconds=1)
    record = recorder.record(
        _session_actor(),
        service="ec2",
        operation="RunInstances",
        region="us-east-1",
        at=T0,
        request={
            "ImageId": "ami-1",
            "InstanceType": "t3.micro",
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "miner"}]}
            ],
        },
        response={
            "ReservationId": "r-1",
            "OwnerId": ACCOUNT,
            "Groups": [],
            "Instances": [
                {
                    "InstanceId": "i-0miner",
                    "ImageId": "ami-1",
                    "InstanceType": "t3.micro",
                    "State": {"Code": 0, "Name": "pending"},
                    "LaunchTime": launched,
                    "Placement": {"AvailabilityZone": "us-east-1a", "Tenancy": "default"},
                }
            ],
            "ResponseMetadata": {"RequestId": "x"},
        },
    )
    request = record["requestParameters"]
    assert request["instancesSet"] == {
        "items": [{"imageId": "ami-1", "minCount": 1, "maxCount": 1}]
    }
    assert request["instanceType"] == "t3.micro"
    assert request["tagSpecificationSet"]["items"][0]["tags"] == [{"key": "Name", "value": "miner"}]
    response = record["responseElements"]
    assert response["requestId"] == record["requestID"]
    assert response["reservationId"] == "r-1" and response["groupSet"] == {}
    [instance] = response["instancesSet"]["items"]
    assert instance["instanceId"] == "i-0miner"
    assert instance["instanceState"] == {"code": 0, "name": "pending"}
    assert instance["launchTime"] == int(launched.timestamp() * 1000)
    assert instance["placement"]["availabilityZone"] == "us-east-1a"
