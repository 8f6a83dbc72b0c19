"""Which findings open or join a case: credential-compromise types, at or above the
severity threshold, not archived, not GuardDuty's samples, in an account Quench manages.
Everything else is acknowledged with the reason it was ignored."""

from fnmatch import fnmatchcase

from pydantic import BaseModel

from config.settings import Settings


class Routing(BaseModel):
    """What routing looks at, read from either finding format before the whole finding is."""

    type: str
    account_id: str
    severity: float
    archived: bool = False
    sample: bool = False


def ignored_because(routing: Routing, settings: Settings) -> str | None:
    """Why the finding is not acted on, or None when it opens or joins a case."""
    if routing.sample:
        return "a GuardDuty sample finding"
    if reason := settings.unmanaged_because(routing.account_id):
        return reason
    if any(fnmatchcase(routing.type, pattern) for pattern in settings.finding_types_deny):
        return f"finding type {routing.type} is denied by QUENCH_FINDING_TYPES_DENY"
    if not any(fnmatchcase(routing.type, pattern) for pattern in settings.finding_types_allow):
        return (
            f"finding type {routing.type} is not a credential compromise "
            "(QUENCH_FINDING_TYPES_ALLOW)"
        )
    if routing.archived and settings.ignore_archived:
        return "the finding is archived"
    if routing.severity < settings.min_severity:
        return f"severity {routing.severity} is below QUENCH_MIN_SEVERITY {settings.min_severity}"
    return None
