"""The accounts file: what it accepts, what it refuses (naming the entry), the defaults it
fills in, and each account's policy."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.accounts import AccountsError, load_accounts, session_label
from config.settings import Settings
from lab.organization import ACCOUNTS_FILE, EXTERNAL_ID, MEMBERS, RESPONDER_ROLE
from models.case import ActionKind

README = Path(__file__).resolve().parents[2] / "README.md"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return path


def test_the_labs_file_names_each_account_and_the_role_assumed_there():
    accounts = {a.id: a for a in load_accounts(ACCOUNTS_FILE)[0]}
    assert accounts["123456789012"].role() is None
    for account in MEMBERS:
        assert accounts[account].role() == f"arn:aws:iam::{account}:role/{RESPONDER_ROLE}"
        assert accounts[account].external_id == EXTERNAL_ID
        trail = accounts[account].cloudtrail
        assert trail is not None and trail.organization_id == "o-quenchlab01"


def test_the_readmes_example_is_a_valid_file(tmp_path):
    section = README.read_text().split("## Many accounts", 1)[1]
    example = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    accounts, _ = load_accounts(_write(tmp_path, example.group(1)))
    assert [a.id for a in accounts] == ["123456789012", "111111111111"]
    assert accounts[1].role() == "arn:aws:iam::111111111111:role/QuenchResponder"


def test_defaults_fill_in_each_key_an_account_leaves_out(tmp_path):
    path = _write(
        tmp_path,
        '[defaults]\nrole_name = "QuenchResponder"\nexternal_id = "xid-default"\n'
        '[[account]]\nid = "111111111111"\nrole_name = "OtherRole"\n'
        '[[account]]\nid = "222222222222"\nexternal_id = "xid-222"\n'
        '[[account]]\nid = "123456789012"\nown_credentials = true\n',
    )
    prod, staging, own = load_accounts(path)[0]
    assert (prod.role(), prod.external_id) == (
        "arn:aws:iam::111111111111:role/OtherRole",
        "xid-default",
    )
    assert (staging.role(), staging.external_id) == (
        "arn:aws:iam::222222222222:role/QuenchResponder",
        "xid-222",
    )
    assert (own.role(), own.external_id) == (None, None)


def test_a_role_arn_template_is_filled_in_with_the_account(tmp_path):
    path = _write(
        tmp_path,
        '[defaults]\nrole_arn = "arn:aws:iam::{account_id}:role/ir/Quench"\n'
        '[[account]]\nid = "111111111111"\n',
    )
    assert load_accounts(path)[0][0].role() == "arn:aws:iam::111111111111:role/ir/Quench"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[account]]\nid = "1234"\nrole_name = "R"\n', "account 1234: id: String should match"),
        ("[[account]]\nid = 1234\n", "[[account]] 1: id: Input should be a valid string"),
        ("[defaults]\n", "it lists no account"),
        (
            '[[account]]\nid = "111111111111"\nrole_arn = "arn:aws:iam::222222222222:role/R"\n',
            "role_arn is a role in account 222222222222, not 111111111111",
        ),
        (
            '[defaults]\nrole_arn = "arn:aws:iam::222222222222:role/R"\n'
            '[[account]]\nid = "111111111111"\n',
            "role_arn must be a template with {account_id}",
        ),
        (
            '[[account]]\nid = "111111111111"\nrole_name = "R"\n'
            'approvals = { no_approval_actions = ["retry"] }\n',
            "retry actions always need a person's approval",
        ),
        ('[[account]]\nid = "111111111111"\nrole_nmae = "R"\n', "role_nmae"),
        ('[[account]]\nid = "111111111111"\n', "name the role Quench assumes there"),
        (
            '[[account]]\nid = "111111111111"\nrole_name = "R"\n'
            '[[account]]\nid = "111111111111"\nrole_name = "R"\n',
            "listed twice",
        ),
        (
            '[[account]]\nid = "111111111111"\nown_credentials = true\nrole_name = "R"\n',
            "own_credentials assumes no role",
        ),
        ('[[account]]\nid = "111111111111"\nrole_name = "R"\ncloudtrail = {}\n', "bucket"),
        ("[[account]\n", "is not TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_what_is_wrong(tmp_path, text, named):
    with pytest.raises(AccountsError) as refused:
        load_accounts(_write(tmp_path, text))
    assert named in str(refused.value)
    assert str(refused.value).startswith("QUENCH_ACCOUNTS_FILE:")


def test_settings_refuse_a_bad_file_and_two_ways_of_naming_accounts(tmp_path):
    with pytest.raises(ValidationError, match="cannot read"):
        Settings(accounts_file=tmp_path / "missing.toml")
    with pytest.raises(ValidationError, match="both name the managed accounts"):
        Settings(accounts_file=ACCOUNTS_FILE, account_id="123456789012")


def test_an_accounts_policy_adds_its_protected_names_and_replaces_approvals(tmp_path):
    path = _write(
        tmp_path,
        '[defaults]\ncloudtrail = { source = "lookup" }\n'
        '[[account]]\nid = "111111111111"\nrole_name = "R"\n'
        'protected_names = ["break-glass"]\n'
        'approvals = { two_person_actions = ["eradicate"], approval_deadline_seconds = 60 }\n'
        '[[account]]\nid = "222222222222"\nrole_name = "R"\n',
    )
    settings = Settings(accounts_file=path, protected_names=["alice-admin"], approvers={})
    prod, staging = settings.case_policy("111111111111"), settings.case_policy("222222222222")
    assert prod.protected_names == ["alice-admin", "break-glass"]
    assert prod.two_person == [ActionKind.ERADICATE] and prod.approval_deadline_seconds == 60
    assert staging.protected_names == ["alice-admin"] and staging.two_person == []
    assert staging.approval_deadline_seconds == settings.approval_deadline_seconds


def test_only_listed_accounts_are_managed():
    settings = Settings(accounts_file=ACCOUNTS_FILE)
    assert settings.unmanaged_because("111111111111") is None
    reason = settings.unmanaged_because("999999999999")
    assert reason == f"account 999999999999 is not managed by this Quench (not in {ACCOUNTS_FILE})"
    assert Settings(lab=True).unmanaged_because("123456789012") is None
    with pytest.raises(ValueError, match=r"QUENCH_ACCOUNT_ID \(or QUENCH_ACCOUNTS_FILE\)"):
        Settings(evidence_bucket="e", cloudtrail_bucket="t").require_aws_targets()


def test_members_with_their_own_trail_need_no_default_trail_bucket(tmp_path):
    path = _write(
        tmp_path,
        '[defaults]\nrole_name = "R"\ncloudtrail = { source = "lookup" }\n'
        '[[account]]\nid = "111111111111"\n',
    )
    Settings(accounts_file=path, evidence_bucket="e").require_aws_targets()
    with pytest.raises(ValueError, match="QUENCH_CLOUDTRAIL_BUCKET"):
        Settings(account_id="111111111111", evidence_bucket="e").require_aws_targets()


def test_a_session_label_is_what_sts_accepts():
    assert session_label("case-111111111111-ASIAEXAMPLE") == "case-111111111111-ASIAEXAMPLE"
    long = session_label("case/" + "x" * 100)
    assert len(long) == 64 and "/" not in long
    assert session_label("c") == "quench-c"


def test_an_account_not_quenchs_own_needs_a_trail_of_its_own(tmp_path):
    path = _write(tmp_path, '[[account]]\nid = "111111111111"\nrole_name = "R"\n')
    with pytest.raises(ValidationError, match="account 111111111111 names no cloudtrail source"):
        Settings(accounts_file=path)
    assert Settings(accounts_file=path, cloudtrail_source="lookup").managed_accounts


def test_the_quarantine_policy_exempts_quenchs_role_and_the_protected_names():
    settings = Settings(accounts_file=ACCOUNTS_FILE, protected_names=["alice-admin"])
    prod = settings.quarantine_policy("111111111111")
    assert prod is not None and prod.policy_account == "101010101010"
    assert "arn:aws:iam::111111111111:role/QuenchResponder" in prod.exempt
    for name in ("alice-admin", "break-glass-admin"):
        assert f"arn:aws:iam::111111111111:role/{name}" in prod.exempt
        assert f"arn:aws:iam::111111111111:user/*/{name}" in prod.exempt
    assert settings.case_policy("111111111111").quarantine == prod
    # Not the policy account, nor an account Quench does not manage.
    assert settings.quarantine_policy("101010101010") is None
    assert settings.quarantine_policy("999999999999") is None
    assert Settings(account_id="123456789012").quarantine_policy("123456789012") is None


def test_an_accounts_approvers_replace_the_defaults_kind_by_kind(tmp_path):
    path = _write(
        tmp_path,
        '[defaults]\ncloudtrail = { source = "lookup" }\n'
        '[[account]]\nid = "111111111111"\nrole_name = "R"\n'
        'approvals = { approvers = { eradicate = ["bob"] } }\n',
    )
    settings = Settings(accounts_file=path, approvers={"contain": ["alice"]})
    assert settings.case_policy("111111111111").approvers == {
        ActionKind.CONTAIN_INSTANCE_ROLE: ["alice"],
        ActionKind.ERADICATE: ["bob"],
    }
