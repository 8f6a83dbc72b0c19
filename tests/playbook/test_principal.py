"""The principal a finding names, which a case acts on when IAM cannot confirm it."""

import pytest

from models.finding import AccessKeyDetails
from models.principal import CredentialKind, PrincipalType
from playbook.principal import named_by_finding, session_name
from tests.support import ACCOUNT, INSTANCE, ROLE, STOLEN_KEY, finding


def _named(**keys: str | None) -> AccessKeyDetails:
    return AccessKeyDetails(access_key_id=STOLEN_KEY, **keys)


def test_an_instance_role_session_is_a_plain_role_session_until_iam_confirms_it():
    credential = named_by_finding(finding())
    principal = credential.principal
    assert credential.kind is CredentialKind.ROLE_SESSION
    assert principal.role_name == ROLE
    assert principal.session_name == INSTANCE
    assert principal.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/{INSTANCE}"
    assert principal.role_arn == f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
    # Not checked that the instance holds the role: nothing will stop and start it.
    assert principal.instance_id is None


def test_a_user_key_names_its_user():
    keys = _named(user_type="IAMUser", user_name="alice", principal_id="AIDAALICE")
    credential = named_by_finding(finding().model_copy(update={"access_key": keys}))
    assert credential.kind is CredentialKind.IAM_USER_KEY
    assert credential.principal.type is PrincipalType.IAM_USER
    assert credential.principal.user_name == "alice"
    assert credential.principal.arn == f"arn:aws:iam::{ACCOUNT}:user/alice"


def test_root_is_root_whatever_the_key_looks_like():
    keys = _named(user_type="Root", user_name=None)
    credential = named_by_finding(finding().model_copy(update={"access_key": keys}))
    assert credential.kind is CredentialKind.ROOT
    assert credential.principal.arn == f"arn:aws:iam::{ACCOUNT}:root"


@pytest.mark.parametrize(
    "keys",
    [
        _named(user_type="IAMUser", user_name=None),
        _named(user_type="IAMUser", user_name="not a/name"),
        _named(user_type="AssumedRole", user_name="x" * 65),
        _named(user_type="FederatedUser", user_name="bob"),
        _named(user_type=None, user_name="alice"),
    ],
)
def test_without_a_name_iam_accepts_the_principal_is_unknown(keys):
    credential = named_by_finding(finding().model_copy(update={"access_key": keys}))
    assert credential.kind is CredentialKind.UNKNOWN
    assert credential.principal.type is PrincipalType.UNKNOWN
    assert credential.principal.user_name is None and credential.principal.role_name is None


def test_the_session_is_what_follows_the_role_id():
    assert session_name("AROAEXAMPLE:i-0abc") == "i-0abc"
    assert session_name("AROAEXAMPLE") is None
    assert session_name(None) is None
