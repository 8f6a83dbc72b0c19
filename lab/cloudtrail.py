"""CloudTrail for the lab: records in CloudTrail's own format, delivered as gzip log files
under the real key layout, as the service would write them (moto does neither)."""

import gzip
import json
import secrets
import string
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from activities.redaction import redact

# Lambda's API versions show up in CloudTrail event names.
_VERSIONED_EVENT_NAMES = {
    ("lambda", "CreateFunction"): "CreateFunction20150331",
    ("lambda", "UpdateFunctionCode"): "UpdateFunctionCode20150331v2",
    ("lambda", "AddPermission"): "AddPermission20150331v2",
    ("lambda", "DeleteFunction"): "DeleteFunction20150331",
}
_GLOBAL_SERVICES = {"iam", "sts"}
_CREDENTIAL_CALLS = {"AssumeRole", "GetFederationToken", "GetSessionToken"}
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"


def camel(value: Any) -> Any:
    """boto3's PascalCase shapes in CloudTrail's lowerCamelCase, datetimes as strings."""
    if isinstance(value, dict):
        return {
            (k[:1].lower() + k[1:] if isinstance(k, str) else k): camel(v)
            for k, v in value.items()
            if k != "ResponseMetadata"
        }
    if isinstance(value, list):
        return [camel(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%b %d, %Y, %I:%M:%S %p")
    if isinstance(value, bytes):
        return HIDDEN
    return value


def _hide_secrets(value: Any) -> Any:
    return _replace(redact(value), "REDACTED", HIDDEN)


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return new if value == old else value


@dataclass
class Actor:
    """Who makes a call, from where: CloudTrail's userIdentity, source IP and user agent."""

    identity: dict[str, Any]
    source_ip: str
    user_agent: str

    @property
    def access_key_id(self) -> str:
        return str(self.identity["accessKeyId"])


def assumed_role_identity(
    *,
    account_id: str,
    role_name: str,
    role_id: str,
    session_name: str,
    access_key_id: str,
    issued_at: datetime,
    ec2_role_delivery: bool,
) -> dict[str, Any]:
    identity: dict[str, Any] = {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session_name}",
        "arn": f"arn:aws:sts::{account_id}:assumed-role/{role_name}/{session_name}",
        "accountId": account_id,
        "accessKeyId": access_key_id,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account_id}:role/{role_name}",
                "accountId": account_id,
                "userName": role_name,
            },
            "webIdFederationData": {},
            "attributes": {
                "creationDate": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "mfaAuthenticated": "false",
            },
        },
    }
    if ec2_role_delivery:
        identity["sessionContext"]["ec2RoleDelivery"] = "2.0"
    return identity


def iam_user_identity(
    *, account_id: str, user_name: str, user_id: str, access_key_id: str
) -> dict[str, Any]:
    return {
        "type": "IAMUser",
        "principalId": user_id,
        "arn": f"arn:aws:iam::{account_id}:user/{user_name}",
        "accountId": account_id,
        "accessKeyId": access_key_id,
        "userName": user_name,
    }


@dataclass
class TrailRecorder:
    """Collects CloudTrail records and delivers them to the trail's bucket.

    Records made while the trail is not logging are never delivered, as in AWS: a
    StopLogging call is itself the last record before the gap.
    """

    account_id: str
    bucket: str
    prefix: str = ""
    # An organisation trail's files are under AWSLogs/<org id>/<account>/.
    organization_id: str | None = None
    logging: bool = True
    records: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0

    def record(
        self,
        actor: Actor,
        *,
        service: str,
        operation: str,
        region: str,
        at: datetime,
        request: dict[str, Any] | None,
        response: dict[str, Any] | None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        read_only = operation.startswith(("Get", "List", "Describe", "Lookup"))
        # STS calls that mint credentials are read-only, yet CloudTrail keeps their
        # responseElements: the new key id is there (its secret and token are not).
        keeps_response = not read_only or operation in _CREDENTIAL_CALLS
        request_id = str(uuid.uuid4())
        shapes = _QUERY_API_SHAPES.get((service, operation))
        request_parameters = (shapes[0] if shapes else camel)(request) if request else None
        response_elements = (
            (shapes[1](response, request_id) if shapes else camel(response))
            if keeps_response and not error_code and response is not None
            else None
        )
        record: dict[str, Any] = {
            "eventVersion": "1.09",
            "userIdentity": actor.identity,
            "eventTime": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": f"{service}.amazonaws.com",
            "eventName": _VERSIONED_EVENT_NAMES.get((service, operation), operation),
            "awsRegion": "us-east-1" if service in _GLOBAL_SERVICES else region,
            "sourceIPAddress": actor.source_ip,
            "userAgent": actor.user_agent,
            **(
                {"errorCode": error_code, "errorMessage": error_message or error_code}
                if error_code
                else {}
            ),
            "requestParameters": _hide_secrets(request_parameters) if request_parameters else None,
            "responseElements": _hide_secrets(response_elements)
            if response_elements is not None
            else None,
            "requestID": request_id,
            "eventID": str(uuid.uuid4()),
            "readOnly": read_only,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": self.account_id,
            "eventCategory": "Management",
        }
        if self.logging:
            self.records.append(record)
        else:
            self.dropped += 1
        if service == "cloudtrail" and not error_code:
            if operation == "StopLogging":
                self.logging = False
            elif operation == "StartLogging":
                self.logging = True
        return record

    def attempt(
        self,
        actor: Actor,
        service: str,
        operation: str,
        at: datetime,
        refusal: str | None,
        request: dict[str, Any] | None = None,
        region: str = "us-east-1",
    ) -> None:
        """A call the lab's attacker makes with a key whose secret the lab does not keep:
        no call is made, the record says what AWS answers: refused, and why (`refusal`,
        such as "with an explicit deny in an identity-based policy"), or worked."""
        self.record(
            actor,
            service=service,
            operation=operation,
            region=region,
            at=at,
            request=request,
            response=None,
            error_code="AccessDenied" if refusal else None,
            error_message=f"User: {actor.identity['arn']} is not authorized to perform: "
            f"{service}:{operation} {refusal}"
            if refusal
            else None,
        )

    def log_files(self) -> dict[str, bytes]:
        """The records as CloudTrail would deliver them: one gzip file per region and
        5-minute window, named for the window's end."""
        windows: dict[tuple[str, datetime], list[dict[str, Any]]] = defaultdict(list)
        for record in self.records:
            at = datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))
            end = at.replace(minute=at.minute - at.minute % 5, second=0) + _FIVE_MINUTES
            windows[(record["awsRegion"], end)].append(record)
        files = {}
        for (region, end), records in sorted(windows.items()):
            unique = "".join(secrets.choice(_ALPHANUM) for _ in range(16))
            logs = f"AWSLogs/{self.organization_id}" if self.organization_id else "AWSLogs"
            key = (
                f"{logs}/{self.account_id}/CloudTrail/{region}/{end:%Y/%m/%d}/"
                f"{self.account_id}_CloudTrail_{region}_{end:%Y%m%dT%H%M}Z_{unique}.json.gz"
            )
            if self.prefix:
                key = f"{self.prefix.strip('/')}/{key}"
            # As CloudTrail writes it: compact, UTF-8 (what the scan's fast path reads).
            document = json.dumps({"Records": records}, separators=(",", ":"), ensure_ascii=False)
            files[key] = gzip.compress(document.encode())
        return files

    def deliver(self, s3: Any) -> list[str]:
        """Write the log files to the trail's bucket and forget the delivered records."""
        files = self.log_files()
        for key, body in files.items():
            s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        self.records.clear()
        return sorted(files)


def _items(values: list[Any]) -> dict[str, Any]:
    return {"items": values} if values else {}


def _run_instances_request(request: dict[str, Any]) -> dict[str, Any]:
    """RunInstances' parameters as EC2 records them: its query API's names, where a list
    is a `...Set` of `items`."""
    shaped: dict[str, Any] = {
        "instancesSet": _items(
            [
                {
                    "imageId": request.get("ImageId"),
                    "minCount": request.get("MinCount"),
                    "maxCount": request.get("MaxCount"),
                }
            ]
        ),
        "instanceType": request.get("InstanceType"),
        "blockDeviceMapping": {},
        "monitoring": {"enabled": False},
        "disableApiTermination": False,
        "disableApiStop": False,
    }
    specs = [
        {"resourceType": spec["ResourceType"], "tags": camel(spec.get("Tags", []))}
        for spec in request.get("TagSpecifications", [])
    ]
    if specs:
        shaped["tagSpecificationSet"] = _items(specs)
    return shaped


def _run_instances_response(response: dict[str, Any], request_id: str) -> dict[str, Any]:
    instances = []
    for instance in response.get("Instances", []):
        launched = instance.get("LaunchTime")
        instances.append(
            {
                "instanceId": instance["InstanceId"],
                "imageId": instance.get("ImageId"),
                "instanceState": camel(instance.get("State", {})),
                "privateDnsName": instance.get("PrivateDnsName"),
                "amiLaunchIndex": instance.get("AmiLaunchIndex", 0),
                "productCodes": {},
                "instanceType": instance.get("InstanceType"),
                # EC2 records times in its responses as epoch milliseconds.
                "launchTime": int(launched.timestamp() * 1000) if launched else None,
                "placement": camel(instance.get("Placement", {})),
                "monitoring": camel(instance.get("Monitoring", {})),
                "subnetId": instance.get("SubnetId"),
                "vpcId": instance.get("VpcId"),
                "privateIpAddress": instance.get("PrivateIpAddress"),
                "architecture": instance.get("Architecture"),
                "rootDeviceType": instance.get("RootDeviceType"),
                "rootDeviceName": instance.get("RootDeviceName"),
                "virtualizationType": instance.get("VirtualizationType"),
                "hypervisor": instance.get("Hypervisor"),
                "groupSet": _items(camel(instance.get("SecurityGroups", []))),
                "tagSet": _items(camel(instance.get("Tags", []))),
            }
        )
    return {
        "requestId": request_id,
        "reservationId": response.get("ReservationId"),
        "ownerId": response.get("OwnerId"),
        "groupSet": _items(camel(response.get("Groups", []))),
        "instancesSet": _items(instances),
    }


# EC2 records its calls in its query API's shapes, not in the SDK's: these are reshaped.
_QUERY_API_SHAPES: dict[
    tuple[str, str],
    tuple[
        Callable[[dict[str, Any]], dict[str, Any]],
        Callable[[dict[str, Any], str], dict[str, Any]],
    ],
] = {("ec2", "RunInstances"): (_run_instances_request, _run_instances_response)}
_ALPHANUM = string.ascii_letters + string.digits
_FIVE_MINUTES = timedelta(minutes=5)
