"""A GuardDuty finding, reduced to what a case needs, parsed from GuardDuty's own field names."""

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError


class RemoteIp(BaseModel):
    ip_address: str | None = None
    country: str | None = None
    city: str | None = None
    as_org: str | None = None
    asn: str | None = None


class ApiCall(BaseModel):
    """service.action.awsApiCallAction of the finding."""

    api: str | None = None
    service_name: str | None = None
    caller_type: str | None = None
    user_agent: str | None = None
    error_code: str | None = None
    remote_ip: RemoteIp | None = None


class AccessKeyDetails(BaseModel):
    access_key_id: str
    principal_id: str | None = None
    user_name: str | None = None
    user_type: str | None = None  # IAMUser, AssumedRole, Root, FederatedUser...


class Finding(BaseModel):
    """The parts of a GuardDuty finding a case acts on; `raw` keeps the original as evidence."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    severity: float
    account_id: str
    region: str
    title: str = ""
    created_at: datetime
    updated_at: datetime
    access_key: AccessKeyDetails
    instance_id: str | None = None
    instance_profile_arn: str | None = None
    first_seen: datetime
    last_seen: datetime
    count: int = 1
    archived: bool = False
    api_call: ApiCall | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def dedupe_key(self) -> tuple[str, datetime]:
        """GuardDuty re-sends a finding; the same id and updatedAt is the same delivery."""
        return (self.id, self.updated_at)


class FindingParseError(ValueError):
    """A payload that is not a usable GuardDuty finding; `field` names the part at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# GuardDuty's camelCase names are mapped here once; the rest of Quench uses Finding.
ACCESS_KEY_PATTERN = r"^(AKIA|ASIA)[A-Z0-9]{12,124}$"


class _GdName(BaseModel):
    model_config = ConfigDict(extra="ignore")
    countryName: str | None = None
    cityName: str | None = None


class _GdOrganization(BaseModel):
    model_config = ConfigDict(extra="ignore")
    asn: str | None = None
    asnOrg: str | None = None


class _GdRemoteIp(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ipAddressV4: str | None = None
    country: _GdName | None = None
    city: _GdName | None = None
    organization: _GdOrganization | None = None


class _GdApiCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api: str | None = None
    serviceName: str | None = None
    callerType: str | None = None
    userAgent: str | None = None
    errorCode: str | None = None
    remoteIpDetails: _GdRemoteIp | None = None


class _GdAction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    awsApiCallAction: _GdApiCall | None = None


class _GdProfile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    arn: str | None = None


class _GdInstance(BaseModel):
    model_config = ConfigDict(extra="ignore")
    instanceId: str | None = None
    iamInstanceProfile: _GdProfile | None = None


class _GdAccessKeyDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")
    accessKeyId: str = Field(pattern=ACCESS_KEY_PATTERN)
    principalId: str | None = None
    userName: str | None = None
    userType: str | None = None


class _GdFindingResource(BaseModel):
    model_config = ConfigDict(extra="ignore")
    resourceType: str
    accessKeyDetails: _GdAccessKeyDetails | None = None
    instanceDetails: _GdInstance | None = None


class _GdFindingService(BaseModel):
    model_config = ConfigDict(extra="ignore")
    eventFirstSeen: AwareDatetime
    eventLastSeen: AwareDatetime
    count: int = Field(default=1, ge=1)
    archived: bool = False
    action: _GdAction | None = None
    additionalInfo: dict[str, Any] | None = None


class GuardDutyFinding(BaseModel):
    """A GuardDuty finding (the `detail` of its event) with every part a case reads typed:
    checked before the finding is parsed, and the schema the OpenAPI document shows."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=300)
    type: str = Field(min_length=1, max_length=300)
    severity: float = Field(ge=0, le=10)
    accountId: str = Field(pattern=r"^\d{12}$")
    region: str = Field(min_length=1, max_length=40)
    title: str = ""
    createdAt: AwareDatetime
    updatedAt: AwareDatetime
    resource: _GdFindingResource
    service: _GdFindingService


class EventBridgeEvent(BaseModel):
    """The envelope EventBridge delivers every event in; each source's its own `detail`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    version: str = "0"
    id: str
    account: str
    region: str
    time: datetime
    resources: list[str] = Field(default_factory=list)


class GuardDutyEvent(EventBridgeEvent):
    """The EventBridge event GuardDuty findings arrive in."""

    detail_type: Literal["GuardDuty Finding"] = Field(alias="detail-type")
    source: Literal["aws.guardduty"]
    detail: dict[str, Any]


def finding_from_guardduty(detail: dict[str, Any]) -> Finding:
    """Parse a GuardDuty finding (the `detail` of its EventBridge event).

    Raises FindingParseError naming the field when the finding is not a credential finding
    Quench can act on.
    """
    try:
        gd = GuardDutyFinding.model_validate(detail)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "detail"
        raise FindingParseError(f"detail.{field}", first["msg"]) from None
    keys = gd.resource.accessKeyDetails
    if keys is None:
        raise FindingParseError(
            "detail.resource.accessKeyDetails", "the finding names no access key to contain"
        )
    instance = gd.resource.instanceDetails
    profile = instance.iamInstanceProfile if instance else None
    api_call = None
    call = gd.service.action.awsApiCallAction if gd.service.action else None
    if call:
        remote = call.remoteIpDetails
        api_call = ApiCall(
            api=call.api,
            service_name=call.serviceName,
            caller_type=call.callerType,
            user_agent=call.userAgent,
            error_code=call.errorCode,
            remote_ip=RemoteIp(
                ip_address=remote.ipAddressV4,
                country=remote.country.countryName if remote.country else None,
                city=remote.city.cityName if remote.city else None,
                as_org=remote.organization.asnOrg if remote.organization else None,
                asn=remote.organization.asn if remote.organization else None,
            )
            if remote
            else None,
        )
    return Finding(
        id=gd.id,
        type=gd.type,
        severity=gd.severity,
        account_id=gd.accountId,
        region=gd.region,
        title=gd.title,
        created_at=gd.createdAt,
        updated_at=gd.updatedAt,
        access_key=AccessKeyDetails(
            access_key_id=keys.accessKeyId,
            principal_id=keys.principalId,
            user_name=keys.userName,
            user_type=keys.userType,
        ),
        instance_id=instance.instanceId if instance else None,
        instance_profile_arn=profile.arn if profile else None,
        first_seen=gd.service.eventFirstSeen,
        last_seen=gd.service.eventLastSeen,
        count=gd.service.count,
        archived=gd.service.archived,
        api_call=api_call,
        raw=detail,
    )
