"""An EventBridge event as it arrives (GuardDuty's own, or Security Hub's imported finding),
read into the finding a case acts on or the reason it is ignored.

A malformed event raises FindingParseError naming the field, before anything is started.
"""

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.settings import Settings
from models.finding import (
    Finding,
    FindingParseError,
    GuardDutyEvent,
    finding_from_guardduty,
)
from models.securityhub import (
    SecurityHubEvent,
    finding_from_asff,
    is_guardduty,
    parse_asff,
    summarise_asff,
)
from webhook.routing import Routing, ignored_because

GUARDDUTY_DETAIL_TYPE = "GuardDuty Finding"
SECURITY_HUB_DETAIL_TYPE = "Security Hub Findings - Imported"
NO_ACCESS_KEY = "finding is not about an access key"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Triage:
    """A finding to open or join a case with, or the reason the event is ignored."""

    finding_id: str | None
    finding: Finding | None = None
    ignored: str | None = None


class _RoutingService(BaseModel):
    model_config = ConfigDict(extra="ignore")
    archived: bool = False
    additionalInfo: dict[str, Any] | None = None


class _RoutingResource(BaseModel):
    model_config = ConfigDict(extra="ignore")
    accessKeyDetails: dict[str, Any] | None = None


class _GdRouting(BaseModel):
    """The parts of a GuardDuty finding routing reads; the rest is parsed only if acted on."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=300)
    accountId: str = Field(pattern=r"^\d{12}$")
    type: str = Field(min_length=1, max_length=300)
    severity: float = Field(ge=0, le=10)
    resource: _RoutingResource = Field(default_factory=_RoutingResource)
    service: _RoutingService = Field(default_factory=_RoutingService)


def triage_event(payload: Any, settings: Settings) -> Triage:
    if not isinstance(payload, dict):
        raise FindingParseError("body", "an EventBridge event is a JSON object")
    detail_type = payload.get("detail-type")
    if detail_type == SECURITY_HUB_DETAIL_TYPE:
        return _security_hub(payload, settings)
    if detail_type == GUARDDUTY_DETAIL_TYPE or detail_type is None:
        return _guardduty(payload, settings)
    raise FindingParseError(
        "detail-type", f"expected '{GUARDDUTY_DETAIL_TYPE}' or '{SECURITY_HUB_DETAIL_TYPE}'"
    )


def _guardduty(payload: dict[str, Any], settings: Settings) -> Triage:
    event = _validate(GuardDutyEvent, payload, "")
    return triage_guardduty_finding(event.detail, settings)


def triage_guardduty_finding(detail: Any, settings: Settings) -> Triage:
    """A GuardDuty finding on its own (its event's `detail`, as GuardDuty's console and API
    give it), routed as its event would be; fields are named as within the event."""
    summary = _validate(_GdRouting, detail, "detail.")
    routing = Routing(
        type=summary.type,
        account_id=summary.accountId,
        severity=summary.severity,
        archived=summary.service.archived,
        sample=(summary.service.additionalInfo or {}).get("sample") is True,
    )
    if reason := ignored_because(routing, settings):
        return Triage(finding_id=summary.id, ignored=reason)
    if not summary.resource.accessKeyDetails:
        return Triage(finding_id=summary.id, ignored=NO_ACCESS_KEY)
    return Triage(finding_id=summary.id, finding=finding_from_guardduty(detail))


def _security_hub(payload: dict[str, Any], settings: Settings) -> Triage:
    event = _validate(SecurityHubEvent, payload, "")
    raw = event.detail.findings[0]
    asff = parse_asff(raw)
    summary = summarise_asff(asff)
    if not is_guardduty(asff) and not summary.names_access_key:
        product = asff.ProductName or asff.ProductArn
        return Triage(
            finding_id=summary.id, ignored=f"a {product} finding that names no IAM credential"
        )
    routing = Routing(
        type=summary.type,
        account_id=asff.AwsAccountId,
        severity=summary.severity,
        archived=summary.archived,
        sample=raw.get("Sample") is True,
    )
    if reason := ignored_because(routing, settings):
        return Triage(finding_id=summary.id, ignored=reason)
    if not summary.names_access_key:
        return Triage(finding_id=summary.id, ignored=NO_ACCESS_KEY)
    return Triage(finding_id=summary.id, finding=finding_from_asff(raw))


def _validate(model: type[M], value: Any, prefix: str) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise FindingParseError(f"{prefix}{field}".rstrip(".") or "body", first["msg"]) from None
