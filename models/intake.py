"""What becomes of a delivered finding: the case's answer to `submit_finding`, and the
webhook's answer to the sender."""

from enum import StrEnum

from pydantic import BaseModel, Field

from models.finding import Finding


class FindingOutcome(StrEnum):
    NEW_CASE = "new_case"  # the finding opened a case for its credential
    JOINED = "joined"  # another finding on a credential that already has a case
    UPDATED = "updated"  # a finding the case holds, seen again (count grew, newer updatedAt)
    DUPLICATE = "duplicate"  # the same delivery again (same id and updatedAt): nothing changes
    IGNORED = "ignored"  # not a credential compromise Quench acts on; `reason` says why


class SubmitFindingInput(BaseModel):
    finding: Finding


class SubmitFindingResult(BaseModel):
    outcome: FindingOutcome
    case_id: str
    run_id: str
    findings: int = Field(ge=1)  # deliveries the case now holds


class IngestResult(BaseModel):
    """The webhook's answer for one delivered event."""

    outcome: FindingOutcome
    case_id: str | None = None
    run_id: str | None = None
    finding_id: str | None = None
    reason: str | None = None
