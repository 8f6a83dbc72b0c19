"""GuardDuty findings as Security Hub imports them (ASFF), in the EventBridge event Security
Hub sends: the shapes of a real export, built from a finding of lab/guardduty.py."""

import uuid
from typing import Any

# The ASFF Types namespace and category Security Hub files a GuardDuty threat purpose under.
_CATEGORIES = {
    "UnauthorizedAccess": "TTPs/Initial Access",
    "InitialAccess": "TTPs/Initial Access",
    "Recon": "TTPs/Discovery",
    "Discovery": "TTPs/Discovery",
    "CredentialAccess": "TTPs/Credential Access",
    "Persistence": "TTPs/Persistence",
    "PrivilegeEscalation": "TTPs/Privilege Escalation",
    "Stealth": "TTPs/Defense Evasion",
    "DefenseEvasion": "TTPs/Defense Evasion",
    "Exfiltration": "Effects/Data Exfiltration",
    "Impact": "Effects/Resource Consumption",
}


def asff_type(guardduty_type: str) -> str:
    """`UnauthorizedAccess:IAMUser/TorIPCaller` -> `TTPs/Initial Access/UnauthorizedAccess:
    IAMUser-TorIPCaller`: ASFF's Types use `/` as their separator, so GuardDuty's is a dash."""
    purpose = guardduty_type.split(":", 1)[0]
    category = _CATEGORIES.get(purpose, "TTPs")
    return f"{category}/{guardduty_type.replace('/', '-', 1)}"


def _flatten(prefix: str, value: Any, into: dict[str, str]) -> None:
    """GuardDuty's `service` object as ProductFields: one string per leaf, `/` between
    names, `.N_` after a list index."""
    if isinstance(value, dict):
        for name, inner in value.items():
            _flatten(f"{prefix}/{name}", inner, into)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _flatten(f"{prefix}.{index}_", inner, into)
    elif isinstance(value, bool):
        into[prefix] = "true" if value else "false"
    else:
        into[prefix] = "" if value is None else str(value)


def _label(severity: float) -> str:
    if severity >= 9:
        return "CRITICAL"
    if severity >= 7:
        return "HIGH"
    if severity >= 4:
        return "MEDIUM"
    return "LOW"


def asff_from_guardduty(detail: dict[str, Any]) -> dict[str, Any]:
    """The ASFF finding Security Hub makes of a GuardDuty finding (`detail` of its event)."""
    region, account, service = detail["region"], detail["accountId"], detail["service"]
    arn = detail["arn"]
    product_arn = f"arn:aws:securityhub:{region}::product/aws/guardduty"
    product_fields: dict[str, str] = {}
    _flatten("aws/guardduty/service", service, product_fields)
    product_fields.update(
        {
            "aws/securityhub/FindingId": f"{product_arn}/{arn}",
            "aws/securityhub/ProductName": "GuardDuty",
            "aws/securityhub/CompanyName": "Amazon",
        }
    )
    resource = detail["resource"]
    keys = resource.get("accessKeyDetails") or {}
    resources: list[dict[str, Any]] = []
    if keys:
        resources.append(
            {
                "Type": "AwsIamAccessKey",
                "Id": f"AWS::IAM::AccessKey:{keys['accessKeyId']}",
                "Partition": "aws",
                "Region": region,
                "Details": {
                    "AwsIamAccessKey": {
                        "PrincipalId": keys.get("principalId"),
                        "PrincipalType": keys.get("userType"),
                        "PrincipalName": keys.get("userName"),
                    }
                },
            }
        )
    instance = resource.get("instanceDetails")
    if instance:
        profile = instance.get("iamInstanceProfile") or {}
        resources.append(
            {
                "Type": "AwsEc2Instance",
                "Id": f"arn:aws:ec2:{region}:{account}:instance/{instance['instanceId']}",
                "Partition": "aws",
                "Region": region,
                "Details": {
                    "AwsEc2Instance": {
                        "Type": instance.get("instanceType"),
                        "IamInstanceProfileArn": profile.get("arn"),
                    }
                },
            }
        )
    call = (service.get("action") or {}).get("awsApiCallAction") or {}
    remote = call.get("remoteIpDetails") or {}
    organization = remote.get("organization") or {}
    finding_type = asff_type(detail["type"])
    severity = detail["severity"]
    finding: dict[str, Any] = {
        "SchemaVersion": "2018-10-08",
        "Id": arn,
        "ProductArn": product_arn,
        "ProductName": "GuardDuty",
        "CompanyName": "Amazon",
        "Region": region,
        "GeneratorId": f"arn:aws:guardduty:{region}:{account}:detector/{service['detectorId']}",
        "AwsAccountId": account,
        "Types": [finding_type],
        "FirstObservedAt": service["eventFirstSeen"],
        "LastObservedAt": service["eventLastSeen"],
        "CreatedAt": detail["createdAt"],
        "UpdatedAt": detail["updatedAt"],
        "Severity": {
            "Product": severity,
            "Label": _label(severity),
            "Normalized": round(severity * 10),
        },
        "Title": detail["title"],
        "Description": detail["description"],
        "ProductFields": product_fields,
        "Resources": resources,
        "WorkflowState": "NEW",
        "Workflow": {"Status": "NEW"},
        "RecordState": "ARCHIVED" if service.get("archived") else "ACTIVE",
        "FindingProviderFields": {
            "Severity": {"Label": _label(severity), "Original": str(severity)},
            "Types": [finding_type],
        },
        "Sample": False,
        "ProcessedAt": detail["updatedAt"],
    }
    if call:
        finding["Action"] = {
            "ActionType": "AWS_API_CALL",
            "AwsApiCallAction": {
                "Api": call.get("api"),
                "ServiceName": call.get("serviceName"),
                "CallerType": "remoteIp",
                "RemoteIpDetails": {
                    "IpAddressV4": remote.get("ipAddressV4"),
                    "Organization": {
                        "Asn": int(organization["asn"]) if organization.get("asn") else None,
                        "AsnOrg": organization.get("asnOrg"),
                        "Isp": organization.get("isp"),
                        "Org": organization.get("org"),
                    },
                    "Country": {"CountryName": (remote.get("country") or {}).get("countryName")},
                    "City": {"CityName": (remote.get("city") or {}).get("cityName")},
                    "GeoLocation": {
                        "Lat": (remote.get("geoLocation") or {}).get("lat"),
                        "Lon": (remote.get("geoLocation") or {}).get("lon"),
                    },
                },
            },
        }
    return finding


def securityhub_event(finding: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge envelope Security Hub sends each imported finding in."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Security Hub Findings - Imported",
        "source": "aws.securityhub",
        "account": finding["AwsAccountId"],
        "time": finding["UpdatedAt"],
        "region": finding["Region"],
        "resources": [
            finding.get("ProductFields", {}).get("aws/securityhub/FindingId", finding["Id"])
        ],
        "detail": {"findings": [finding]},
    }
