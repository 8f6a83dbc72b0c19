"""Fixtures for activity tests: moto standing in for AWS, and the activity classes on it."""

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.evidence import EvidenceStore
from tests.support import REGION

EVIDENCE_BUCKET = "quench-evidence-test"
IMAGE_ID = "ami-12c6146b"  # moto runs any image id when no catalogue is loaded


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, so nothing can reach a real account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    # Without the default AMI catalogue, moto's EC2 starts in milliseconds rather than seconds.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def mocked_aws(aws_env: None) -> Iterator[None]:
    from lab import moto_gaps

    moto_gaps.install()  # service-specific credentials, which moto's IAM lacks
    with mock_aws():
        yield


@pytest.fixture(scope="session")
def boto3_session() -> boto3.Session:
    """One session for the run: it caches the service models, so clients come cheap."""
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@pytest.fixture
def clients(mocked_aws: None, boto3_session: boto3.Session) -> AwsClients:
    return AwsClients(boto3_session, REGION)


@pytest.fixture
def s3(clients: AwsClients) -> Any:
    return clients.client("s3")


@pytest.fixture
def iam(clients: AwsClients) -> Any:
    return clients.client("iam")


@pytest.fixture
def ec2(clients: AwsClients) -> Any:
    return clients.client("ec2")


@pytest.fixture
def evidence(clients: AwsClients, s3: Any) -> EvidenceStore:
    s3.create_bucket(Bucket=EVIDENCE_BUCKET)
    return EvidenceStore(clients, EVIDENCE_BUCKET)


@pytest.fixture
def activity_env() -> ActivityEnvironment:
    return ActivityEnvironment()


@pytest.fixture
def evidence_keys(s3: Any) -> Callable[[], list[str]]:
    """Lists the keys in the evidence bucket."""

    def keys() -> list[str]:
        listing = s3.list_objects_v2(Bucket=EVIDENCE_BUCKET)
        return [o["Key"] for o in listing.get("Contents", [])]

    return keys


@pytest.fixture
def launch_instance(ec2: Any) -> Callable[..., str]:
    """Runs one instance, with the named instance profile if given, and returns its id."""

    def launch(profile_name: str | None = None) -> str:
        extra: dict[str, Any] = {}
        if profile_name is not None:
            extra["IamInstanceProfile"] = {"Name": profile_name}
        reservation = ec2.run_instances(ImageId=IMAGE_ID, MinCount=1, MaxCount=1, **extra)
        return str(reservation["Instances"][0]["InstanceId"])

    return launch
