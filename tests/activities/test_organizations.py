"""The quarantine's service control policy: made, attached, lifted; each idempotent."""

import json
from datetime import UTC, datetime

import pytest

from activities.organizations import OrganizationActivities
from models.activities import QuarantineInput
from playbook.quarantine import quarantine_document, quarantine_policy_name

CASE = "case-111111111111-ASIAEXAMPLE0001"


@pytest.fixture
def organization(clients):
    org = clients.client("organizations")
    org.create_organization(FeatureSet="ALL")
    status = org.create_account(AccountName="web-prod", Email="web-prod@example.com")
    return org, str(status["CreateAccountStatus"]["AccountId"])


def _input(account: str, document: dict | None = None) -> QuarantineInput:
    return QuarantineInput(
        case_id=CASE,
        target_account_id=account,
        policy_name=quarantine_policy_name(CASE),
        document=document or {},
    )


def _attached(org, account: str) -> list[dict]:
    return org.list_policies_for_target(TargetId=account, Filter="SERVICE_CONTROL_POLICY")[
        "Policies"
    ]


def test_the_quarantine_is_attached_once_and_lifted_once(clients, organization):
    org, account = organization
    activities = OrganizationActivities(clients)
    document = quarantine_document(
        role_sessions=[f"arn:aws:iam::{account}:role/web-app-role"],
        principals=[],
        cutoff=datetime(2026, 12, 7, 14, 0, tzinfo=UTC),
        exempt=[f"arn:aws:iam::{account}:role/QuenchResponder"],
    )
    first = activities.attach_quarantine(_input(account, document))
    again = activities.attach_quarantine(_input(account, document))
    assert first.changed and not again.changed and first.policy_id == again.policy_id
    (attached,) = [p for p in _attached(org, account) if p["Name"] == quarantine_policy_name(CASE)]
    content = org.describe_policy(PolicyId=attached["Id"])["Policy"]["Content"]
    assert json.loads(content) == document

    lifted = activities.lift_quarantine(_input(account))
    assert lifted.changed and lifted.detail == "detached and deleted"
    assert all(p["Name"] != quarantine_policy_name(CASE) for p in _attached(org, account))
    assert not activities.lift_quarantine(_input(account)).changed


def test_the_document_denies_older_sessions_and_made_principals_but_never_the_exempt():
    cutoff = datetime(2026, 12, 7, 14, 0, 5, tzinfo=UTC)
    document = quarantine_document(
        role_sessions=["arn:aws:iam::111111111111:role/web-app-role"],
        principals=["arn:aws:iam::111111111111:user/svc-metrics"],
        cutoff=cutoff,
        exempt=["arn:aws:iam::111111111111:role/QuenchResponder"],
    )
    sessions, principals = document["Statement"]
    assert sessions["Effect"] == principals["Effect"] == "Deny"
    assert sessions["Condition"]["DateLessThan"] == {"aws:TokenIssueTime": "2026-12-07T14:00:05Z"}
    assert sessions["Condition"]["ArnLike"] == {
        "aws:PrincipalArn": ["arn:aws:iam::111111111111:role/web-app-role"]
    }
    assert "DateLessThan" not in principals["Condition"]
    for statement in document["Statement"]:
        assert statement["Condition"]["ArnNotLike"] == {
            "aws:PrincipalArn": ["arn:aws:iam::111111111111:role/QuenchResponder"]
        }
    assert quarantine_document(role_sessions=[], principals=[], cutoff=cutoff, exempt=[]) == {
        "Version": "2012-10-17",
        "Statement": [],
    }
