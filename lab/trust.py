"""What AWS checks and moto does not, for the lab's organisation: STS assumes a role only
if it exists and its trust policy lets the caller's account assume it, with the ExternalId
it asks for; and Organizations can invite an existing account.

Without this, the lab would let Quench act in any account whatever it deployed there, and
an account whose responder role is missing could not fail as it fails in AWS.
"""

import json
import threading
from typing import Any
from urllib.parse import unquote

from moto.iam.models import iam_backends
from moto.sts.exceptions import STSClientError
from moto.sts.responses import TokenResponse

_CHOSEN_ID = threading.Lock()
_ASSUME_ACTIONS = {"sts:assumerole", "sts:*", "*"}


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str | dict) else list(value or [])


def _trusted(document: dict[str, Any], caller_account: str, external_id: str | None) -> bool:
    for statement in _as_list(document.get("Statement")):
        if statement.get("Effect") != "Allow":
            continue
        if not {a.lower() for a in _as_list(statement.get("Action"))} & _ASSUME_ACTIONS:
            continue
        principal = statement.get("Principal") or {}
        aws = _as_list(principal.get("AWS")) if isinstance(principal, dict) else [principal]
        if not any(
            p == "*" or p == caller_account or p.split(":")[4:5] == [caller_account] for p in aws
        ):
            continue
        wanted = ((statement.get("Condition") or {}).get("StringEquals") or {}).get(
            "sts:ExternalId"
        )
        if wanted is not None and wanted not in _as_list(external_id):
            continue
        return True
    return False


def _refusal(caller_account: str, role_arn: str) -> STSClientError:
    return STSClientError(
        "AccessDenied",
        f"User: arn:aws:iam::{caller_account}:caller is not authorized to perform: "
        f"sts:AssumeRole on resource: {role_arn}",
    )


def install() -> None:
    assume_role = TokenResponse.assume_role

    def checked(self: TokenResponse) -> Any:
        role_arn = str(self._get_param("RoleArn") or "")
        caller = self.current_account
        parts = role_arn.split(":")
        if len(parts) < 6 or not parts[5].startswith("role/"):
            raise _refusal(caller, role_arn)
        iam = iam_backends[parts[4]]["global"]
        try:
            role = iam.get_role_by_arn(role_arn)
        except Exception:  # moto's NotFound: AWS answers a missing role with AccessDenied
            raise _refusal(caller, role_arn) from None
        document = role.assume_role_policy_document
        if isinstance(document, str):
            document = json.loads(unquote(document))
        if not _trusted(document, caller, self._get_param("ExternalId")):
            raise _refusal(caller, role_arn)
        return assume_role(self)

    TokenResponse.assume_role = checked  # type: ignore[method-assign]


def install_invitations() -> None:
    """Organizations' InviteAccountToOrganization, which moto lacks, with the invited
    account's acceptance at once (the lab plays both sides): an existing account joins
    the organisation under its own id, as the lab's member accounts do."""
    from moto.organizations import utils
    from moto.organizations.responses import OrganizationsResponse

    def invite(self: OrganizationsResponse) -> str:
        target = str(self._get_param("Target", {}).get("Id", ""))
        backend = self.organizations_backend
        known = {account.id for account in backend.accounts}
        if target not in known:
            # moto draws a new account's id from this function: the invited one's, once.
            with _CHOSEN_ID:
                chosen = utils.make_random_account_id
                utils.make_random_account_id = lambda: target
                try:
                    backend.create_account(AccountName=f"account-{target}", Email=f"{target}@lab")
                finally:
                    utils.make_random_account_id = chosen
            joined = backend.get_account_by_id(target)
            joined.joined_method = "INVITED"
        return json.dumps({"Handshake": {"Id": f"h-{target}", "State": "ACCEPTED"}})

    OrganizationsResponse.invite_account_to_organization = invite  # type: ignore[attr-defined]
