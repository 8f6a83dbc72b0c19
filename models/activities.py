"""Inputs and results of the activities: one model in, one model out."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from models.case import EvidenceRecord
from models.finding import Finding
from models.principal import Credential


class ResolvePrincipalInput(BaseModel):
    finding: Finding


class ResolvePrincipalResult(BaseModel):
    credential: Credential


class StoreEvidenceInput(BaseModel):
    case_id: str
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,120}$")
    document: dict[str, Any]


class CaptureRoleInput(BaseModel):
    case_id: str
    role_name: str


class CaptureInstanceInput(BaseModel):
    case_id: str
    instance_id: str


class CaptureInstanceResult(BaseModel):
    evidence: EvidenceRecord
    volume_ids: list[str]
    state: str  # the instance state when the evidence was taken


class SnapshotVolumesInput(BaseModel):
    case_id: str
    instance_id: str
    volume_ids: list[str]


class SnapshotVolumesResult(BaseModel):
    snapshot_ids: dict[str, str]  # volume id -> snapshot id
    evidence: EvidenceRecord


class CloudTrailSliceInput(BaseModel):
    case_id: str
    account_id: str
    access_key_id: str
    start: datetime
    end: datetime


class CloudTrailSliceResult(BaseModel):
    evidence: EvidenceRecord
    event_count: int
    files_scanned: int


class RevokeRoleSessionsInput(BaseModel):
    role_name: str
    cutoff: datetime  # decided by the workflow, so a retry writes the same policy


class RevokeRoleSessionsResult(BaseModel):
    policy_name: str
    cutoff_in_effect: datetime
    changed: bool


class InstanceInput(BaseModel):
    instance_id: str


class InstanceStateResult(BaseModel):
    instance_id: str
    state: str
    changed: bool


class ProbeInstanceCredentialsInput(BaseModel):
    instance_id: str
    role_name: str


class ProbeInstanceCredentialsResult(BaseModel):
    """What the instance's metadata service serves now, with the secret fields dropped."""

    instance_id: str
    role_name: str
    access_key_id: str
    code: str
    last_updated: datetime | None = None
    expiration: datetime | None = None
    command_id: str
