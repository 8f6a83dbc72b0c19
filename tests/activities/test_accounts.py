"""Acting in the case's account: the role assumed there, in a session named for the case,
kept per account and case and renewed; never the worker's own credentials by accident."""

import asyncio
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

from activities import accounts as accounts_module
from activities.accounts import AccountClients, ActInCaseAccount, Scope, _acting_in, acting_in
from activities.aws import ERROR_ACCESS_DENIED, AwsClients
from activities.faults import FaultInjector, parse_fault_plan
from activities.hands_off import QuenchIdentity
from config.accounts import Account
from models.activities import InstanceInput, StoreEvidenceInput
from tests.support import REGION

MEMBER = "111111111111"
ACCOUNTS = {
    "123456789012": Account(id="123456789012", own_credentials=True),
    MEMBER: Account(id=MEMBER, name="web-prod", role_name="QuenchResponder", external_id="xid-1"),
}
CASE = "case-111111111111-ASIAEXAMPLE0001"


def _in(scope: Scope | None):
    class Scoped:
        def __enter__(self) -> None:
            self.token = _acting_in.set(scope)

        def __exit__(self, *exc: Any) -> None:
            _acting_in.reset(self.token)

    return Scoped()


def _identity(clients: AwsClients) -> dict[str, Any]:
    return dict(clients.client("sts").get_caller_identity())


def test_in_a_members_scope_calls_are_made_in_that_account_by_a_session_of_the_case(clients):
    router = AccountClients(clients, ACCOUNTS)
    with _in(Scope(MEMBER, CASE)):
        identity = _identity(router)
    assert identity["Account"] == MEMBER
    assert identity["Arn"] == f"arn:aws:sts::{MEMBER}:assumed-role/QuenchResponder/{CASE}"
    # In the worker's own account, the worker's own credentials.
    with _in(Scope("123456789012", CASE)):
        assert _identity(router)["Account"] == "123456789012"
    # An input that names no account (a case from before several accounts) acts only where
    # the worker's own account is the one managed; with members too, it is refused.
    with pytest.raises(ApplicationError, match="names no account to act in"):
        router.client("iam")
    alone = AccountClients(clients, {"123456789012": ACCOUNTS["123456789012"]})
    assert _identity(alone)["Account"] == "123456789012"


def test_the_assumption_names_the_case_its_source_identity_and_the_external_id(clients):
    router = AccountClients(clients, ACCOUNTS)
    asked: list[dict[str, Any]] = []
    real = router._assume

    def recorded(arguments: dict[str, Any]) -> dict[str, Any]:
        asked.append(arguments)
        return real(arguments)

    router._assume = recorded  # type: ignore[method-assign]
    with _in(Scope(MEMBER, CASE)):
        router.client("iam")
        router.client("ec2")
    with _in(Scope(MEMBER, "case-111111111111-ASIAOTHERCASE001")):
        router.client("iam")
    # One session per account and case, whatever clients it serves.
    assert [a["RoleSessionName"] for a in asked] == [CASE, "case-111111111111-ASIAOTHERCASE001"]
    assert asked[0] == {
        "RoleArn": f"arn:aws:iam::{MEMBER}:role/QuenchResponder",
        "RoleSessionName": CASE,
        "SourceIdentity": CASE,
        "DurationSeconds": accounts_module.SESSION_SECONDS,
        "ExternalId": "xid-1",
    }


def test_a_session_about_to_expire_is_renewed(clients, monkeypatch):
    # STS's shortest session is inside botocore's refresh window: each call renews it.
    monkeypatch.setattr(accounts_module, "SESSION_SECONDS", 900)
    router = AccountClients(clients, ACCOUNTS)
    assumed: list[str] = []
    real = router._assume

    def counted(arguments: dict[str, Any]) -> dict[str, Any]:
        assumed.append(arguments["RoleSessionName"])
        return real(arguments)

    router._assume = counted  # type: ignore[method-assign]
    with _in(Scope(MEMBER, CASE)):
        sts = router.client("sts")
        identities = [sts.get_caller_identity()["Account"] for _ in range(2)]
    assert identities == [MEMBER, MEMBER]
    assert assumed == [CASE, CASE, CASE]  # the first session, then one renewal a call


def test_a_role_that_cannot_be_assumed_fails_naming_account_role_and_error(
    boto3_session, mocked_aws
):
    denied = FaultInjector(parse_fault_plan({"sts:AssumeRole": "access_denied"}))
    router = AccountClients(AwsClients(boto3_session, REGION, faults=denied), ACCOUNTS)
    with _in(Scope(MEMBER, CASE)), pytest.raises(ApplicationError) as failed:
        router.client("iam")
    error = failed.value
    assert error.type == ERROR_ACCESS_DENIED and error.non_retryable
    assert error.message.startswith(
        f"cannot act in account {MEMBER} (web-prod): assuming "
        f"arn:aws:iam::{MEMBER}:role/QuenchResponder failed: AccessDenied"
    )
    assert "(call sts:AssumeRole)" in str(error)


def test_a_session_in_another_account_than_the_cases_is_refused(clients):
    router = AccountClients(clients, ACCOUNTS)
    real = router._assume

    def elsewhere(arguments: dict[str, Any]) -> dict[str, Any]:
        answer = real(arguments)
        arn = answer["AssumedRoleUser"]["Arn"].replace(MEMBER, "222222222222")
        return {**answer, "AssumedRoleUser": {**answer["AssumedRoleUser"], "Arn": arn}}

    router._assume = elsewhere  # type: ignore[method-assign]
    with _in(Scope(MEMBER, CASE)), pytest.raises(ApplicationError) as refused:
        router.client("iam")
    assert refused.value.type == accounts_module.ERROR_WRONG_ACCOUNT
    assert "gave a session in account 222222222222" in refused.value.message


def test_an_account_not_managed_is_refused_before_any_call(clients):
    router = AccountClients(clients, ACCOUNTS)
    with _in(Scope("999999999999", CASE)), pytest.raises(ApplicationError) as refused:
        router.client("iam")
    assert refused.value.type == accounts_module.ERROR_ACCOUNT_NOT_MANAGED
    assert "account 999999999999 is not managed" in str(refused.value)


def test_an_own_credentials_account_must_be_the_workers_own(clients):
    identity = QuenchIdentity.learn(clients, [])
    assert accounts_module.unassumed_elsewhere(ACCOUNTS, identity) == []
    elsewhere = {"222222222222": Account(id="222222222222", own_credentials=True)}
    assert accounts_module.unassumed_elsewhere(elsewhere, identity) == [
        "account 222222222222 names no role to assume, and the worker's own credentials are "
        "of account 123456789012"
    ]


class _Seen(ActivityInboundInterceptor):
    def __init__(self) -> None:
        self.scopes: list[Scope | None] = []

    async def execute_activity(self, input: Any) -> Any:
        self.scopes.append(acting_in())


def test_the_interceptor_runs_each_activity_in_the_account_its_input_names():
    seen = _Seen()
    interceptor = ActInCaseAccount().intercept_activity(seen)

    def run(argument: Any) -> None:
        request = ExecuteActivityInput(fn=lambda: None, args=[argument], executor=None, headers={})
        asyncio.run(interceptor.execute_activity(request))

    run(InstanceInput(instance_id="i-1", account_id=MEMBER, case_id=CASE))
    run(InstanceInput(instance_id="i-1"))  # a case from before several accounts
    run(StoreEvidenceInput(case_id=CASE, name="n", document={}))  # central
    assert seen.scopes == [Scope(MEMBER, CASE), None, None]
    assert acting_in() is None
