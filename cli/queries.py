"""Temporal list queries over the case's search attributes, built from `list`'s filters.

Values are put in single quotes; a value holding a quote, a backslash or a control
character is refused rather than escaped, since no account, ARN, key, type or instance id
has one and a query is easier to trust (and to copy) without escapes.
"""

import re
from dataclasses import dataclass, field

from config import names
from models.case import Phase
from models.finding import ACCESS_KEY_PATTERN
from workflows.case import CaseWorkflow

# The workflow type the case search attributes belong to (the class name, as registered).
CASE_WORKFLOW_TYPE = CaseWorkflow.__name__
_UNSAFE = re.compile(r"['\"\\\x00-\x1f\x7f]")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_ACCESS_KEY_ID = re.compile(ACCESS_KEY_PATTERN)


class QueryValueError(ValueError):
    """A filter value that cannot go into a query; the message names the option."""


@dataclass
class CaseFilter:
    """What `list` filters on; an empty filter lists every case."""

    phases: list[Phase] = field(default_factory=list)
    account_id: str | None = None
    principal_arn: str | None = None
    principal_type: str | None = None
    access_key_id: str | None = None
    finding_type: str | None = None
    instance_id: str | None = None
    min_severity: float | None = None
    awaiting: bool = False
    open: bool = False
    raw: str | None = None


def quoted(value: str, option: str) -> str:
    """`value` as a query string literal; `option` names the filter in the error."""
    if not value:
        raise QueryValueError(f"{option}: empty value")
    if _UNSAFE.search(value):
        raise QueryValueError(
            f"{option}: quotes, backslashes and control characters are not allowed in a value"
        )
    return f"'{value}'"


def build_query(case_filter: CaseFilter) -> str:
    """The visibility query for a filter: every clause joined with AND, always limited to
    case workflows; a raw query is added in parentheses."""
    f = case_filter
    clauses = [f"WorkflowType = {quoted(CASE_WORKFLOW_TYPE, 'workflow type')}"]
    if f.phases:
        phases = [quoted(p.value, "--phase") for p in dict.fromkeys(f.phases)]
        clauses.append(
            f"{names.SA_PHASE.name} = {phases[0]}"
            if len(phases) == 1
            else f"{names.SA_PHASE.name} IN ({', '.join(phases)})"
        )
    if f.account_id is not None:
        if not _ACCOUNT_ID.match(f.account_id):
            raise QueryValueError("--account: an AWS account id is 12 digits")
        clauses.append(f"{names.SA_ACCOUNT_ID.name} = {quoted(f.account_id, '--account')}")
    if f.principal_arn is not None:
        if not f.principal_arn.startswith("arn:"):
            raise QueryValueError("--principal: an ARN, arn:aws:iam::... or arn:aws:sts::...")
        clauses.append(f"{names.SA_PRINCIPAL_ARN.name} = {quoted(f.principal_arn, '--principal')}")
    if f.principal_type is not None:
        clauses.append(
            f"{names.SA_PRINCIPAL_TYPE.name} = {quoted(f.principal_type, '--principal-type')}"
        )
    if f.access_key_id is not None:
        if not _ACCESS_KEY_ID.match(f.access_key_id):
            raise QueryValueError("--key: an access key id is AKIA... or ASIA...")
        clauses.append(f"{names.SA_ACCESS_KEY_ID.name} = {quoted(f.access_key_id, '--key')}")
    if f.finding_type is not None:
        clauses.append(f"{names.SA_FINDING_TYPE.name} = {quoted(f.finding_type, '--finding-type')}")
    if f.instance_id is not None:
        clauses.append(f"{names.SA_INSTANCE_ID.name} = {quoted(f.instance_id, '--instance')}")
    if f.min_severity is not None:
        if not 0 <= f.min_severity <= 10:
            raise QueryValueError("--min-severity: GuardDuty's severities run from 0 to 10")
        clauses.append(f"{names.SA_SEVERITY.name} >= {f.min_severity!r}")
    if f.awaiting:
        clauses.append(f"{names.SA_PENDING_APPROVALS.name} > 0")
    if f.open:
        clauses.append("ExecutionStatus = 'Running'")
    if f.raw is not None and f.raw.strip():
        if not _balanced(f.raw):
            raise QueryValueError(
                "--query: its parentheses and quotes must pair up within it, with no "
                "comment and no backslash (it is added in parentheses, and must not reach "
                "past them to widen the list beyond cases)"
            )
        clauses.append(f"({f.raw.strip()})")
    return " AND ".join(clauses)


def _balanced(query: str) -> bool:
    """Whether every parenthesis of the query outside its string literals closes within
    it, every literal ends, and nothing outside them starts a comment (Temporal's parser
    drops `/* */`, `--`, `#` and `//` comments, and with them any bracket or quote they
    hold): then `(query)` is one clause. A backslash is refused: an escaped quote would end
    a literal for one reader and not for another."""
    if "\\" in query:
        return False
    depth = 0
    quote: str | None = None
    for at, char in enumerate(query):
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char == "#" or query[at : at + 2] in ("/*", "*/", "--", "//"):
            return False
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and quote is None
