"""SSM: read the instance's metadata credentials from inside the instance, to prove that
the key really changed after stop+start. The secret fields never leave this module."""

import json
import shlex
import time
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import AwsClients, aws_errors, error_code
from activities.iam import validate_role_name
from activities.liveness import beat, heartbeating
from activities.redaction import redact
from models.activities import ProbeInstanceCredentialsInput, ProbeInstanceCredentialsResult

ERROR_AGENT_UNAVAILABLE = "SsmAgentUnavailable"
ERROR_PROBE_FAILED = "CredentialProbeFailed"

_TERMINAL = {"Success", "Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated"}
_IMDS = "http://169.254.169.254/latest"


def imds_probe_script(role_name: str) -> str:
    """Shell run on the instance: IMDSv2 token, then the role's credential document.

    A failed request fails the command (curl -f under set -e, no pipeline to hide it).
    sed blanks the secret values on the instance itself, so they are not kept in SSM's
    command output either; the parser drops those fields again regardless.
    """
    role = shlex.quote(validate_role_name(role_name))
    blank_secrets = (
        r"""sed -E 's/"(SecretAccessKey|Token)"[[:space:]]*:[[:space:]]*"[^"]*"/"""
        r""""\1" : "REDACTED"/g'"""
    )
    return "\n".join(
        [
            "set -eu",
            f'TOKEN=$(curl -fsS -X PUT "{_IMDS}/api/token" '
            '-H "X-aws-ec2-metadata-token-ttl-seconds: 60")',
            f'DOC=$(curl -fsS -H "X-aws-ec2-metadata-token: $TOKEN" '
            f'"{_IMDS}/meta-data/iam/security-credentials/"{role})',
            f"printf '%s\\n' \"$DOC\" | {blank_secrets}",
        ]
    )


def parse_credentials_document(output: str) -> dict[str, Any]:
    """The metadata credentials document from the command's output, secrets removed."""
    start, end = output.find("{"), output.rfind("}")
    if start < 0 or end < start:
        raise ApplicationError(
            "the instance's metadata service returned no credentials document",
            type=ERROR_PROBE_FAILED,
            non_retryable=True,
        )
    try:
        document = json.loads(output[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ApplicationError(
            f"unreadable credentials document: {exc.msg}",
            type=ERROR_PROBE_FAILED,
            non_retryable=True,
        ) from None
    cleaned = {k: v for k, v in redact(document).items() if k not in {"SecretAccessKey", "Token"}}
    if not isinstance(cleaned.get("AccessKeyId"), str):
        raise ApplicationError(
            "the credentials document has no AccessKeyId",
            type=ERROR_PROBE_FAILED,
            non_retryable=True,
        )
    return cleaned


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class SsmActivities:
    def __init__(self, clients: AwsClients, poll_seconds: float = 2.0) -> None:
        self._clients = clients
        self._poll_seconds = poll_seconds

    @activity.defn
    @heartbeating
    def probe_instance_credentials(
        self, input: ProbeInstanceCredentialsInput
    ) -> ProbeInstanceCredentialsResult:
        """Run the metadata probe through SSM and report the access key the instance holds.

        Read-only, so a retry may send a new command; a retry that has a command id in its
        heartbeat resumes polling that command instead.
        """
        ssm = self._clients.client("ssm")
        details = activity.info().heartbeat_details
        command_id = str(details[0]) if details else None
        if command_id is None:
            try:
                command_id = ssm.send_command(
                    InstanceIds=[input.instance_id],
                    DocumentName="AWS-RunShellScript",
                    Parameters={"commands": [imds_probe_script(input.role_name)]},
                    Comment="Quench: verify instance credentials rotated",
                    TimeoutSeconds=60,
                )["Command"]["CommandId"]
            except ClientError as exc:
                if error_code(exc) == "InvalidInstanceId":
                    # The agent has not come back online since the start: try again later.
                    raise ApplicationError(
                        f"SSM agent on {input.instance_id} is not reachable yet",
                        type=ERROR_AGENT_UNAVAILABLE,
                    ) from exc
                with aws_errors(f"send the metadata probe to {input.instance_id}"):
                    raise
        beat(command_id)
        invocation = self._wait_for_invocation(ssm, command_id, input.instance_id)
        if invocation["Status"] != "Success":
            raise ApplicationError(
                f"metadata probe on {input.instance_id} ended {invocation['Status']}: "
                f"{invocation.get('StandardErrorContent', '')[:500]}",
                type=ERROR_PROBE_FAILED,
            )
        document = parse_credentials_document(invocation.get("StandardOutputContent", ""))
        return ProbeInstanceCredentialsResult(
            instance_id=input.instance_id,
            role_name=input.role_name,
            access_key_id=document["AccessKeyId"],
            code=str(document.get("Code", "")),
            last_updated=_parse_time(document.get("LastUpdated")),
            expiration=_parse_time(document.get("Expiration")),
            command_id=command_id,
        )

    def _wait_for_invocation(self, ssm: Any, command_id: str, instance_id: str) -> dict[str, Any]:
        while True:
            try:
                invocation = ssm.get_command_invocation(
                    CommandId=command_id, InstanceId=instance_id
                )
            except ClientError as exc:
                # Right after SendCommand the invocation may not exist yet.
                if error_code(exc) != "InvocationDoesNotExist":
                    with aws_errors(f"read the metadata probe on {instance_id}"):
                        raise
                invocation = {"Status": "Pending"}
            beat(command_id)
            if invocation["Status"] in _TERMINAL:
                return dict(invocation)
            time.sleep(self._poll_seconds)
