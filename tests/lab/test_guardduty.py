"""The lab's GuardDuty findings parse as Quench parses GuardDuty's own."""

from datetime import UTC, datetime, timedelta
from typing import Any

from lab.guardduty import TOR_FINDING, eventbridge_event, instance_role_finding, user_key_finding
from models.finding import GuardDutyEvent, finding_from_guardduty

T0 = datetime(2026, 11, 22, 7, 3, 10, tzinfo=UTC)
COMMON: dict[str, Any] = {
    "account_id": "123456789012",
    "region": "us-east-1",
    "remote_ip": "192.0.2.77",
    "api": "GetCallerIdentity",
    "service_name": "sts.amazonaws.com",
    "user_agent": "aws-cli/2.15.30",
    "first_seen": T0,
    "last_seen": T0 + timedelta(minutes=9),
    "count": 8,
}


def test_a_user_key_finding_names_the_user_and_no_instance():
    detail = user_key_finding(
        access_key_id="AKIARZPUZDIKE3Y6LRTJ",
        principal_id="oad9rybavqltoms9b6a7",
        user_name="build-bot",
        finding_id="tor-1",
        **COMMON,
    )
    event = GuardDutyEvent.model_validate(eventbridge_event(detail))
    finding = finding_from_guardduty(event.detail)
    assert finding.type == TOR_FINDING == "UnauthorizedAccess:IAMUser/TorIPCaller"
    assert finding.id == "tor-1" and finding.severity == 5.0
    assert (finding.access_key.access_key_id, finding.access_key.user_name) == (
        "AKIARZPUZDIKE3Y6LRTJ",
        "build-bot",
    )
    assert finding.access_key.user_type == "IAMUser"
    assert finding.access_key.principal_id == "oad9rybavqltoms9b6a7"
    assert finding.instance_id is None and "instanceDetails" not in detail["resource"]
    assert finding.api_call is not None and finding.api_call.remote_ip is not None
    assert finding.api_call.remote_ip.ip_address == "192.0.2.77"
    assert finding.api_call.remote_ip.as_org == "Example Tor Exit Relay (lab)"
    assert (finding.first_seen, finding.last_seen, finding.count) == (
        T0,
        T0 + timedelta(minutes=9),
        8,
    )
    assert "Tor exit node" in finding.title


def test_both_findings_share_their_shape_but_not_their_resource():
    tor = user_key_finding(
        access_key_id="AKIAEXAMPLE000000001",
        principal_id="u1",
        user_name="build-bot",
        finding_id="f",
        **COMMON,
    )
    role = instance_role_finding(
        access_key_id="ASIAEXAMPLE000000001",
        principal_id="AROA1:i-0abc",
        role_name="web-app-role",
        instance_id="i-0abc",
        instance_profile_arn="arn:aws:iam::123456789012:instance-profile/p",
        instance_profile_id="AIPA1",
        finding_id="f",
        **COMMON,
    )
    assert tor.keys() == role.keys()
    assert tor["service"].keys() == role["service"].keys()
    assert role["resource"]["instanceDetails"]["instanceId"] == "i-0abc"
    assert role["service"]["additionalInfo"] == {"threatListName": "lab-threat-list"}
    assert finding_from_guardduty(role).instance_id == "i-0abc"
    assert tor["type"] != role["type"]
