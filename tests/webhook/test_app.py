"""The webhook over HTTP: bad input is refused with a clear error and starts nothing; a
finding is answered only once Temporal holds it; an outage answers 503 to be retried."""

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from config import names
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from tests.support import ACCOUNT, STOLEN_KEY, finding_event
from webhook.app import MAX_BODY_BYTES, app

TOKEN = "a-real-webhook-secret-0123456789"
PATH = "/v1/events/eventbridge"


def settings_for(task_queue: str) -> Settings:
    return Settings(webhook_token=TOKEN, task_queue=task_queue)


@pytest_asyncio.fixture
async def webhook(dev_server_env) -> AsyncIterator[tuple[httpx.AsyncClient, Client, str]]:
    """The app on an in-process transport, talking to the dev server. No worker polls the
    task queue, so a started case stays as the webhook left it."""
    queue = f"webhook-{uuid.uuid4()}"
    app.state.settings = settings_for(queue)
    app.state.client = dev_server_env.client
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://quench") as http:
        yield http, dev_server_env.client, queue


def _headers(token: str = TOKEN, content_type: str = "application/json") -> dict[str, str]:
    return {"x-quench-token": token, "content-type": content_type}


async def _case_exists(client: Client, key: str) -> bool:
    try:
        await client.get_workflow_handle(names.case_workflow_id(ACCOUNT, key)).describe()
    except RPCError:
        return False
    return True


def _unique_key() -> str:
    return "ASIA" + uuid.uuid4().hex[:16].upper()


async def test_a_finding_opens_a_case_and_a_redelivery_joins_it(webhook):
    http, client, queue = webhook
    key = _unique_key()
    event = finding_event(access_key_id=key)
    first = await http.post(PATH, content=json.dumps(event), headers=_headers())
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["outcome"] == "accepted"
    assert body["case_id"] == names.case_workflow_id(ACCOUNT, key)
    again = await http.post(PATH, content=json.dumps(event), headers=_headers())
    assert again.status_code == 202
    assert again.json()["case_id"] == body["case_id"]
    handle = client.get_workflow_handle(body["case_id"])
    description = await handle.describe()
    assert description.status is WorkflowExecutionStatus.RUNNING
    assert description.task_queue == queue
    assert description.run_id == again.json()["run_id"] == body["run_id"]
    await handle.terminate("test done")


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({"content-type": "application/json"}, 401, "x-quench-token"),
        (_headers(token="wrong-token-wrong-token"), 401, "x-quench-token"),
        (_headers(token=LAB_WEBHOOK_TOKEN), 401, "x-quench-token"),
        (_headers(content_type="text/plain"), 415, "content-type"),
    ],
)
async def test_unauthorised_or_mistyped_requests_are_refused(webhook, headers, status, field):
    http, client, _ = webhook
    key = _unique_key()
    response = await http.post(
        PATH, content=json.dumps(finding_event(access_key_id=key)), headers=headers
    )
    assert response.status_code == status
    assert response.json()["field"] == field
    assert not await _case_exists(client, key)


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
        (lambda e: {**e, "source": "aws.securityhub"}, "source"),
        (lambda e: _without(e, "detail", "type"), "detail.type"),
        (lambda e: _without(e, "detail", "service", "eventFirstSeen"), "detail.service"),
        (
            lambda e: {**e, "detail": {**e["detail"], "accountId": "12345"}},
            "detail.accountId",
        ),
    ],
)
async def test_malformed_findings_name_the_field_and_start_nothing(webhook, mutate, field):
    http, client, _ = webhook
    key = _unique_key()
    event = mutate(finding_event(access_key_id=key))
    response = await http.post(PATH, content=json.dumps(event), headers=_headers())
    assert response.status_code == 400, response.text
    assert response.json()["field"].startswith(field)
    assert not await _case_exists(client, key)


async def test_malformed_json_and_oversized_bodies_are_refused(webhook):
    http, _, _ = webhook
    broken = await http.post(PATH, content=b'{"version": "0",', headers=_headers())
    assert broken.status_code == 400
    assert broken.json()["error"].startswith("malformed JSON")
    huge = await http.post(PATH, content=b"{" + b" " * MAX_BODY_BYTES + b"}", headers=_headers())
    assert huge.status_code == 413


async def test_a_finding_without_an_access_key_is_acknowledged_and_ignored(webhook):
    http, client, _ = webhook
    event = finding_event()
    event["detail"]["resource"] = {"resourceType": "Instance", "instanceDetails": {}}
    response = await http.post(PATH, content=json.dumps(event), headers=_headers())
    assert response.status_code == 200
    assert response.json() == {"outcome": "ignored", "reason": "finding is not about an access key"}
    assert not await _case_exists(client, STOLEN_KEY)


async def test_temporal_outage_answers_503_with_retry_after():
    app.state.settings = settings_for("unused")
    app.state.client = await connect(Settings(temporal_address="127.0.0.1:1"), lazy=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://quench") as http:
        response = await http.post(PATH, content=json.dumps(finding_event()), headers=_headers())
        ready = await http.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert ready.status_code == 503


def test_settings_refuse_the_lab_token_outside_the_lab():
    with pytest.raises(ValueError, match="published lab token"):
        Settings(webhook_token=LAB_WEBHOOK_TOKEN)
    with pytest.raises(ValueError, match="at least 16"):
        Settings(webhook_token="short")
    assert Settings(lab=True).webhook_tokens() == [LAB_WEBHOOK_TOKEN]
    assert Settings().webhook_tokens() == []


async def test_a_finding_after_the_case_closed_opens_a_new_case(webhook):
    http, client, _ = webhook
    key = _unique_key()
    first = await http.post(
        PATH, content=json.dumps(finding_event(access_key_id=key)), headers=_headers()
    )
    case_id = first.json()["case_id"]
    await client.get_workflow_handle(case_id).terminate("closed by the test")
    later = finding_event(access_key_id=key, finding_id="a-later-finding")
    second = await http.post(PATH, content=json.dumps(later), headers=_headers())
    assert second.status_code == 202
    assert second.json()["case_id"] == case_id
    assert second.json()["run_id"] != first.json()["run_id"]
    description = await client.get_workflow_handle(case_id).describe()
    assert description.status is WorkflowExecutionStatus.RUNNING
    await client.get_workflow_handle(case_id).terminate("test done")
