"""The investigation's computations on hand-made records whose answers are known: session
timelines, call volume per hour against a 45-day baseline, new and increased behaviour,
and the chart drawn from them."""

from datetime import UTC, datetime, timedelta
from typing import Any

from models.investigation import BaselineCounts
from playbook.chart import volume_chart
from playbook.investigation import (
    by_principal,
    count_baseline,
    investigate,
    markdown_section,
    permissions,
)
from tests.support import ACCOUNT, ROLE, finding

ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
STOLEN = "ASIASTOLENSESSION001"
LEGIT = "ASIALEGITSESSION0001"
ATTACKER_IP = "198.51.100.23"  # the finding's caller, in the Netherlands
SCOPE_START = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
SCOPE_END = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
SESSION_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/i-0a1b2c3d4e5f60718"


def _record(
    at: datetime,
    name: str,
    key: str = LEGIT,
    source: str = "ec2.amazonaws.com",
    ip: str = "10.0.0.5",
    agent: str = "Boto3/1.34.0",
    error: str | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": SESSION_ARN,
            "accessKeyId": key,
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": ROLE_ARN}},
        },
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "sourceIPAddress": ip,
        "userAgent": agent,
    }
    if error:
        record["errorCode"] = error
    return record


def _baseline() -> list[dict[str, Any]]:
    """45 days of the application: DescribeInstances every hour, GetObject every 12th."""
    start = SCOPE_START - timedelta(days=45)
    records = []
    for hour in range(45 * 24):
        at = start + timedelta(hours=hour, minutes=10)
        records.append(_record(at, "DescribeInstances"))
        if hour % 12 == 0:
            records.append(_record(at, "GetObject", source="s3.amazonaws.com"))
    return records


def _scope() -> list[dict[str, Any]]:
    def attacker(minute: int, name: str, source: str, error: str | None = None):
        return _record(
            SCOPE_START + timedelta(hours=1, minutes=minute),
            name,
            key=STOLEN,
            source=source,
            ip=ATTACKER_IP,
            agent="aws-cli/2.15.30",
            error=error,
        )

    return [
        _record(SCOPE_START + timedelta(minutes=10), "DescribeInstances"),
        attacker(5, "ListUsers", "iam.amazonaws.com"),
        attacker(6, "ListUsers", "iam.amazonaws.com", error="AccessDenied"),
        attacker(7, "ListUsers", "iam.amazonaws.com"),
        attacker(20, "GetObject", "s3.amazonaws.com"),
        attacker(40, "GetObject", "s3.amazonaws.com"),
        _record(SCOPE_START + timedelta(hours=3, minutes=1), "DescribeInstances"),
        _record(SCOPE_START + timedelta(hours=3, minutes=2), "DescribeInstances"),
        # After the scope window: not counted.
        _record(SCOPE_END + timedelta(minutes=1), "DescribeInstances"),
    ]


def _investigation():
    seen = finding(
        first_seen=SCOPE_START + timedelta(hours=1, minutes=5),
        access_key_id=STOLEN,
    )
    return investigate(
        account_id=ACCOUNT,
        principal_arn=ROLE_ARN,
        credentials=[STOLEN, "AKIANEVERUSED0000001"],
        findings=[seen],
        permissions=["inline web-app-s3", "managed arn:aws:iam::aws:policy/ReadOnlyAccess"],
        scope_start=SCOPE_START,
        scope_end=SCOPE_END,
        scope_records=_scope(),
        baseline_counts=count_baseline(BaselineCounts(), _baseline()),
    )


def test_each_credential_has_its_session_timeline():
    stolen, unused = _investigation().sessions
    assert stolen.first_observed == SCOPE_START + timedelta(hours=1, minutes=5)
    assert stolen.last_observed == SCOPE_START + timedelta(hours=1, minutes=40)
    assert (stolen.calls, stolen.failed, stolen.source_ips) == (5, 1, [ATTACKER_IP])
    assert (unused.first_observed, unused.calls) == (None, 0)


def test_the_baseline_is_the_average_hour_of_the_45_days_before():
    baseline = _investigation().baseline
    assert baseline.start == SCOPE_START - timedelta(days=45)
    assert baseline.end == SCOPE_START
    assert (baseline.calls, baseline.failed) == (1080 + 90, 0)
    assert baseline.hourly_average == 1170 / 1080


def test_every_hour_of_the_scope_with_its_calls_and_whether_it_is_above_baseline():
    hours = _investigation().hours
    assert [(h.hour.hour, h.successful, h.failed, h.above_baseline) for h in hours] == [
        (6, 1, 0, False),  # one call: under 1.08 an hour
        (7, 4, 1, True),
        (8, 0, 0, False),
        (9, 2, 0, True),
    ]
    attack = hours[1]
    assert attack.by_source_ip == {ATTACKER_IP: 5}
    assert attack.by_api == {"iam.amazonaws.com:ListUsers": 3, "s3.amazonaws.com:GetObject": 2}
    assert attack.by_access_key == {STOLEN: 5}


def test_new_behaviour_against_the_baseline():
    new = _investigation().new_behaviour
    assert new.api_calls == ["iam.amazonaws.com:ListUsers"]
    assert new.user_agents == ["aws-cli/2.15.30"]
    assert new.source_ips == [ATTACKER_IP]
    assert (new.countries, new.as_organizations) == (["Netherlands"], ["Example Hosting (lab)"])
    # GetObject: 2 in 3.5 hours against 90 in 1,080; DescribeInstances is as usual.
    (increased,) = new.increased_api_calls
    assert increased.api == "s3.amazonaws.com:GetObject"
    assert increased.scope_per_hour == 2 / 3.5
    assert increased.baseline_per_hour == 90 / 1080


def test_findings_in_the_order_observed_and_their_span():
    investigation = _investigation()
    assert [f.first_seen for f in investigation.findings] == [investigation.findings_first_seen]
    assert investigation.findings_last_seen == investigation.findings[0].last_seen
    assert investigation.permissions[0] == "inline web-app-s3"


def test_principal_matching_takes_the_role_and_every_session_of_it():
    assert by_principal(_record(SCOPE_START, "X"), ROLE_ARN)
    assert not by_principal(_record(SCOPE_START, "X"), f"{ROLE_ARN}-other")
    user = {"userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/alice"}}
    assert by_principal(user, f"arn:aws:iam::{ACCOUNT}:user/alice")


def test_the_chart_is_a_png_and_the_same_for_the_same_investigation():
    investigation = _investigation()
    png = volume_chart(investigation)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert volume_chart(investigation) == png
    quieter = investigation.model_copy(update={"hours": investigation.hours[:2]})
    assert volume_chart(quieter) != png


def test_the_report_section_has_every_part_with_the_chart_beside_it():
    text = "\n".join(markdown_section(_investigation(), "investigation-volume.png"))
    for heading in (
        "### Session timeline",
        "### Permissions (from the evidence snapshot)",
        "### Findings, in the order observed",
        "### API call volume",
        "### New behaviour (not seen in the baseline)",
    ):
        assert heading in text
    assert (
        f"| `{STOLEN}` | 2026-11-22 07:05:00 UTC | 2026-11-22 07:40:00 UTC | 5 | 1 | "
        f"{ATTACKER_IP} |"
    ) in text
    assert "![API calls an hour against the baseline](investigation-volume.png)" in text
    assert "2 of 4 hours above baseline:" in text
    assert (
        f"| 2026-11-22 07:00:00 UTC | 4 | 1 | {ATTACKER_IP} (5) | "
        "iam.amazonaws.com:ListUsers (3), s3.amazonaws.com:GetObject (2) | "
        f"{STOLEN} (5) |"
    ) in text
    assert "- Countries: Netherlands" in text
    assert "| s3.amazonaws.com:GetObject | 0.57 | 0.083 |" in text


def test_permissions_read_from_a_role_snapshot_one_line_a_policy():
    snapshot = {
        "inline_policies": [
            {
                "name": "web-app-s3",
                "document": {
                    "Statement": {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:ListBucket"],
                        "Resource": "arn:aws:s3:::acme-orders-data/*",
                    }
                },
            }
        ],
        "attached_policies": [
            {
                "policy": {
                    "PolicyName": "ReadOnlyAccess",
                    "Arn": "arn:aws:iam::aws:policy/ReadOnlyAccess",
                },
                "document": {
                    "Statement": [{"Effect": "Allow", "Action": "*:Get*", "Resource": "*"}]
                },
            }
        ],
    }
    assert permissions(snapshot) == [
        "inline web-app-s3: Allow s3:GetObject, s3:ListBucket on arn:aws:s3:::acme-orders-data/*",
        "managed ReadOnlyAccess (arn:aws:iam::aws:policy/ReadOnlyAccess): Allow *:Get* on *",
    ]
    assert permissions({}) == []


def test_baseline_counts_add_up_page_by_page():
    records = _baseline()
    whole = count_baseline(BaselineCounts(), records)
    halves = count_baseline(count_baseline(BaselineCounts(), records[:500]), records[500:])
    assert halves == whole
    assert whole.api_calls == {
        "ec2.amazonaws.com:DescribeInstances": 1080,
        "s3.amazonaws.com:GetObject": 90,
    }
    assert (whole.user_agents, whole.source_ips) == (["Boto3/1.34.0"], ["10.0.0.5"])


BACKDOOR = "AKIABACKDOORKEY00001"
ADMIN_ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"


def _naming_calls() -> list[dict[str, Any]]:
    """The stolen session mints a backdoor key; an administrator then deactivates it, and
    asks when it was last used; an unrelated call of the administrator names no key."""
    minted = _record(
        SCOPE_START + timedelta(hours=1, minutes=50),
        "CreateAccessKey",
        key=STOLEN,
        source="iam.amazonaws.com",
        ip=ATTACKER_IP,
    )
    minted["requestParameters"] = {"userName": "backup-svc"}
    minted["responseElements"] = {
        "accessKey": {"userName": "backup-svc", "accessKeyId": BACKDOOR, "status": "Active"}
    }

    def admin(minutes: int, name: str, request: dict[str, Any]) -> dict[str, Any]:
        record = _record(SCOPE_START + timedelta(hours=2, minutes=minutes), name)
        record["userIdentity"] = {
            "type": "IAMUser",
            "arn": ADMIN_ARN,
            "accessKeyId": "AKIAADMINKEY00000001",
        }
        record["eventSource"] = "iam.amazonaws.com"
        record["sourceIPAddress"] = "203.0.113.9"
        record["requestParameters"] = request
        return record

    deactivated = admin(10, "UpdateAccessKey", {"accessKeyId": BACKDOOR, "status": "Inactive"})
    asked = admin(11, "GetAccessKeyLastUsed", {"accessKeyId": BACKDOOR})
    asked["errorCode"] = "AccessDenied"
    unrelated = admin(12, "ListUsers", {"maxItems": 10})
    return [minted, deactivated, asked, unrelated]


def test_calls_that_name_a_credential_are_its_events_and_not_the_principals_calls():
    investigation = investigate(
        account_id=ACCOUNT,
        principal_arn=ROLE_ARN,
        credentials=[STOLEN, BACKDOOR],
        findings=[],
        permissions=[],
        scope_start=SCOPE_START,
        scope_end=SCOPE_END,
        scope_records=sorted(_scope() + _naming_calls(), key=lambda r: r["eventTime"]),
        baseline_counts=count_baseline(BaselineCounts(), _baseline()),
    )
    events = [
        (e.at.strftime("%H:%M"), e.access_key_id, e.api, e.caller, e.caller_key, e.status)
        for e in investigation.credential_events
    ]
    assert events == [
        ("07:50", BACKDOOR, "iam.amazonaws.com:CreateAccessKey", SESSION_ARN, STOLEN, "Active"),
        ("08:10", BACKDOOR, "iam.amazonaws.com:UpdateAccessKey", ADMIN_ARN,
         "AKIAADMINKEY00000001", "Inactive"),
        ("08:11", BACKDOOR, "iam.amazonaws.com:GetAccessKeyLastUsed", ADMIN_ARN,
         "AKIAADMINKEY00000001", None),
    ]  # fmt: skip
    assert investigation.credential_events[2].error_code == "AccessDenied"
    # The administrator's calls are not the principal's: the volumes hold the stolen
    # session's six calls (its CreateAccessKey too) and the application's three.
    stolen, backdoor = investigation.sessions
    assert (stolen.calls, backdoor.calls) == (6, 0)
    assert sum(h.total for h in investigation.hours) == 9
    assert "iam.amazonaws.com:UpdateAccessKey" not in investigation.new_behaviour.api_calls
    text = "\n".join(markdown_section(investigation, None))
    assert (
        f"| 2026-11-22 08:10:00 UTC | `{BACKDOOR}` | iam.amazonaws.com:UpdateAccessKey | "
        f"{ADMIN_ARN} | AKIAADMINKEY00000001 | 203.0.113.9 | Inactive |"
    ) in text
    assert "| 203.0.113.9 | failed: AccessDenied |" in text
