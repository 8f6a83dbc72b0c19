"""The investigation of a compromised credential from raw CloudTrail: what Amazon Detective
shows of a session (timeline, permissions, findings, call volume against a baseline, new
behaviour), computed inside every case."""

from datetime import datetime

from pydantic import BaseModel, Field


class CredentialSession(BaseModel):
    """One credential of the case as CloudTrail saw it in the scope window."""

    access_key_id: str
    first_observed: datetime | None = None
    last_observed: datetime | None = None
    calls: int = 0
    failed: int = 0
    source_ips: list[str] = Field(default_factory=list)


class CredentialEvent(BaseModel):
    """A call that names one of the case's credentials in its requestParameters or
    responseElements: the call that minted it, changed its status or deleted it."""

    at: datetime
    access_key_id: str  # the credential the call names
    api: str  # "iam.amazonaws.com:CreateAccessKey"
    caller: str  # the ARN (or type) of whoever made the call
    caller_key: str  # the access key the call was made with
    source_ip: str
    error_code: str | None = None
    status: str | None = None  # the key's status the call set or reported, when it says


class FindingSighting(BaseModel):
    id: str
    type: str
    severity: float
    first_seen: datetime
    last_seen: datetime
    count: int


class HourVolume(BaseModel):
    """Calls in one hour of the scope window, with what they came from."""

    hour: datetime  # the hour's start, UTC
    successful: int = 0
    failed: int = 0
    above_baseline: bool = False
    by_source_ip: dict[str, int] = Field(default_factory=dict)
    by_api: dict[str, int] = Field(default_factory=dict)  # "iam.amazonaws.com:ListUsers"
    by_access_key: dict[str, int] = Field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.successful + self.failed


class BaselineCounts(BaseModel):
    """What the investigation needs of the principal's calls before the scope window, kept
    as counts and sets rather than records, so months of calls stay small (and can be
    heartbeated while a scan runs)."""

    calls: int = 0
    failed: int = 0
    api_calls: dict[str, int] = Field(default_factory=dict)
    user_agents: list[str] = Field(default_factory=list)
    source_ips: list[str] = Field(default_factory=list)


class Baseline(BaseModel):
    """The principal's calls in the days before the scope window."""

    start: datetime
    end: datetime
    calls: int
    failed: int
    hourly_average: float  # calls an hour, successful and failed together
    failed_hourly_average: float


class IncreasedCall(BaseModel):
    api: str
    scope_per_hour: float
    baseline_per_hour: float


class NewBehaviour(BaseModel):
    """What the scope window holds that the baseline does not."""

    api_calls: list[str] = Field(default_factory=list)
    user_agents: list[str] = Field(default_factory=list)
    source_ips: list[str] = Field(default_factory=list)
    # Of the new source addresses, where the findings say they are.
    countries: list[str] = Field(default_factory=list)
    as_organizations: list[str] = Field(default_factory=list)
    increased_api_calls: list[IncreasedCall] = Field(default_factory=list)


class Investigation(BaseModel):
    account_id: str
    principal_arn: str
    scope_start: datetime
    scope_end: datetime
    sessions: list[CredentialSession]
    # Calls by anyone that name a credential of the case, in time order.
    credential_events: list[CredentialEvent] = Field(default_factory=list)
    findings: list[FindingSighting]  # in the order GuardDuty first saw them
    findings_first_seen: datetime | None
    findings_last_seen: datetime | None
    permissions: list[str]  # what the principal could do, from the evidence snapshot
    hours: list[HourVolume]
    baseline: Baseline
    new_behaviour: NewBehaviour

    def hours_above_baseline(self) -> list[HourVolume]:
        return [h for h in self.hours if h.above_baseline]
