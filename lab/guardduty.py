"""GuardDuty findings as GuardDuty writes them, wrapped in the EventBridge event it sends."""

import uuid
from datetime import datetime
from typing import Any

THREAT_LIST_FINDING = "UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def instance_role_finding(
    *,
    account_id: str,
    region: str,
    access_key_id: str,
    principal_id: str,
    role_name: str,
    instance_id: str,
    instance_profile_arn: str,
    instance_profile_id: str,
    remote_ip: str,
    api: str,
    service_name: str,
    user_agent: str,
    first_seen: datetime,
    last_seen: datetime,
    count: int,
    finding_type: str = THREAT_LIST_FINDING,
    severity: float = 5.0,
    finding_id: str | None = None,
    updated_at: datetime | None = None,
) -> dict[str, Any]:
    """The `detail` of a GuardDuty finding on an EC2 instance role's session key."""
    finding_id = finding_id or uuid.uuid4().hex
    updated_at = updated_at or last_seen
    return {
        "schemaVersion": "2.0",
        "accountId": account_id,
        "region": region,
        "partition": "aws",
        "id": finding_id,
        "arn": f"arn:aws:guardduty:{region}:{account_id}:detector/lab/finding/{finding_id}",
        "type": finding_type,
        "resource": {
            "resourceType": "AccessKey",
            "accessKeyDetails": {
                "accessKeyId": access_key_id,
                "principalId": principal_id,
                "userName": role_name,
                "userType": "AssumedRole",
            },
            "instanceDetails": {
                "instanceId": instance_id,
                "iamInstanceProfile": {"arn": instance_profile_arn, "id": instance_profile_id},
                "instanceState": "running",
                "instanceType": "t3.micro",
            },
        },
        "service": {
            "serviceName": "guardduty",
            "detectorId": "lab0detector",
            "action": {
                "actionType": "AWS_API_CALL",
                "awsApiCallAction": {
                    "api": api,
                    "serviceName": service_name,
                    "callerType": "Remote IP",
                    "userAgent": user_agent,
                    "remoteIpDetails": {
                        "ipAddressV4": remote_ip,
                        "organization": {
                            "asn": "64500",
                            "asnOrg": "Example Hosting (lab)",
                            "isp": "Example Hosting (lab)",
                            "org": "Example Hosting (lab)",
                        },
                        "country": {"countryName": "Netherlands"},
                        "city": {"cityName": "Amsterdam"},
                        "geoLocation": {"lat": 52.37, "lon": 4.89},
                    },
                    "affectedResources": {},
                },
            },
            "resourceRole": "TARGET",
            "additionalInfo": {"threatListName": "lab-threat-list"},
            "eventFirstSeen": _iso(first_seen),
            "eventLastSeen": _iso(last_seen),
            "archived": False,
            "count": count,
        },
        "severity": severity,
        "createdAt": _iso(first_seen),
        "updatedAt": _iso(updated_at),
        "title": f"API {api} was invoked from an IP address on a custom threat list.",
        "description": (
            f"API {api}, commonly used in Discovery tactics, was invoked from an IP address "
            f"{remote_ip} on the custom threat list lab-threat-list."
        ),
    }


def eventbridge_event(detail: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge envelope GuardDuty findings arrive in."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": detail["accountId"],
        "time": detail["updatedAt"],
        "region": detail["region"],
        "resources": [],
        "detail": detail,
    }
