"""Names that several parts must agree on: task queue, signals, queries, search attributes.

Defined once here and imported everywhere, so a rename can never leave a caller behind.
"""

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "quench-cases"
# CloudTrail's long reads: each round's classification and the investigation (a child
# workflow and its activities), apart from containment's queue so that they never hold up
# a cut-off. A worker serves either queue or both.
SCAN_TASK_QUEUE = "quench-scans"

CASE_WORKFLOW_ID_PREFIX = "case"

# Signals and queries of the case workflow.
SIGNAL_ADD_FINDING = "add_finding"
SIGNAL_APPROVE = "approve"
SIGNAL_REJECT = "reject"
SIGNAL_ADD_NOTE = "add_note"
# The same decisions and notes as updates: the caller gets the answer, or the refusal.
UPDATE_APPROVE = "approve_action"
UPDATE_REJECT = "reject_action"
UPDATE_ADD_NOTE = "add_note_now"
# A case marked a false positive: what its containment changed is offered for release.
SIGNAL_FALSE_POSITIVE = "mark_false_positive"
UPDATE_FALSE_POSITIVE = "mark_false_positive_now"
DECISION_REFUSED_ERROR = "DecisionRefused"
# An update whose input is not the shape its handler takes (no input, two, a wrong field).
INVALID_INPUT_ERROR = "InvalidInput"
# Who an approval names when the case went ahead on its own at the deadline, as its
# policy allows for containment of severe findings.
AUTO_APPROVER = "quench:policy"
QUERY_STATUS = "status"
QUERY_PLAN = "plan"
# The update the webhook delivers findings with: its answer says what the case made of it.
UPDATE_SUBMIT_FINDING = "submit_finding"
# Why the case refuses a submitted finding (ApplicationError types of the update's validator).
DUPLICATE_FINDING_ERROR = "DuplicateFinding"
ANOTHER_CREDENTIAL_ERROR = "FindingForAnotherCredential"
INVALID_FINDING_ERROR = "InvalidFinding"

# Custom search attributes: what the Web UI and `temporal workflow list --query` filter on.
SA_PHASE = SearchAttributeKey.for_keyword("QuenchPhase")
SA_ACCOUNT_ID = SearchAttributeKey.for_keyword("QuenchAccountId")
SA_ACCESS_KEY_ID = SearchAttributeKey.for_keyword("QuenchAccessKeyId")
SA_PRINCIPAL_ARN = SearchAttributeKey.for_keyword("QuenchPrincipalArn")
SA_PRINCIPAL_TYPE = SearchAttributeKey.for_keyword("QuenchPrincipalType")
SA_FINDING_TYPE = SearchAttributeKey.for_keyword("QuenchFindingType")
SA_SEVERITY = SearchAttributeKey.for_float("QuenchSeverity")
SA_INSTANCE_ID = SearchAttributeKey.for_keyword("QuenchInstanceId")
SA_PENDING_APPROVALS = SearchAttributeKey.for_int("QuenchPendingApprovals")
# How many times the case's approvals passed their deadline with nobody deciding.
SA_ESCALATIONS = SearchAttributeKey.for_int("QuenchEscalations")
# How a closed case came out, in a word: contained, partly contained, not contained,
# false positive, dry run (unset while it runs, and on cases closed before it existed).
SA_OUTCOME = SearchAttributeKey.for_keyword("QuenchOutcome")

SEARCH_ATTRIBUTES: tuple[SearchAttributeKey, ...] = (
    SA_PHASE,
    SA_ACCOUNT_ID,
    SA_ACCESS_KEY_ID,
    SA_PRINCIPAL_ARN,
    SA_PRINCIPAL_TYPE,
    SA_FINDING_TYPE,
    SA_SEVERITY,
    SA_INSTANCE_ID,
    SA_PENDING_APPROVALS,
    SA_ESCALATIONS,
    SA_OUTCOME,
)

# The server's names for the indexed value types, as `temporal server start-dev
# --search-attribute NAME=TYPE` and `temporal operator search-attribute create` spell them.
SEARCH_ATTRIBUTE_TYPE_NAMES = {
    "KEYWORD": "Keyword",
    "DOUBLE": "Double",
    "INT": "Int",
    "TEXT": "Text",
    "BOOL": "Bool",
    "DATETIME": "Datetime",
    "KEYWORD_LIST": "KeywordList",
}


def search_attribute_type_name(key: SearchAttributeKey) -> str:
    """The server-side type name of a search attribute key (Keyword, Double, Int...)."""
    enum_name = key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")
    return SEARCH_ATTRIBUTE_TYPE_NAMES[enum_name]


def case_workflow_id(account_id: str, access_key_id: str) -> str:
    """One case per compromised credential: the id is derived from account and key."""
    return f"{CASE_WORKFLOW_ID_PREFIX}-{account_id}-{access_key_id}"


# Tag put on everything Quench creates in AWS (snapshots), so a case's artefacts are findable.
CASE_TAG_KEY = "quench:case-id"

# The inline policy name AWS's console uses for "Revoke active sessions".
REVOKE_SESSIONS_POLICY_NAME = "AWSRevokeOlderSessions"
# The same deny on a user: sessions from GetSessionToken or GetFederationToken outlive the
# deactivation of the key that made them.
REVOKE_USER_TOKENS_POLICY_NAME = "QuenchRevokeOlderTokens"
# A user whose stolen key could not be deactivated is denied everything by this inline
# policy instead (AWS's playbook attaches AWSDenyAll): the key stays active but can do nothing.
DENY_ALL_POLICY_NAME = "QuenchDenyAll"
# A resource tagged quench:protected=true is never removed by eradication.
PROTECTED_TAG_KEY = "quench:protected"
# AWS attaches these to a key it finds exposed; they stay where AWS put them.
AWS_QUARANTINE_POLICY_PREFIX = "AWSCompromisedKeyQuarantine"
