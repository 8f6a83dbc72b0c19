"""GuardDuty findings as GuardDuty writes them, wrapped in the EventBridge event it sends."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

THREAT_LIST_FINDING = "UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom"
TOR_FINDING = "UnauthorizedAccess:IAMUser/TorIPCaller"


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
    return _api_call_finding(
        account_id=account_id,
        region=region,
        finding_type=finding_type,
        severity=severity,
        finding_id=finding_id,
        resource={
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
        api=api,
        service_name=service_name,
        user_agent=user_agent,
        remote_ip_details=_remote_ip(remote_ip, _THREAT_LIST_HOST),
        additional_info={"threatListName": "lab-threat-list"},
        first_seen=first_seen,
        last_seen=last_seen,
        updated_at=updated_at,
        count=count,
        title=f"API {api} was invoked from an IP address on a custom threat list.",
        description=(
            f"API {api}, commonly used in Discovery tactics, was invoked from an IP address "
            f"{remote_ip} on the custom threat list lab-threat-list."
        ),
    )


def user_key_finding(
    *,
    account_id: str,
    region: str,
    access_key_id: str,
    principal_id: str,
    user_name: str,
    remote_ip: str,
    api: str,
    service_name: str,
    user_agent: str,
    first_seen: datetime,
    last_seen: datetime,
    count: int,
    finding_type: str = TOR_FINDING,
    severity: float = 5.0,
    finding_id: str | None = None,
    updated_at: datetime | None = None,
) -> dict[str, Any]:
    """The `detail` of a GuardDuty finding on an IAM user's long-term key used from a Tor
    exit node: the key and its user, and no instance."""
    return _api_call_finding(
        account_id=account_id,
        region=region,
        finding_type=finding_type,
        severity=severity,
        finding_id=finding_id,
        resource={
            "resourceType": "AccessKey",
            "accessKeyDetails": {
                "accessKeyId": access_key_id,
                "principalId": principal_id,
                "userName": user_name,
                "userType": "IAMUser",
            },
        },
        api=api,
        service_name=service_name,
        user_agent=user_agent,
        remote_ip_details=_remote_ip(remote_ip, _TOR_EXIT_HOST),
        additional_info={},
        first_seen=first_seen,
        last_seen=last_seen,
        updated_at=updated_at,
        count=count,
        title=f"API {api} was invoked from a Tor exit node IP address.",
        description=(
            f"API {api}, commonly used in Discovery tactics, was invoked from a Tor exit node "
            f"IP address {remote_ip}."
        ),
    )


@dataclass(frozen=True)
class _Host:
    """Where an attacker's address appears to be, as GuardDuty's geolocation says."""

    asn: str  # from the documentation range
    org: str
    country: str
    city: str
    lat: float
    lon: float


_THREAT_LIST_HOST = _Host("64500", "Example Hosting (lab)", "Netherlands", "Amsterdam", 52.37, 4.89)
_TOR_EXIT_HOST = _Host(
    "64501", "Example Tor Exit Relay (lab)", "Germany", "Frankfurt am Main", 50.11, 8.68
)


def _remote_ip(address: str, host: _Host) -> dict[str, Any]:
    return {
        "ipAddressV4": address,
        "organization": {"asn": host.asn, "asnOrg": host.org, "isp": host.org, "org": host.org},
        "country": {"countryName": host.country},
        "city": {"cityName": host.city},
        "geoLocation": {"lat": host.lat, "lon": host.lon},
    }


def _api_call_finding(
    *,
    account_id: str,
    region: str,
    finding_type: str,
    severity: float,
    finding_id: str | None,
    resource: dict[str, Any],
    api: str,
    service_name: str,
    user_agent: str,
    remote_ip_details: dict[str, Any],
    additional_info: dict[str, Any],
    first_seen: datetime,
    last_seen: datetime,
    updated_at: datetime | None,
    count: int,
    title: str,
    description: str,
) -> dict[str, Any]:
    """A finding on an access key whose API calls came from a remote address."""
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
        "resource": resource,
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
                    "remoteIpDetails": remote_ip_details,
                    "affectedResources": {},
                },
            },
            "resourceRole": "TARGET",
            "additionalInfo": additional_info,
            "eventFirstSeen": _iso(first_seen),
            "eventLastSeen": _iso(last_seen),
            "archived": False,
            "count": count,
        },
        "severity": severity,
        "createdAt": _iso(first_seen),
        "updatedAt": _iso(updated_at),
        "title": title,
        "description": description,
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
