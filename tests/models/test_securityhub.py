"""Security Hub's ASFF read into the Finding a case acts on: a GuardDuty finding imported by
Security Hub is the very finding GuardDuty sends; other products' credential findings keep
their own ids and types."""

from datetime import UTC, datetime
from typing import Any

import pytest

from lab.guardduty import user_key_finding
from lab.securityhub import asff_from_guardduty, asff_type
from models.finding import FindingParseError, finding_from_guardduty
from models.securityhub import finding_from_asff, parse_asff, summarise_asff
from tests.support import ACCOUNT, REGION, finding_detail


def _user_key_detail() -> dict[str, Any]:
    return user_key_finding(
        account_id=ACCOUNT,
        region=REGION,
        access_key_id="AKIAEXAMPLEBUILDBOT1",
        principal_id="AIDAEXAMPLEBUILDBOT1",
        user_name="build-bot",
        remote_ip="192.0.2.77",
        api="CreateUser",
        service_name="iam.amazonaws.com",
        user_agent="aws-cli/2.15.30",
        first_seen=datetime(2026, 11, 22, 7, 0, tzinfo=UTC),
        last_seen=datetime(2026, 11, 22, 7, 5, tzinfo=UTC),
        count=3,
        severity=8.0,
    )


@pytest.mark.parametrize("detail", [finding_detail(), _user_key_detail()], ids=["role", "user"])
def test_a_guardduty_finding_imported_by_security_hub_is_the_same_finding(detail):
    direct = finding_from_guardduty(detail)
    imported = finding_from_asff(asff_from_guardduty(detail))
    assert imported.model_dump(exclude={"raw"}) == direct.model_dump(exclude={"raw"})
    assert imported.dedupe_key == direct.dedupe_key


def _root_usage_export() -> dict[str, Any]:
    """The shape of a GuardDuty root-usage finding as `securityhub get-findings` shows it."""
    arn = f"arn:aws:guardduty:{REGION}:{ACCOUNT}:detector/0a1b2c3d/finding/9f8e7d6c5b4a"
    pf = "aws/guardduty/service/"
    return {
        "SchemaVersion": "2018-10-08",
        "Id": arn,
        "ProductArn": f"arn:aws:securityhub:{REGION}::product/aws/guardduty",
        "ProductName": "GuardDuty",
        "CompanyName": "Amazon",
        "Region": REGION,
        "GeneratorId": f"arn:aws:guardduty:{REGION}:{ACCOUNT}:detector/0a1b2c3d",
        "AwsAccountId": ACCOUNT,
        "Types": ["TTPs/Policy:IAMUser-RootCredentialUsage"],
        "FirstObservedAt": "2026-11-22T01:06:24.000Z",
        "LastObservedAt": "2026-11-22T01:07:40.000Z",
        "CreatedAt": "2026-11-22T01:13:23.880Z",
        "UpdatedAt": "2026-11-22T02:13:23.880Z",
        "Severity": {"Product": 2.0, "Label": "LOW", "Normalized": 40},
        "Title": "The API GetDetector was invoked using root credentials.",
        "ProductFields": {
            f"{pf}archived": "false",
            f"{pf}count": "18",
            f"{pf}eventFirstSeen": "2026-11-22T01:06:24.000Z",
            f"{pf}eventLastSeen": "2026-11-22T01:07:40.000Z",
            f"{pf}action/actionType": "AWS_API_CALL",
            f"{pf}action/awsApiCallAction/api": "GetDetector",
            f"{pf}action/awsApiCallAction/callerType": "Remote IP",
            "aws/securityhub/ProductName": "GuardDuty",
        },
        "Resources": [
            {
                "Type": "AwsIamAccessKey",
                "Id": "AWS::IAM::AccessKey:ASIAEXAMPLEROOT0001",
                "Partition": "aws",
                "Region": REGION,
                "Details": {
                    "AwsIamAccessKey": {
                        "PrincipalId": ACCOUNT,
                        "PrincipalType": "Root",
                        "PrincipalName": "Root",
                    }
                },
            }
        ],
        "WorkflowState": "NEW",
        "Workflow": {"Status": "NEW"},
        "RecordState": "ACTIVE",
        "Action": {
            "ActionType": "AWS_API_CALL",
            "AwsApiCallAction": {
                "Api": "GetDetector",
                "ServiceName": "guardduty.amazonaws.com",
                "CallerType": "remoteIp",
                "RemoteIpDetails": {
                    "IpAddressV4": "203.0.113.9",
                    "Organization": {"Asn": 64496, "AsnOrg": "EXAMPLE-NET"},
                    "Country": {"CountryCode": "US", "CountryName": "United States"},
                },
            },
        },
        "Sample": False,
    }


def test_an_exported_guardduty_finding_maps_back_to_guardduty_terms():
    finding = finding_from_asff(_root_usage_export())
    assert finding.id == "9f8e7d6c5b4a"
    assert finding.type == "Policy:IAMUser/RootCredentialUsage"
    assert finding.severity == 2.0
    assert finding.count == 18
    assert finding.archived is False
    assert finding.access_key.access_key_id == "ASIAEXAMPLEROOT0001"
    assert finding.access_key.user_type == "Root"
    assert finding.first_seen == datetime(2026, 11, 22, 1, 6, 24, tzinfo=UTC)
    assert finding.updated_at == datetime(2026, 11, 22, 2, 13, 23, 880000, tzinfo=UTC)
    assert finding.api_call is not None
    assert finding.api_call.caller_type == "Remote IP"
    assert finding.api_call.remote_ip is not None
    assert finding.api_call.remote_ip.asn == "64496"
    assert finding.instance_id is None


@pytest.mark.parametrize(
    "guardduty_type",
    [
        "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        "Recon:IAMUser/TorIPCaller",
        "Discovery:S3/MaliciousIPCaller",
        "AttackSequence:IAM/CompromisedCredentials",
        "Backdoor:EC2/C&CActivity.B!DNS",
    ],
)
def test_guardduty_types_survive_the_trip_through_asff(guardduty_type):
    export = _root_usage_export()
    export["Types"] = [asff_type(guardduty_type)]
    assert "/" not in export["Types"][0].rsplit("/", 1)[1]  # ASFF's own separator only
    assert finding_from_asff(export).type == guardduty_type


def test_another_products_credential_finding_keeps_its_own_terms():
    export = _root_usage_export()
    export.update(
        ProductArn=f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default",
        ProductName="Default",
        Id="leak-42",
        Types=["TTPs/Credential Access/Exposed access key"],
        Severity={"Label": "HIGH", "Normalized": 75},
        ProductFields={},
        Resources=[
            {
                "Type": "AwsIamAccessKey",
                "Id": f"arn:aws:iam::{ACCOUNT}:user/build-bot",
                "Details": {"AwsIamAccessKey": {"AccessKeyId": "AKIAEXAMPLELEAKED001"}},
            }
        ],
    )
    finding = finding_from_asff(export)
    assert (finding.id, finding.type) == ("leak-42", "TTPs/Credential Access/Exposed access key")
    assert finding.severity == 7.5
    assert finding.access_key.access_key_id == "AKIAEXAMPLELEAKED001"
    assert finding.region == REGION
    assert finding.count == 1
    assert finding.first_seen == datetime(2026, 11, 22, 1, 6, 24, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "archived"),
    [
        ({}, False),
        ({"RecordState": "ARCHIVED"}, True),
        ({"Workflow": {"Status": "SUPPRESSED"}}, True),
        ({"Workflow": {"Status": "RESOLVED"}}, True),
    ],
)
def test_archived_suppressed_and_resolved_findings_read_as_archived(change, archived):
    export = {**_root_usage_export(), **change}
    assert summarise_asff(parse_asff(export)).archived is archived


def test_guardduty_archived_flag_in_product_fields_reads_as_archived():
    export = _root_usage_export()
    export["ProductFields"]["aws/guardduty/service/archived"] = "true"
    assert finding_from_asff(export).archived is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"UpdatedAt": None}, "detail.findings.0.UpdatedAt"),
        ({"CreatedAt": "2026-11-22T01:13:23"}, "detail.findings.0.CreatedAt"),
        ({"AwsAccountId": "12345"}, "detail.findings.0.AwsAccountId"),
        ({"Resources": []}, "detail.findings.0.Resources"),
        (
            {"Resources": [{"Type": "AwsS3Bucket", "Id": "arn:aws:s3:::b"}]},
            "detail.findings.0.Resources",
        ),
        ({"Action": {"AwsApiCallAction": {"RemoteIpDetails": "x"}}}, "detail.findings.0.Action"),
    ],
)
def test_unusable_asff_names_the_field(change, field):
    export = {**_root_usage_export(), **change}
    with pytest.raises(FindingParseError) as refused:
        finding_from_asff(export)
    assert refused.value.field.startswith(field)
