"""Routing: the credential-compromise families open or join a case by default; other
findings are ignored with the reason; the type lists, severity threshold and archived
findings follow the settings."""

import pytest

from config.settings import Settings
from webhook.routing import Routing, ignored_because

ACCOUNT = "123456789012"

CREDENTIAL_TYPES = [
    "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
    "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.InsideAWS",
    "UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom",
    "UnauthorizedAccess:IAMUser/TorIPCaller",
    "Recon:IAMUser/MaliciousIPCaller",
    "Discovery:S3/MaliciousIPCaller",
    "UnauthorizedAccess:S3/TorIPCaller",
    "CredentialAccess:IAMUser/AnomalousBehavior",
    "Exfiltration:S3/AnomalousBehavior",
    "Policy:IAMUser/RootCredentialUsage",
    "Policy:IAMUser/ShortTermRootCredentialUsage",
    "Stealth:IAMUser/CloudTrailLoggingDisabled",
    "AttackSequence:IAM/CompromisedCredentials",
]
OTHER_TYPES = [
    "Recon:EC2/PortProbeUnprotectedPort",
    "CryptoCurrency:EC2/BitcoinTool.B!DNS",
    "Backdoor:EC2/C&CActivity.B",
    "AttackSequence:S3/CompromisedData",
    "Trojan:EC2/DNSDataExfiltration",
]


@pytest.mark.parametrize("finding_type", CREDENTIAL_TYPES)
def test_credential_compromise_families_are_acted_on_by_default(finding_type):
    assert (
        ignored_because(
            Routing(account_id=ACCOUNT, type=finding_type, severity=5.0),
            Settings(account_id=ACCOUNT),
        )
        is None
    )


@pytest.mark.parametrize("finding_type", OTHER_TYPES)
def test_other_finding_types_are_ignored_by_default(finding_type):
    reason = ignored_because(
        Routing(account_id=ACCOUNT, type=finding_type, severity=8.0), Settings(account_id=ACCOUNT)
    )
    assert reason == f"finding type {finding_type} is not a credential compromise " + (
        "(QUENCH_FINDING_TYPES_ALLOW)"
    )


def test_the_deny_list_wins_and_the_allow_list_replaces_the_default():
    settings = Settings(
        account_id=ACCOUNT,
        finding_types_allow=["Recon:EC2/*", "*:IAMUser/*"],
        finding_types_deny=["*/TorIPCaller"],
    )
    assert (
        ignored_because(
            Routing(account_id=ACCOUNT, type="Recon:EC2/PortProbeUnprotectedPort", severity=2),
            settings,
        )
        is None
    )
    denied = ignored_because(
        Routing(account_id=ACCOUNT, type="UnauthorizedAccess:IAMUser/TorIPCaller", severity=8),
        settings,
    )
    assert denied is not None and "QUENCH_FINDING_TYPES_DENY" in denied
    dropped = ignored_because(
        Routing(account_id=ACCOUNT, type="Discovery:S3/MaliciousIPCaller", severity=8), settings
    )
    assert dropped is not None and "QUENCH_FINDING_TYPES_ALLOW" in dropped


def test_the_severity_threshold_is_inclusive():
    settings = Settings(account_id=ACCOUNT, min_severity=5.0)
    finding_type = CREDENTIAL_TYPES[0]
    assert (
        ignored_because(Routing(account_id=ACCOUNT, type=finding_type, severity=5.0), settings)
        is None
    )
    assert ignored_because(
        Routing(account_id=ACCOUNT, type=finding_type, severity=4.9), settings
    ) == ("severity 4.9 is below QUENCH_MIN_SEVERITY 5.0")


def test_archived_and_sample_findings():
    finding_type = CREDENTIAL_TYPES[0]
    archived = Routing(account_id=ACCOUNT, type=finding_type, severity=5, archived=True)
    assert ignored_because(archived, Settings(account_id=ACCOUNT)) == "the finding is archived"
    assert ignored_because(archived, Settings(account_id=ACCOUNT, ignore_archived=False)) is None
    sample = Routing(account_id=ACCOUNT, type=finding_type, severity=5, sample=True)
    assert (
        ignored_because(sample, Settings(account_id=ACCOUNT, ignore_archived=False))
        == "a GuardDuty sample finding"
    )


def test_settings_read_the_lists_from_the_environment(monkeypatch):
    monkeypatch.setenv("QUENCH_FINDING_TYPES_ALLOW", '["Recon:EC2/*"]')
    monkeypatch.setenv("QUENCH_MIN_SEVERITY", "7")
    settings = Settings()
    assert settings.finding_types_allow == ["Recon:EC2/*"]
    assert settings.min_severity == 7.0


def test_a_finding_of_an_account_not_managed_is_ignored_naming_the_account():
    finding_type = CREDENTIAL_TYPES[0]
    elsewhere = Routing(account_id="999999999999", type=finding_type, severity=8)
    assert ignored_because(elsewhere, Settings(account_id=ACCOUNT)) == (
        "account 999999999999 is not managed by this Quench (not in QUENCH_ACCOUNT_ID)"
    )
    unset = ignored_because(Routing(account_id=ACCOUNT, type=finding_type, severity=8), Settings())
    assert unset is not None and "no account is" in unset and "QUENCH_ACCOUNTS_FILE" in unset
