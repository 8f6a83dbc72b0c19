"""`list`'s filters as a visibility query: one clause per filter, ANDed, values quoted, and
values that would change the query's meaning refused."""

import pytest

from cli.queries import CaseFilter, QueryValueError, build_query, quoted
from models.case import Phase

CASES = "WorkflowType = 'CaseWorkflow'"


def test_no_filter_is_every_case():
    assert build_query(CaseFilter()) == CASES


def test_every_filter_is_a_clause_anded_in_order():
    query = build_query(
        CaseFilter(
            phases=[Phase.AWAITING_APPROVAL, Phase.CONTAINMENT_FAILED, Phase.AWAITING_APPROVAL],
            account_id="123456789012",
            principal_arn="arn:aws:iam::123456789012:user/build-bot",
            principal_type="IAMUser",
            access_key_id="AKIAEXAMPLEBUILDBOT1",
            finding_type="UnauthorizedAccess:IAMUser/TorIPCaller",
            instance_id="i-0a1b2c3d4e5f60718",
            min_severity=7,
            awaiting=True,
            open=True,
            raw="StartTime > '2026-11-01T00:00:00Z' OR QuenchSeverity > 9",
        )
    )
    assert query.split(" AND ") == [
        CASES,
        "QuenchPhase IN ('awaiting_approval', 'containment_failed')",
        "QuenchAccountId = '123456789012'",
        "QuenchPrincipalArn = 'arn:aws:iam::123456789012:user/build-bot'",
        "QuenchPrincipalType = 'IAMUser'",
        "QuenchAccessKeyId = 'AKIAEXAMPLEBUILDBOT1'",
        "QuenchFindingType = 'UnauthorizedAccess:IAMUser/TorIPCaller'",
        "QuenchInstanceId = 'i-0a1b2c3d4e5f60718'",
        "QuenchSeverity >= 7",
        "QuenchPendingApprovals > 0",
        "ExecutionStatus = 'Running'",
        # The raw query keeps its own OR to itself.
        "(StartTime > '2026-11-01T00:00:00Z' OR QuenchSeverity > 9)",
    ]


def test_one_phase_is_an_equality():
    assert build_query(CaseFilter(phases=[Phase.CLOSED])) == f"{CASES} AND QuenchPhase = 'closed'"


@pytest.mark.parametrize(
    "value", ["x' OR 'a' = 'a", 'say "hi"', "back\\slash", "new\nline", "nul\x00", ""]
)
def test_a_value_that_could_change_the_query_is_refused(value):
    with pytest.raises(QueryValueError, match="--finding-type"):
        quoted(value, "--finding-type")
    with pytest.raises(QueryValueError):
        build_query(CaseFilter(finding_type=value))


@pytest.mark.parametrize(
    ("case_filter", "message"),
    [
        (CaseFilter(account_id="12345678901"), "--account: an AWS account id is 12 digits"),
        (CaseFilter(access_key_id="AKIA-short"), "--key: an access key id"),
        (CaseFilter(principal_arn="build-bot"), "--principal: an ARN"),
        (CaseFilter(min_severity=10.5), "--min-severity"),
    ],
)
def test_values_of_the_wrong_shape_are_refused(case_filter, message):
    with pytest.raises(QueryValueError, match=message):
        build_query(case_filter)


@pytest.mark.parametrize(
    "raw",
    [
        "QuenchSeverity > 9) OR (WorkflowType != 'x'",
        "QuenchSeverity > 9) OR WorkflowType != 'x' AND (QuenchSeverity > 0",
        "QuenchFindingType = 'unterminated",
        "(QuenchSeverity > 9",
        # Only the backslash rule stops this one: read with escapes, its literals differ.
        "QuenchPhase = 'a\\' OR QuenchPhase = ') OR WorkflowType != 'x' OR (QuenchPhase = 'b\\'c'",
        # Comments, which Temporal drops with the brackets in them.
        "WorkflowId = 'none' /* ( */ ) OR WorkflowType != 'x' OR ( /* ) */ WorkflowId = 'none'",
        "WorkflowId = 'none' -- (",
        "WorkflowId = 'none' # '",
        "WorkflowId = 'none' // )(",
    ],
)
def test_a_raw_query_that_could_reach_past_its_parentheses_is_refused(raw):
    with pytest.raises(QueryValueError, match="--query: its parentheses and quotes"):
        build_query(CaseFilter(raw=raw))


def test_parentheses_inside_a_raw_querys_literals_are_its_own():
    raw = "QuenchFindingType = 'a)' OR (QuenchSeverity > 9 AND QuenchPhase = '(x')"
    assert build_query(CaseFilter(raw=raw)) == f"{CASES} AND ({raw})"
