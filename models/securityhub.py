"""Security Hub's findings (ASFF, in its "Findings - Imported" EventBridge event) mapped to
the same Finding a GuardDuty event gives.

GuardDuty's own findings arrive through Security Hub with their fields spread over ASFF:
the GuardDuty finding id ends the ASFF `Id` (its ARN), the type is the classifier of a
`Types` entry with its slash turned into a dash, and `service.*` is flattened into
`ProductFields`. Mapping them back makes the same finding, arriving both ways, one case
and one dedupe key.
"""

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from models.finding import (
    ACCESS_KEY_PATTERN,
    AccessKeyDetails,
    ApiCall,
    EventBridgeEvent,
    Finding,
    FindingParseError,
    RemoteIp,
)

_ACCESS_KEY_ID = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{12,124}$")
# A GuardDuty type as ASFF spells it: ThreatPurpose:ResourceType-ThreatFamily..., as the
# last part of a Types entry such as "TTPs/Initial Access/UnauthorizedAccess:IAMUser-...".
_GUARDDUTY_CLASSIFIER = re.compile(r"([A-Za-z]+):([A-Za-z0-9]+)[-/]([^/]+)$")
_PF = "aws/guardduty/service/"


class _AsffAccessKey(BaseModel):
    model_config = ConfigDict(extra="ignore")
    AccessKeyId: str | None = None
    PrincipalId: str | None = None
    PrincipalName: str | None = None
    PrincipalType: str | None = None
    UserName: str | None = None  # deprecated by AWS for PrincipalName, still sent by some


class _AsffEc2Instance(BaseModel):
    model_config = ConfigDict(extra="ignore")
    IamInstanceProfileArn: str | None = None


class _AsffResourceDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")
    AwsIamAccessKey: _AsffAccessKey | None = None
    AwsEc2Instance: _AsffEc2Instance | None = None


class _AsffResource(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Type: str = Field(min_length=1, max_length=200)
    Id: str = Field(min_length=1, max_length=2000)
    Region: str | None = None
    Details: _AsffResourceDetails | None = None


class _AsffName(BaseModel):
    model_config = ConfigDict(extra="ignore")
    CountryName: str | None = None
    CityName: str | None = None


class _AsffOrganization(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Asn: int | None = None
    AsnOrg: str | None = None


class _AsffRemoteIp(BaseModel):
    model_config = ConfigDict(extra="ignore")
    IpAddressV4: str | None = None
    Country: _AsffName | None = None
    City: _AsffName | None = None
    Organization: _AsffOrganization | None = None


class _AsffApiCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Api: str | None = None
    ServiceName: str | None = None
    CallerType: str | None = None
    RemoteIpDetails: _AsffRemoteIp | None = None


class _AsffAction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ActionType: str | None = None
    AwsApiCallAction: _AsffApiCall | None = None


class _AsffSeverity(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Product: float | None = None
    Original: str | None = None
    Normalized: int | None = Field(default=None, ge=0, le=100)
    Label: Literal["INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"] | None = None


class _AsffWorkflow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Status: str | None = None


class AsffFinding(BaseModel):
    """The ASFF fields a case needs; everything else is kept in `raw`."""

    model_config = ConfigDict(extra="ignore")
    SchemaVersion: str = "2018-10-08"
    Id: str = Field(min_length=1, max_length=512)
    ProductArn: str = Field(min_length=1, max_length=512)
    ProductName: str | None = None
    GeneratorId: str = Field(default="", max_length=512)
    AwsAccountId: str = Field(pattern=r"^\d{12}$")
    Region: str | None = Field(default=None, max_length=40)
    Types: list[str] = Field(min_length=1, max_length=50)
    FirstObservedAt: AwareDatetime | None = None
    LastObservedAt: AwareDatetime | None = None
    CreatedAt: AwareDatetime
    UpdatedAt: AwareDatetime
    Severity: _AsffSeverity
    Title: str = Field(default="", max_length=256)
    ProductFields: dict[str, str] = Field(default_factory=dict)
    Resources: list[_AsffResource] = Field(min_length=1, max_length=32)
    RecordState: Literal["ACTIVE", "ARCHIVED"] = "ACTIVE"
    Workflow: _AsffWorkflow | None = None
    Action: _AsffAction | None = None


class SecurityHubDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # Security Hub sends each imported finding in an event of its own.
    findings: list[dict[str, Any]] = Field(min_length=1, max_length=1)


class SecurityHubEvent(EventBridgeEvent):
    """The EventBridge event Security Hub's imported findings arrive in."""

    detail_type: Literal["Security Hub Findings - Imported"] = Field(alias="detail-type")
    source: Literal["aws.securityhub"]
    detail: SecurityHubDetail


class AsffSummary(BaseModel):
    """What routing needs before the whole finding is parsed."""

    id: str
    type: str
    severity: float
    archived: bool
    names_access_key: bool


def is_guardduty(asff: AsffFinding) -> bool:
    return asff.ProductArn.endswith("/aws/guardduty") or asff.ProductName == "GuardDuty"


def parse_asff(raw: dict[str, Any]) -> AsffFinding:
    try:
        return AsffFinding.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "finding"
        raise FindingParseError(f"detail.findings.0.{field}", first["msg"]) from None


def summarise_asff(asff: AsffFinding) -> AsffSummary:
    return AsffSummary(
        id=_finding_id(asff),
        type=_finding_type(asff),
        severity=_severity(asff),
        archived=_archived(asff),
        names_access_key=_access_key(asff) is not None,
    )


def finding_from_asff(raw: dict[str, Any]) -> Finding:
    """Parse one ASFF finding about an access key. Raises FindingParseError naming the
    field when it is not a credential finding Quench can act on."""
    asff = parse_asff(raw)
    key = _access_key(asff)
    if key is None:
        raise FindingParseError(
            "detail.findings.0.Resources", "the finding names no access key to contain"
        )
    pf = asff.ProductFields
    region = asff.Region or next((r.Region for r in asff.Resources if r.Region), None)
    if not region:
        raise FindingParseError("detail.findings.0.Region", "the finding names no region")
    first_seen = _timestamp(pf, "eventFirstSeen") or asff.FirstObservedAt or asff.CreatedAt
    last_seen = _timestamp(pf, "eventLastSeen") or asff.LastObservedAt or asff.UpdatedAt
    instance = next((r for r in asff.Resources if r.Type == "AwsEc2Instance"), None)
    profile = instance.Details.AwsEc2Instance if instance and instance.Details else None
    return Finding(
        id=_finding_id(asff),
        type=_finding_type(asff),
        severity=_severity(asff),
        account_id=asff.AwsAccountId,
        region=region,
        title=asff.Title,
        created_at=asff.CreatedAt,
        updated_at=asff.UpdatedAt,
        access_key=key,
        instance_id=instance.Id.rsplit("/", 1)[-1] if instance else None,
        instance_profile_arn=profile.IamInstanceProfileArn if profile else None,
        first_seen=first_seen,
        last_seen=last_seen,
        count=_count(pf),
        archived=_archived(asff),
        api_call=_api_call(asff),
        raw=raw,
    )


def _finding_id(asff: AsffFinding) -> str:
    # arn:aws:guardduty:REGION:ACCOUNT:detector/DETECTOR/finding/FINDING -> FINDING
    if is_guardduty(asff) and "/finding/" in asff.Id:
        return asff.Id.rsplit("/finding/", 1)[1]
    return asff.Id


def _finding_type(asff: AsffFinding) -> str:
    if is_guardduty(asff):
        for entry in asff.Types:
            match = _GUARDDUTY_CLASSIFIER.search(entry)
            if match:
                purpose, resource, family = match.groups()
                return f"{purpose}:{resource}/{family}"
    return asff.Types[0]


def _severity(asff: AsffFinding) -> float:
    """GuardDuty's own 0-10 scale where ASFF keeps it, else the normalised 0-100 / 10."""
    severity = asff.Severity
    if severity.Product is not None and 0 <= severity.Product <= 10:
        return severity.Product
    try:
        original = float(severity.Original) if severity.Original is not None else None
    except ValueError:
        original = None
    if original is not None and 0 <= original <= 10:
        return original
    if severity.Normalized is not None:
        return severity.Normalized / 10
    return {"INFORMATIONAL": 0.0, "LOW": 2.0, "MEDIUM": 5.0, "HIGH": 7.0, "CRITICAL": 9.0}.get(
        severity.Label or "", 0.0
    )


def _archived(asff: AsffFinding) -> bool:
    status = asff.Workflow.Status if asff.Workflow else None
    return (
        asff.RecordState == "ARCHIVED"
        or asff.ProductFields.get(f"{_PF}archived") == "true"
        or status in ("SUPPRESSED", "RESOLVED")
    )


def _count(pf: dict[str, str]) -> int:
    try:
        return max(1, int(pf.get(f"{_PF}count", "1")))
    except ValueError:
        return 1


def _timestamp(pf: dict[str, str], name: str) -> datetime | None:
    """A GuardDuty time flattened into ProductFields; one without a zone is not used."""
    try:
        value = datetime.fromisoformat(pf.get(f"{_PF}{name}", ""))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _access_key(asff: AsffFinding) -> AccessKeyDetails | None:
    for resource in asff.Resources:
        if resource.Type != "AwsIamAccessKey":
            continue
        details = (resource.Details and resource.Details.AwsIamAccessKey) or _AsffAccessKey()
        # GuardDuty puts the key in the resource id (AWS::IAM::AccessKey:ASIA...).
        key_id = details.AccessKeyId
        if not key_id:
            match = _ACCESS_KEY_ID.search(resource.Id)
            key_id = match.group(0) if match else None
        if key_id and re.match(ACCESS_KEY_PATTERN, key_id):
            return AccessKeyDetails(
                access_key_id=key_id,
                principal_id=details.PrincipalId,
                user_name=details.PrincipalName or details.UserName,
                user_type=details.PrincipalType,
            )
    return None


def _api_call(asff: AsffFinding) -> ApiCall | None:
    call = asff.Action.AwsApiCallAction if asff.Action else None
    if call is None:
        return None
    remote = call.RemoteIpDetails
    organization = remote.Organization if remote else None
    return ApiCall(
        api=call.Api,
        service_name=call.ServiceName,
        # GuardDuty's own wording ("Remote IP") where ProductFields keeps it.
        caller_type=asff.ProductFields.get(f"{_PF}action/awsApiCallAction/callerType")
        or call.CallerType,
        user_agent=asff.ProductFields.get(f"{_PF}action/awsApiCallAction/userAgent"),
        error_code=asff.ProductFields.get(f"{_PF}action/awsApiCallAction/errorCode"),
        remote_ip=RemoteIp(
            ip_address=remote.IpAddressV4,
            country=remote.Country.CountryName if remote.Country else None,
            city=remote.City.CityName if remote.City else None,
            as_org=organization.AsnOrg if organization else None,
            asn=str(organization.Asn) if organization and organization.Asn is not None else None,
        )
        if remote
        else None,
    )
