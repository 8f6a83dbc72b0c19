"""The worker serves everything the case workflow asks for, with the lab's faults if any."""

import logging
import re
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from temporalio import activity

from activities.aws import AwsClients
from config.settings import Settings
from models.activities import InAccount
from worker import aws_clients, build_activities

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _registered(settings: Settings) -> set[str]:
    clients = AwsClients(boto3.Session(region_name="us-east-1"), "us-east-1")
    names = set()
    for fn in build_activities(settings, clients):
        definition = activity._Definition.from_callable(fn)
        assert definition is not None and definition.name is not None
        names.add(definition.name)
    return names


def test_every_activity_the_workflows_call_is_registered():
    called = set()
    for module in WORKFLOWS.rglob("*.py"):
        called |= set(re.findall(r"\w+Activities\.(\w+)", module.read_text()))
    assert called, "found no activity calls in workflows/"
    for source in ("s3", "lookup"):
        settings = Settings(
            account_id="123456789012",
            evidence_bucket="evidence",
            cloudtrail_bucket="trail",
            cloudtrail_source=source,
        )
        assert called <= _registered(settings), called - _registered(settings)


# The activities that act with the worker's own credentials, in the security account: the
# case's evidence and report, and its notifications. Every other one acts in the case's
# account, and so names it in its input.
CENTRAL = {"store_evidence", "write_report", "notify_sns", "notify_chat"}


def test_every_activity_but_the_central_ones_names_the_account_it_acts_in():
    settings = Settings(account_id="123456789012", evidence_bucket="e", cloudtrail_bucket="t")
    clients = AwsClients(boto3.Session(region_name="us-east-1"), "us-east-1")
    in_account: set[str] = set()
    central: set[str] = set()
    for fn in build_activities(settings, clients):
        definition = activity._Definition.from_callable(fn)
        assert definition is not None and definition.arg_types
        (argument,) = definition.arg_types
        named = str(definition.name)
        (in_account if issubclass(argument, InAccount) else central).add(named)
    assert central == CENTRAL
    assert {"revoke_role_sessions", "deactivate_access_key", "capture_role_state"} <= in_account


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def test_the_worker_injects_the_labs_faults_and_says_so(
    fake_aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(lab=True, lab_faults={"sts:GetCallerIdentity": "access_denied"})
    with caplog.at_level(logging.WARNING), mock_aws():
        sts = aws_clients(settings).client("sts")
        with pytest.raises(ClientError) as raised:
            sts.get_caller_identity()
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
    assert "QUENCH_LAB_FAULTS: these AWS calls fail: sts:GetCallerIdentity access_denied" in (
        caplog.text
    )


def test_without_faults_the_worker_calls_aws_as_it_is(
    fake_aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), mock_aws():
        identity = aws_clients(Settings(lab=True)).client("sts").get_caller_identity()
    assert identity["Account"] == "123456789012"
    assert "QUENCH_LAB_FAULTS" not in caplog.text


def test_the_lab_worker_logs_each_call_it_makes_when_asked(
    fake_aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    calls_log = logging.getLogger("quench.aws.calls")
    try:
        with mock_aws():
            aws_clients(Settings(lab=True)).client("sts").get_caller_identity()
            assert "aws call" not in caplog.text
            aws_clients(Settings(lab=True, lab_log_calls=True)).client("iam").list_users()
        assert "aws call iam:ListUsers" in caplog.text
    finally:
        calls_log.setLevel(logging.NOTSET)


def test_logging_each_call_is_refused_outside_the_lab() -> None:
    with pytest.raises(ValueError, match="QUENCH_LAB_LOG_CALLS is for the lab only"):
        Settings(lab_log_calls=True)
