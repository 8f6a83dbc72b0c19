"""The metadata probe through SSM, on a stubbed SSM client (moto's SendCommand has no output),
and the probe's shell script run for real with a stand-in for curl."""

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import ERROR_ACCESS_DENIED, ERROR_INVALID_REQUEST, AwsClients
from activities.redaction import REDACTED
from activities.ssm import (
    ERROR_AGENT_UNAVAILABLE,
    ERROR_PROBE_FAILED,
    SsmActivities,
    imds_probe_script,
    parse_credentials_document,
)
from models.activities import ProbeInstanceCredentialsInput
from tests.support import INSTANCE, REGION, ROLE

COMMAND_ID = "5e2f4b1a-7c3d-4e8f-9a0b-1c2d3e4f5a6b"
NEW_KEY = "ASIANEWKEYAFTERSTART"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzNEWSECRETkey"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEHsaCXVzLWVhc3QtMSJHMEUCIQDexampleSessionTokenValue=="

# What the instance metadata service serves, as it formats it.
CREDENTIALS_DOCUMENT = f"""{{
  "Code" : "Success",
  "LastUpdated" : "2026-11-22T07:40:12Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "{NEW_KEY}",
  "SecretAccessKey" : "{SECRET_ACCESS_KEY}",
  "Token" : "{SESSION_TOKEN}",
  "Expiration" : "2026-11-22T13:55:40Z"
}}"""

PROBE = ProbeInstanceCredentialsInput(instance_id=INSTANCE, role_name=ROLE)


class StubbedSsmClients(AwsClients):
    """AwsClients whose only client is the given (stubbed) SSM client."""

    def __init__(self, session: boto3.Session, ssm: Any) -> None:
        super().__init__(session, REGION)
        self._ssm = ssm

    def client(self, service: str, region: str | None = None) -> Any:
        assert service == "ssm"
        return self._ssm


@pytest.fixture
def ssm_client(aws_env: None, boto3_session: boto3.Session) -> Any:
    return boto3_session.client("ssm", region_name=REGION)


@pytest.fixture
def stubber(ssm_client: Any) -> Iterator[Stubber]:
    with Stubber(ssm_client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def ssm_activities(boto3_session: boto3.Session, ssm_client: Any) -> SsmActivities:
    return SsmActivities(StubbedSsmClients(boto3_session, ssm_client), poll_seconds=0)


def expect_send_command(stubber: Stubber) -> None:
    stubber.add_response(
        "send_command",
        {"Command": {"CommandId": COMMAND_ID, "InstanceIds": [INSTANCE], "Status": "Pending"}},
        {
            "InstanceIds": [INSTANCE],
            "DocumentName": "AWS-RunShellScript",
            "Parameters": {"commands": [imds_probe_script(ROLE)]},
            "Comment": "Quench: verify instance credentials rotated",
            "TimeoutSeconds": 60,
        },
    )


def expect_invocation(stubber: Stubber, status: str, stdout: str = "", stderr: str = "") -> None:
    stubber.add_response(
        "get_command_invocation",
        {
            "CommandId": COMMAND_ID,
            "InstanceId": INSTANCE,
            "Status": status,
            "StandardOutputContent": stdout,
            "StandardErrorContent": stderr,
        },
        {"CommandId": COMMAND_ID, "InstanceId": INSTANCE},
    )


def heartbeat_recorder(env: ActivityEnvironment) -> list[tuple[Any, ...]]:
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    return beats


# probe_instance_credentials


def test_probe_reports_the_access_key_and_nothing_secret(
    stubber: Stubber, ssm_activities: SsmActivities, activity_env: ActivityEnvironment
) -> None:
    expect_send_command(stubber)
    stubber.add_client_error(
        "get_command_invocation",
        service_error_code="InvocationDoesNotExist",
        expected_params={"CommandId": COMMAND_ID, "InstanceId": INSTANCE},
    )
    expect_invocation(stubber, "InProgress")
    expect_invocation(stubber, "Success", stdout=CREDENTIALS_DOCUMENT)
    beats = heartbeat_recorder(activity_env)

    result = activity_env.run(ssm_activities.probe_instance_credentials, PROBE)

    assert result.access_key_id == NEW_KEY
    assert result.instance_id == INSTANCE
    assert result.role_name == ROLE
    assert result.code == "Success"
    assert result.command_id == COMMAND_ID
    assert result.last_updated == datetime(2026, 11, 22, 7, 40, 12, tzinfo=UTC)
    assert result.expiration == datetime(2026, 11, 22, 13, 55, 40, tzinfo=UTC)
    dumped = result.model_dump_json()
    assert SECRET_ACCESS_KEY not in dumped
    assert SESSION_TOKEN not in dumped
    # The command id is the cursor a retry resumes from.
    assert beats
    assert all(beat == (COMMAND_ID,) for beat in beats)


def test_probe_resumes_polling_the_command_in_its_heartbeat(
    stubber: Stubber, ssm_activities: SsmActivities
) -> None:
    # No send_command is stubbed: sending a second command would fail the stubber.
    expect_invocation(stubber, "Success", stdout=CREDENTIALS_DOCUMENT)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_details=[COMMAND_ID])

    result = env.run(ssm_activities.probe_instance_credentials, PROBE)

    assert result.command_id == COMMAND_ID
    assert result.access_key_id == NEW_KEY


def test_probe_of_an_instance_ssm_does_not_know_yet_is_retried(
    stubber: Stubber, ssm_activities: SsmActivities, activity_env: ActivityEnvironment
) -> None:
    stubber.add_client_error("send_command", service_error_code="InvalidInstanceId")

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(ssm_activities.probe_instance_credentials, PROBE)

    assert raised.value.type == ERROR_AGENT_UNAVAILABLE
    assert raised.value.non_retryable is False


def test_probe_without_permission_is_not_retried(
    stubber: Stubber, ssm_activities: SsmActivities, activity_env: ActivityEnvironment
) -> None:
    stubber.add_client_error("send_command", service_error_code="AccessDeniedException")

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(ssm_activities.probe_instance_credentials, PROBE)

    assert raised.value.type == ERROR_ACCESS_DENIED
    assert raised.value.non_retryable is True


def test_probe_reports_a_failed_command_with_its_error_output(
    stubber: Stubber, ssm_activities: SsmActivities, activity_env: ActivityEnvironment
) -> None:
    expect_send_command(stubber)
    expect_invocation(stubber, "Failed", stderr="curl: (7) Failed to connect to 169.254.169.254")

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(ssm_activities.probe_instance_credentials, PROBE)

    assert raised.value.type == ERROR_PROBE_FAILED
    assert "ended Failed" in raised.value.message
    assert "Failed to connect" in raised.value.message


def test_probe_with_unreadable_output_is_not_retried(
    stubber: Stubber, ssm_activities: SsmActivities, activity_env: ActivityEnvironment
) -> None:
    expect_send_command(stubber)
    expect_invocation(stubber, "Success", stdout="<html>404 - Not Found</html>")

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(ssm_activities.probe_instance_credentials, PROBE)

    assert raised.value.type == ERROR_PROBE_FAILED
    assert raised.value.non_retryable is True


# parse_credentials_document


def test_parse_credentials_document_drops_the_secret_fields() -> None:
    document = parse_credentials_document("some banner\n" + CREDENTIALS_DOCUMENT + "\n")

    assert document == {
        "Code": "Success",
        "LastUpdated": "2026-11-22T07:40:12Z",
        "Type": "AWS-HMAC",
        "AccessKeyId": NEW_KEY,
        "Expiration": "2026-11-22T13:55:40Z",
    }


@pytest.mark.parametrize(
    "output",
    [
        "",
        "curl: (7) Failed to connect to 169.254.169.254 port 80",
        "{ this is not json }",
        '{"Code": "Success", "Type": "AWS-HMAC"}',
        '{"Code": "Success", "AccessKeyId": 12345}',
        "} backwards {",
    ],
    ids=["empty", "curl-error", "not-json", "no-key", "key-not-a-string", "backwards"],
)
def test_parse_credentials_document_refuses_garbage(output: str) -> None:
    with pytest.raises(ApplicationError) as raised:
        parse_credentials_document(output)
    assert raised.value.type == ERROR_PROBE_FAILED
    assert raised.value.non_retryable is True


def test_parse_credentials_document_error_does_not_echo_the_output() -> None:
    garbled = CREDENTIALS_DOCUMENT.replace('"Type"', "Type")

    with pytest.raises(ApplicationError) as raised:
        parse_credentials_document(garbled)

    assert SECRET_ACCESS_KEY not in str(raised.value)
    assert raised.value.__cause__ is None


# imds_probe_script


@pytest.mark.parametrize(
    "role_name",
    ["web-app-role; curl evil.example", "$(id)", "`id`", "role|sh", "role && rm -rf /", "a'b"],
)
def test_imds_probe_script_rejects_shell_metacharacters(role_name: str) -> None:
    with pytest.raises(ApplicationError) as raised:
        imds_probe_script(role_name)
    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True


def test_imds_probe_script_uses_an_imdsv2_token() -> None:
    script = imds_probe_script(ROLE)

    assert 'curl -fsS -X PUT "http://169.254.169.254/latest/api/token"' in script
    assert "X-aws-ec2-metadata-token-ttl-seconds: 60" in script
    assert '-H "X-aws-ec2-metadata-token: $TOKEN"' in script
    assert f'/meta-data/iam/security-credentials/"{ROLE}' in script


FAKE_CURL = """
curl() {
  case "$*" in
    *"-X PUT http://169.254.169.254/latest/api/token"*) printf 'AQAEAfakeImdsToken' ;;
    *"X-aws-ec2-metadata-token: AQAEAfakeImdsToken"*"/security-credentials/web-app-role")
      printf '%s\\n' "$CREDENTIALS_DOCUMENT" ;;
    *) echo "unexpected curl $*" >&2; return 22 ;;
  esac
}
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_imds_probe_script_blanks_the_secrets_on_the_instance() -> None:
    run = subprocess.run(
        ["bash", "-c", FAKE_CURL + imds_probe_script(ROLE)],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CREDENTIALS_DOCUMENT": CREDENTIALS_DOCUMENT,
        },
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert SECRET_ACCESS_KEY not in run.stdout
    assert SESSION_TOKEN not in run.stdout
    document = json.loads(run.stdout)
    assert document["SecretAccessKey"] == REDACTED
    assert document["Token"] == REDACTED
    assert document["AccessKeyId"] == NEW_KEY
    assert document["Expiration"] == "2026-11-22T13:55:40Z"
    assert parse_credentials_document(run.stdout)["AccessKeyId"] == NEW_KEY
