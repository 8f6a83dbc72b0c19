"""Acting in the case's account: the role Quench assumes there, in a session of the case.

Every activity whose input names an account runs in it: an interceptor reads the account
and the case from the input, and the clients the activity asks for are that account's.
The session is named after the case and carries it as its SourceIdentity, so the member
account's own CloudTrail says which case made each change, across role chaining. A role
that cannot be assumed fails the activity, naming the role, the account and the error;
it never falls back to the worker's own credentials.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.session
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from activities.aws import NON_RETRYABLE_ERRORS, AwsClients, classify, error_code
from activities.hands_off import QuenchIdentity
from config.accounts import Account, session_label
from models.activities import InAccount

ERROR_ACCOUNT_NOT_MANAGED = "AccountNotManaged"
ERROR_WRONG_ACCOUNT = "AssumedWrongAccount"
# Sessions last an hour; botocore renews one 15 minutes before it ends, while in use.
SESSION_SECONDS = 3600
# Sessions kept at once (one per account and case); the oldest unused goes first.
MAX_SESSIONS = 64


@dataclass(frozen=True)
class Scope:
    account_id: str
    case_id: str


_acting_in: ContextVar[Scope | None] = ContextVar("quench_acting_in", default=None)


def acting_in() -> Scope | None:
    """The account and case the running activity acts for; None: not in a member account."""
    return _acting_in.get()


class ActInCaseAccount(Interceptor):
    """Runs each activity in the account its input names (see the module's docstring)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActInCaseAccount(next)


class _ActInCaseAccount(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        request = input.args[0] if input.args else None
        if not isinstance(request, InAccount) or not request.account_id:
            return await super().execute_activity(input)
        # A threaded activity runs in a copy of this context, so it sees the scope.
        token = _acting_in.set(Scope(request.account_id, request.case_id))
        try:
            return await super().execute_activity(input)
        finally:
            _acting_in.reset(token)


class AccountClients(AwsClients):
    """The clients of whichever account the running activity acts in.

    Outside a scope (an input that names no account: a case opened before Quench managed
    several accounts), the worker's own, as such cases always acted, but only when that is
    the one account managed.
    """

    def __init__(self, home: AwsClients, accounts: dict[str, Account]) -> None:
        self.region = home.region
        self.identity = home.identity
        self._home = home
        self._accounts = accounts
        self._sessions: OrderedDict[Scope, AwsClients] = OrderedDict()
        self._lock = threading.Lock()

    def client(self, service: str, region: str | None = None) -> Any:
        return self._clients_for(acting_in()).client(service, region)

    def _clients_for(self, scope: Scope | None) -> AwsClients:
        if scope is None:
            # An input that names no account: a case opened before Quench managed several,
            # which acted with the worker's own credentials. Only where that account is the
            # one managed is that still right; anywhere else it would be the wrong account.
            if [a.own_credentials for a in self._accounts.values()] == [True]:
                return self._home
            raise ApplicationError(
                "this activity names no account to act in, and Quench manages more than its "
                "own: nothing is done",
                type=ERROR_ACCOUNT_NOT_MANAGED,
                non_retryable=True,
            )
        account = self._accounts.get(scope.account_id)
        if account is None:
            raise ApplicationError(
                f"account {scope.account_id} is not managed by this Quench: nothing is done there",
                {"account_id": scope.account_id},
                type=ERROR_ACCOUNT_NOT_MANAGED,
                non_retryable=True,
            )
        role_arn = account.role()
        if role_arn is None:
            return self._home
        with self._lock:
            if scope in self._sessions:
                self._sessions.move_to_end(scope)
                return self._sessions[scope]
        # Assumed outside the lock: one slow STS answer must not hold up other accounts.
        clients = self._home.with_session(self._assumed_session(account, role_arn, scope))
        with self._lock:
            self._sessions[scope] = clients
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return clients

    def _assumed_session(self, account: Account, role_arn: str, scope: Scope) -> boto3.Session:
        fetch = self._fetcher(account, role_arn, scope)
        credentials = RefreshableCredentials.create_from_metadata(
            metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
        )
        core = botocore.session.Session()
        # botocore takes refreshing credentials only this way.
        core._credentials = credentials  # type: ignore[attr-defined]
        return boto3.Session(botocore_session=core, region_name=self.region)

    def _fetcher(
        self, account: Account, role_arn: str, scope: Scope
    ) -> Callable[[], dict[str, str]]:
        label = session_label(scope.case_id or "quench")
        arguments: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": label,
            "SourceIdentity": label,
            "DurationSeconds": SESSION_SECONDS,
        }
        if account.external_id:
            arguments["ExternalId"] = account.external_id

        def fetch() -> dict[str, str]:
            try:
                assumed = self._assume(arguments)
            except ClientError as exc:
                kind = classify(error_code(exc))
                message = exc.response.get("Error", {}).get("Message", "")
                raise ApplicationError(
                    f"cannot act in account {account.label}: assuming {role_arn} failed: "
                    f"{error_code(exc)}: {message} (call sts:AssumeRole)",
                    {"account_id": account.id, "role_arn": role_arn, "call": "sts:AssumeRole"},
                    type=kind,
                    non_retryable=kind in NON_RETRYABLE_ERRORS,
                ) from exc
            except BotoCoreError as exc:
                raise ApplicationError(
                    f"cannot act in account {account.label}: assuming {role_arn} failed: {exc}",
                    {"account_id": account.id, "role_arn": role_arn, "call": "sts:AssumeRole"},
                ) from exc
            answer = assumed["Credentials"]
            landed = str(assumed["AssumedRoleUser"]["Arn"]).split(":")[4]
            if landed != account.id:
                # Never act in one account while the case names another.
                raise ApplicationError(
                    f"cannot act in account {account.label}: {role_arn} gave a session in "
                    f"account {landed}",
                    {"account_id": account.id, "role_arn": role_arn},
                    type=ERROR_WRONG_ACCOUNT,
                    non_retryable=True,
                )
            # The secret stays inside botocore's credentials, never in a result or a log.
            return {
                "access_key": answer["AccessKeyId"],
                "secret_key": answer["SecretAccessKey"],
                "token": answer["SessionToken"],
                "expiry_time": answer["Expiration"].isoformat(),
            }

        return fetch

    def _assume(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return dict(self._home.client("sts").assume_role(**arguments))


def unassumed_elsewhere(accounts: dict[str, Account], identity: QuenchIdentity) -> list[str]:
    """Accounts listed without a role that are not the worker's own: Quench could act
    there only with its own credentials, in the wrong account."""
    own = identity.account_id
    return [
        f"account {account.label} names no role to assume, and the worker's own "
        f"credentials are of account {own}"
        for account in accounts.values()
        if account.role() is None and account.id != own
    ]
