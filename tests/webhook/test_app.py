"""The webhook over HTTP, as EventBridge's API destination: each finding answered with what
its case made of it; bad input refused with a JSON error naming the problem and nothing
started; an answer only once Temporal holds the finding, 503 to be retried otherwise."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.worker import Worker

from config import names
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab.guardduty import eventbridge_event, user_key_finding
from lab.securityhub import asff_from_guardduty, securityhub_event
from tests.support import ACCOUNT, REGION, deliveries_recorded, finding_detail, finding_event
from tests.webhook.conftest import TOKEN, Webhook
from webhook.app import MAX_BODY_BYTES, app, lifespan
from worker import WORKFLOWS
from workflows.case import CaseWorkflow

PATH = "/v1/events/eventbridge"


def _headers(token: str = TOKEN, content_type: str = "application/json") -> dict[str, str]:
    return {"x-quench-token": token, "content-type": content_type}


async def _post(hook: Webhook, event: Any, **headers: str) -> httpx.Response:
    return await hook.http.post(PATH, content=json.dumps(event), headers=_headers(**headers))


async def _case_exists(client: Client, key: str) -> bool:
    try:
        await client.get_workflow_handle(names.case_workflow_id(ACCOUNT, key)).describe()
    except RPCError:
        return False
    return True


async def _history_length(client: Client, case_id: str) -> int:
    return await deliveries_recorded(client.get_workflow_handle(case_id))


def _unique_key() -> str:
    return "ASIA" + uuid.uuid4().hex[:16].upper()


async def test_each_delivery_is_answered_with_what_its_case_made_of_it(webhook):
    key = _unique_key()
    case_id = names.case_workflow_id(ACCOUNT, key)
    opening = finding_event(access_key_id=key)

    first = await _post(webhook, opening)
    assert first.status_code == 202, first.text
    assert first.json()["outcome"] == "new_case"
    assert first.json()["case_id"] == case_id
    assert first.json()["finding_id"] == "lab-finding-0001"
    length = await _history_length(webhook.client, case_id)

    # EventBridge delivers at least once: the same delivery again changes nothing.
    again = await _post(webhook, opening)
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["case_id"] == case_id
    assert again.json()["run_id"] == first.json()["run_id"]
    assert await _history_length(webhook.client, case_id) == length

    other = await _post(webhook, finding_event(access_key_id=key, finding_id="second-finding"))
    assert (other.status_code, other.json()["outcome"]) == (202, "joined")

    later = datetime(2026, 11, 22, 7, 40, tzinfo=UTC)
    grown = finding_event(
        access_key_id=key, finding_id="second-finding", count=12, updated_at=later
    )
    updated = await _post(webhook, grown)
    assert (updated.status_code, updated.json()["outcome"]) == (202, "updated")
    # The older delivery of that finding, arriving late, adds nothing.
    stale = await _post(webhook, finding_event(access_key_id=key, finding_id="second-finding"))
    assert stale.json()["outcome"] == "duplicate"

    handle = webhook.client.get_workflow_handle(case_id)
    status = await handle.query(CaseWorkflow.status)
    assert [(f.id, f.count) for f in status.findings] == [
        ("lab-finding-0001", 7),
        ("second-finding", 7),
        ("second-finding", 12),
    ]
    description = await handle.describe()
    assert description.status is WorkflowExecutionStatus.RUNNING
    assert description.task_queue == webhook.queue
    assert description.run_id == first.json()["run_id"]
    await handle.terminate("test done")


async def test_a_user_key_finding_from_a_tor_exit_opens_its_own_case(webhook):
    key = "AKIA" + uuid.uuid4().hex[:16].upper()
    detail = user_key_finding(
        account_id=ACCOUNT,
        region=REGION,
        access_key_id=key,
        principal_id="AIDAEXAMPLEBUILDBOT1",
        user_name="build-bot",
        remote_ip="192.0.2.77",
        api="CreateUser",
        service_name="iam.amazonaws.com",
        user_agent="aws-cli/2.15.30",
        first_seen=datetime(2026, 11, 22, 7, 0, tzinfo=UTC),
        last_seen=datetime(2026, 11, 22, 7, 5, tzinfo=UTC),
        count=3,
    )
    response = await _post(webhook, eventbridge_event(detail))
    assert (response.status_code, response.json()["outcome"]) == (202, "new_case")
    handle = webhook.client.get_workflow_handle(response.json()["case_id"])
    status = await handle.query(CaseWorkflow.status)
    assert status.findings[0].type == "UnauthorizedAccess:IAMUser/TorIPCaller"
    assert status.findings[0].access_key.user_name == "build-bot"
    await handle.terminate("test done")


async def test_a_guardduty_finding_through_security_hub_joins_the_same_case(webhook):
    """The same finding, imported by Security Hub and delivered by GuardDuty itself, is one
    finding on one case."""
    key = _unique_key()
    detail = finding_detail(access_key_id=key, finding_id="a1b2c3d4e5f60718293a4b5c6d7e8f90")
    through_hub = await _post(webhook, securityhub_event(asff_from_guardduty(detail)))
    assert through_hub.status_code == 202, through_hub.text
    assert through_hub.json()["outcome"] == "new_case"
    assert through_hub.json()["finding_id"] == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    direct = await _post(webhook, eventbridge_event(detail))
    assert direct.json()["outcome"] == "duplicate"
    assert direct.json()["case_id"] == through_hub.json()["case_id"]
    handle = webhook.client.get_workflow_handle(through_hub.json()["case_id"])
    status = await handle.query(CaseWorkflow.status)
    assert [f.type for f in status.findings] == [
        "UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom"
    ]
    assert status.findings[0].instance_id == "i-0a1b2c3d4e5f60718"
    await handle.terminate("test done")


def _other_product_finding(key: str, finding_type: str) -> dict[str, Any]:
    """An ASFF finding from another product that describes an IAM access key."""
    return {
        "SchemaVersion": "2018-10-08",
        "Id": f"example-finding-{uuid.uuid4().hex}",
        "ProductArn": f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default",
        "ProductName": "Default",
        "GeneratorId": "leaked-key-scanner",
        "AwsAccountId": ACCOUNT,
        "Region": REGION,
        "Types": [finding_type],
        "CreatedAt": "2026-11-22T07:00:00.000Z",
        "UpdatedAt": "2026-11-22T07:00:00.000Z",
        "Severity": {"Label": "CRITICAL", "Normalized": 90},
        "Title": "Access key published in a public repository",
        "Resources": [
            {
                "Type": "AwsIamAccessKey",
                "Id": f"arn:aws:iam::{ACCOUNT}:user/build-bot",
                "Region": REGION,
                "Details": {
                    "AwsIamAccessKey": {
                        "AccessKeyId": key,
                        "PrincipalName": "build-bot",
                        "PrincipalType": "IAMUser",
                    }
                },
            }
        ],
        "RecordState": "ACTIVE",
        "Workflow": {"Status": "NEW"},
    }


async def test_security_hub_findings_of_other_products_follow_the_type_lists(webhook):
    key = "AKIA" + uuid.uuid4().hex[:16].upper()
    leaked = "TTPs/Credential Access/Exposed access key"
    event = securityhub_event(_other_product_finding(key, leaked))
    ignored = await _post(webhook, event)
    assert ignored.status_code == 200
    assert ignored.json()["outcome"] == "ignored"
    assert "QUENCH_FINDING_TYPES_ALLOW" in ignored.json()["reason"]
    assert not await _case_exists(webhook.client, key)

    webhook.configure(finding_types_allow=["TTPs/Credential Access/*"])
    taken = await _post(webhook, event)
    assert (taken.status_code, taken.json()["outcome"]) == (202, "new_case")
    handle = webhook.client.get_workflow_handle(taken.json()["case_id"])
    status = await handle.query(CaseWorkflow.status)
    assert status.findings[0].severity == 9.0
    assert status.findings[0].access_key.user_type == "IAMUser"
    await handle.terminate("test done")


async def test_a_security_hub_finding_about_no_credential_is_ignored(webhook):
    finding = _other_product_finding(_unique_key(), "Software and Configuration Checks/AWS")
    finding["Resources"] = [
        {"Type": "AwsEc2SecurityGroup", "Id": "arn:aws:ec2:us-east-1:123456789012:sg/sg-1"}
    ]
    response = await _post(webhook, securityhub_event(finding))
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert response.json()["reason"] == "a Default finding that names no IAM credential"


def _with(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    target = event
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[last] = value
    return event


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("detail.type", "Recon:EC2/PortProbeUnprotectedPort"), "is not a credential compromise"),
        (("detail.type", "CryptoCurrency:EC2/BitcoinTool.B!DNS"), "is not a credential compromise"),
        (("detail.service.archived", True), "the finding is archived"),
        (("detail.severity", 2.0), "below QUENCH_MIN_SEVERITY 4.0"),
        (("detail.service.additionalInfo", {"sample": True}), "a GuardDuty sample finding"),
        (("detail.type", "Stealth:IAMUser/PasswordPolicyChange"), "QUENCH_FINDING_TYPES_DENY"),
        (("detail.resource", {"resourceType": "Instance"}), "finding is not about an access key"),
    ],
)
async def test_findings_quench_does_not_act_on_are_acknowledged_with_the_reason(
    webhook, change, reason
):
    webhook.configure(min_severity=4.0, finding_types_deny=["*/PasswordPolicyChange"])
    key = _unique_key()
    response = await _post(webhook, _with(finding_event(access_key_id=key), *change))
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "ignored"
    assert reason in response.json()["reason"]
    assert response.json()["finding_id"] == "lab-finding-0001"
    assert not await _case_exists(webhook.client, key)


async def test_archived_findings_count_when_configured_so(webhook):
    webhook.configure(ignore_archived=False)
    key = _unique_key()
    response = await _post(
        webhook, _with(finding_event(access_key_id=key), "detail.service.archived", True)
    )
    assert response.json()["outcome"] == "new_case"
    await webhook.client.get_workflow_handle(response.json()["case_id"]).terminate("test done")


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({"content-type": "application/json"}, 401, "x-quench-token"),
        (_headers(token="wrong-token-wrong-token"), 401, "x-quench-token"),
        (_headers(token=TOKEN[:-1]), 401, "x-quench-token"),
        (_headers(token=LAB_WEBHOOK_TOKEN), 401, "x-quench-token"),
        (_headers(content_type="text/plain"), 415, "content-type"),
        (_headers(content_type="application/x-www-form-urlencoded"), 415, "content-type"),
    ],
)
async def test_unauthorised_or_mistyped_requests_are_refused(webhook, headers, status, field):
    key = _unique_key()
    response = await webhook.http.post(
        PATH, content=json.dumps(finding_event(access_key_id=key)), headers=headers
    )
    assert response.status_code == status
    assert response.json()["field"] == field
    assert response.json()["error"]
    assert not await _case_exists(webhook.client, key)


async def test_keys_rotate_and_the_header_name_is_a_setting(webhook):
    old, new = "the-old-key-0123456789", "the-new-key-9876543210"
    webhook.configure(
        webhook_token=new, webhook_extra_tokens=[old], webhook_token_header="x-api-key"
    )
    for token in (old, new):
        response = await webhook.http.post(
            PATH,
            content=json.dumps(finding_event(access_key_id=_unique_key())),
            headers={"x-api-key": token, "content-type": "application/json"},
        )
        assert response.status_code == 202, response.text
        await webhook.client.get_workflow_handle(response.json()["case_id"]).terminate("done")
    in_old_header = await _post(webhook, finding_event(access_key_id=_unique_key()), token=new)
    assert in_old_header.status_code == 401
    assert in_old_header.json()["field"] == "x-api-key"


def _without(event: dict, *path: str) -> dict:
    target = event
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return event


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: _without(e, "detail-type"), "detail-type"),
        (lambda e: {**e, "detail-type": "AWS API Call via CloudTrail"}, "detail-type"),
        (lambda e: {**e, "source": "aws.securityhub"}, "source"),
        (lambda e: _without(e, "detail", "type"), "detail.type"),
        (lambda e: _without(e, "detail", "service", "eventFirstSeen"), "detail.service"),
        (lambda e: {**e, "detail": {**e["detail"], "accountId": "12345"}}, "detail.accountId"),
        (lambda e: {**e, "detail": {**e["detail"], "severity": "high"}}, "detail.severity"),
        (
            lambda e: _with(e, "detail.resource.accessKeyDetails.accessKeyId", "x"),
            "detail.resource",
        ),
        (lambda e: _with(e, "detail.updatedAt", "2026-11-22T07:12:00"), "detail.updatedAt"),
        (lambda e: [e], "body"),
    ],
)
async def test_malformed_guardduty_events_name_the_field_and_start_nothing(webhook, mutate, field):
    key = _unique_key()
    response = await _post(webhook, mutate(finding_event(access_key_id=key)))
    assert response.status_code == 400, response.text
    assert response.json()["field"].startswith(field)
    assert not await _case_exists(webhook.client, key)


def _hub_event(key: str) -> dict[str, Any]:
    return securityhub_event(asff_from_guardduty(finding_detail(access_key_id=key)))


def _without_hub_field(event: dict[str, Any], name: str) -> dict[str, Any]:
    del event["detail"]["findings"][0][name]
    return event


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: _without(e, "detail", "findings"), "detail.findings"),
        (lambda e: _with(e, "detail.findings", []), "detail.findings"),
        (lambda e: _with(e, "detail.findings", e["detail"]["findings"] * 2), "detail.findings"),
        (lambda e: _without_hub_field(e, "UpdatedAt"), "detail.findings.0.UpdatedAt"),
        (
            lambda e: _with(e, "detail.findings.0.AwsAccountId", "1"),
            "detail.findings.0.AwsAccountId",
        ),
        (
            lambda e: _with(e, "detail.findings.0.CreatedAt", "2026-11-22T07:00:00"),
            "detail.findings.0.CreatedAt",
        ),
        (lambda e: _with(e, "detail.findings.0.Resources", "none"), "detail.findings.0.Resources"),
        (
            lambda e: _with(e, "detail.findings.0.Severity", {"Label": "DIRE"}),
            "detail.findings.0.Severity",
        ),
    ],
)
async def test_malformed_security_hub_events_name_the_field_and_start_nothing(
    webhook, mutate, field
):
    key = _unique_key()
    response = await _post(webhook, mutate(_hub_event(key)))
    assert response.status_code == 400, response.text
    assert response.json()["field"].startswith(field)
    assert not await _case_exists(webhook.client, key)


async def test_malformed_json_and_oversized_bodies_are_refused(webhook):
    broken = await webhook.http.post(PATH, content=b'{"version": "0",', headers=_headers())
    assert broken.status_code == 400
    assert broken.json()["error"].startswith("malformed JSON")
    assert broken.json()["field"] == "body"
    deep = await webhook.http.post(PATH, content=b"[" * 100_000, headers=_headers())
    assert deep.status_code == 400
    huge = await webhook.http.post(
        PATH, content=b"{" + b" " * MAX_BODY_BYTES + b"}", headers=_headers()
    )
    assert huge.status_code == 413
    assert "larger than" in huge.json()["error"]


async def test_temporal_outage_answers_503_with_retry_after():
    app.state.settings = Settings(webhook_token=TOKEN, account_id=ACCOUNT, task_queue="unused")
    app.state.client = await connect(Settings(temporal_address="127.0.0.1:1"), lazy=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://quench") as http:
        response = await http.post(PATH, content=json.dumps(finding_event()), headers=_headers())
        ready = await http.get("/readyz")
        live = await http.get("/healthz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]
    assert ready.status_code == 503
    assert live.status_code == 200


async def test_no_answer_before_the_case_has_taken_the_finding(dev_server_env):
    """With no worker to run the case's update, the finding is not acknowledged: 503 after
    the accept timeout, and EventBridge's retry, once a worker runs, gets the answer."""
    queue = f"no-worker-{uuid.uuid4()}"
    app.state.settings = Settings(
        webhook_token=TOKEN,
        account_id=ACCOUNT,
        task_queue=queue,
        scan_task_queue=queue,
        webhook_accept_timeout_seconds=1,
    )
    app.state.client = dev_server_env.client
    key = _unique_key()
    event = finding_event(access_key_id=key)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://quench") as http:
        unanswered = await http.post(PATH, content=json.dumps(event), headers=_headers())
        assert unanswered.status_code == 503
        assert unanswered.headers["retry-after"] == "5"
        async with Worker(dev_server_env.client, task_queue=queue, workflows=WORKFLOWS):
            app.state.settings = Settings(
                webhook_token=TOKEN, account_id=ACCOUNT, task_queue=queue, scan_task_queue=queue
            )
            retried = await http.post(PATH, content=json.dumps(event), headers=_headers())
            handle = dev_server_env.client.get_workflow_handle(retried.json()["case_id"])
            status = await handle.query(CaseWorkflow.status)
    # The first delivery started the case, with the finding as its input, before it gave
    # up; its update may still be applied once a worker runs, so the retry is answered
    # new_case or duplicate. Either way the case holds the finding once.
    assert retried.status_code in (200, 202), retried.text
    assert retried.json()["outcome"] in ("new_case", "duplicate")
    assert [f.id for f in status.findings] == ["lab-finding-0001"]
    await handle.terminate("done")


async def test_a_finding_after_the_case_closed_opens_a_new_case(webhook):
    key = _unique_key()
    first = await _post(webhook, finding_event(access_key_id=key))
    case_id = first.json()["case_id"]
    await webhook.client.get_workflow_handle(case_id).terminate("closed by the test")
    second = await _post(webhook, finding_event(access_key_id=key, finding_id="a-later-finding"))
    assert second.status_code == 202
    assert second.json()["outcome"] == "new_case"
    assert second.json()["case_id"] == case_id
    assert second.json()["run_id"] != first.json()["run_id"]
    description = await webhook.client.get_workflow_handle(case_id).describe()
    assert description.status is WorkflowExecutionStatus.RUNNING
    await webhook.client.get_workflow_handle(case_id).terminate("test done")


async def test_the_openapi_document_describes_the_versioned_endpoints(webhook):
    webhook.configure(webhook_token_header="x-api-key")
    document = (await webhook.http.get("/openapi.json")).json()
    assert document["info"]["version"] == "1"
    assert {"/v1/events/eventbridge", "/v1/events/sns", "/healthz", "/readyz"} <= set(
        document["paths"]
    )
    eventbridge = document["paths"]["/v1/events/eventbridge"]["post"]
    body = eventbridge["requestBody"]["content"]["application/json"]["schema"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in body["oneOf"]] == [
        "GuardDutyFindingEvent",
        "SecurityHubFindingsImportedEvent",
    ]
    assert {"202", "200", "400", "401", "413", "415", "503"} <= set(eventbridge["responses"])
    scheme = document["components"]["securitySchemes"]["eventBridgeApiKey"]
    assert (scheme["in"], scheme["name"]) == ("header", "x-api-key")
    key_schema = document["components"]["schemas"]["_GdAccessKeyDetails"]
    assert key_schema["properties"]["accessKeyId"]["pattern"].startswith("^(AKIA|ASIA)")
    sns = document["paths"]["/v1/events/sns"]["post"]["requestBody"]["content"]
    assert sns["application/json"]["schema"]["$ref"].endswith("/SnsMessage")


def test_settings_refuse_unsafe_keys_and_topics():
    with pytest.raises(ValueError, match="published lab token"):
        Settings(webhook_token=LAB_WEBHOOK_TOKEN)
    with pytest.raises(ValueError, match="published lab token"):
        Settings(webhook_token=TOKEN, webhook_extra_tokens=[LAB_WEBHOOK_TOKEN])
    with pytest.raises(ValueError, match="at least 16"):
        Settings(webhook_token="short")
    with pytest.raises(ValueError, match="at least 16"):
        Settings(webhook_token=TOKEN, webhook_extra_tokens=["short"])
    with pytest.raises(ValueError, match="not an SNS topic ARN"):
        Settings(sns_topic_arns=["arn:aws:sqs:us-east-1:123456789012:queue"])
    assert Settings(lab=True).webhook_tokens() == [LAB_WEBHOOK_TOKEN]
    assert Settings().webhook_tokens() == []
    rotated = Settings(webhook_token=TOKEN, webhook_extra_tokens=["the-old-key-0123456789"])
    assert rotated.webhook_tokens() == [TOKEN, "the-old-key-0123456789"]
    # Keys are secrets: never in a repr, so never in a log line.
    assert TOKEN not in repr(rotated)
    assert "the-old-key-0123456789" not in repr(rotated)


async def test_the_webhook_does_not_start_without_the_accounts_it_manages(monkeypatch):
    monkeypatch.setenv("QUENCH_WEBHOOK_TOKEN", TOKEN)
    for name in ("QUENCH_ACCOUNT_ID", "QUENCH_ACCOUNTS_FILE", "QUENCH_LAB"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="QUENCH_ACCOUNT_ID or QUENCH_ACCOUNTS_FILE"):
        async with lifespan(app):
            pass


async def test_the_dry_run_route_opens_a_dry_run_case_and_refuses_a_doubtful_one(webhook):
    """One EventBridge rule (or SNS subscription) can target `?dry_run=true`: its new cases
    change nothing. A value that is not true or false, or given twice, starts nothing."""
    key = _unique_key()
    event = finding_event(access_key_id=key)
    for query, field in (("maybe", "dry_run"), ("1", "dry_run")):
        refused = await webhook.http.post(f"{PATH}?dry_run={query}", json=event, headers=_headers())
        assert (refused.status_code, refused.json()["field"]) == (400, field)
    twice = await webhook.http.post(
        f"{PATH}?dry_run=true&dry_run=false", json=event, headers=_headers()
    )
    assert twice.status_code == 400 and twice.json()["error"] == "dry_run given more than once"
    with pytest.raises(RPCError):
        await webhook.client.get_workflow_handle(names.case_workflow_id(ACCOUNT, key)).describe()

    opened = await webhook.http.post(f"{PATH}?dry_run=true", json=event, headers=_headers())
    assert opened.status_code == 202, opened.text
    handle = webhook.client.get_workflow_handle(opened.json()["case_id"])
    status = await handle.query(CaseWorkflow.status)
    assert status.dry_run
    await handle.terminate("test done")
