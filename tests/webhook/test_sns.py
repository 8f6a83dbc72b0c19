"""The webhook as an SNS HTTPS subscription: messages signed for real by a test key (both
signature versions), confirmation only for allowed topics, the finding inside a
notification handed to its case, and every forged or malformed message refused before it
can start anything."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.service import RPCError

from config import names
from lab.securityhub import asff_from_guardduty, securityhub_event
from tests.support import ACCOUNT, finding_detail, finding_event
from tests.webhook.conftest import TOKEN, TOPIC_ARN, Webhook
from tests.webhook.signing import (
    CERT_PEM,
    CERT_URL,
    canonical,
    certificate_pem,
    confirmation,
    notification,
    sign,
    sns_headers,
)
from webhook.sns import SnsMessage, string_to_sign
from workflows.case import CaseWorkflow

PATH = "/v1/events/sns"


@pytest.fixture
def hook(webhook: Webhook) -> Webhook:
    webhook.sns.certificates[CERT_URL] = CERT_PEM
    return webhook


async def _post(hook: Webhook, message: dict[str, Any], **headers: str) -> httpx.Response:
    return await hook.http.post(
        PATH, content=json.dumps(message), headers={**sns_headers(message), **headers}
    )


def _unique_key() -> str:
    return "ASIA" + uuid.uuid4().hex[:16].upper()


async def _case_exists(hook: Webhook, key: str) -> bool:
    try:
        await hook.client.get_workflow_handle(names.case_workflow_id(ACCOUNT, key)).describe()
    except RPCError:
        return False
    return True


def test_the_string_to_sign_is_aws_canonical_form():
    with_subject = {
        "Type": "Notification",
        "MessageId": "da41e39f-ea4d-435a-b922-c6aae3915ebe",
        "TopicArn": TOPIC_ARN,
        "Subject": "GuardDuty",
        "Message": '{"a": 1}\nsecond line',
        "Timestamp": "2026-11-22T07:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "c2ln",
        "SigningCertURL": CERT_URL,
    }
    assert string_to_sign(SnsMessage.model_validate(with_subject)) == (
        b'Message\n{"a": 1}\nsecond line\n'
        b"MessageId\nda41e39f-ea4d-435a-b922-c6aae3915ebe\n"
        b"Subject\nGuardDuty\n"
        b"Timestamp\n2026-11-22T07:00:00.000Z\n"
        b"TopicArn\narn:aws:sns:us-east-1:123456789012:guardduty-findings\n"
        b"Type\nNotification\n"
    )
    without_subject = {k: v for k, v in with_subject.items() if k != "Subject"}
    assert b"Subject" not in string_to_sign(SnsMessage.model_validate(without_subject))
    confirm = {
        **without_subject,
        "Type": "SubscriptionConfirmation",
        "Token": "t0k3n",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
    }
    assert string_to_sign(SnsMessage.model_validate(confirm)) == (
        b'Message\n{"a": 1}\nsecond line\n'
        b"MessageId\nda41e39f-ea4d-435a-b922-c6aae3915ebe\n"
        b"SubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\n"
        b"Timestamp\n2026-11-22T07:00:00.000Z\n"
        b"Token\nt0k3n\n"
        b"TopicArn\narn:aws:sns:us-east-1:123456789012:guardduty-findings\n"
        b"Type\nSubscriptionConfirmation\n"
    )
    assert canonical(confirm) == string_to_sign(SnsMessage.model_validate(confirm))


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_subscription_to_an_allowed_topic_is_confirmed(hook, version):
    message = sign(confirmation(), version=version)
    response = await _post(hook, message)
    assert response.status_code == 200, response.text
    assert response.json() == {"outcome": "subscription_confirmed", "topic_arn": TOPIC_ARN}
    assert hook.sns.confirmed == [message["SubscribeURL"]]


async def test_a_subscription_to_another_topic_is_refused_unchecked_and_unconfirmed(hook):
    other = "arn:aws:sns:us-east-1:999988887777:someone-elses-topic"
    response = await _post(hook, sign(confirmation(topic=other)))
    assert response.status_code == 403
    assert response.json()["field"] == "TopicArn"
    assert hook.sns.confirmed == []
    assert hook.sns.fetched == []


async def test_an_unsubscribe_confirmation_is_noted_and_not_followed(hook):
    response = await _post(hook, sign(confirmation(kind="UnsubscribeConfirmation")))
    assert response.status_code == 200
    assert response.json()["outcome"] == "unsubscribe_noted"
    assert hook.sns.confirmed == []


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_notification_carrying_a_guardduty_event_opens_the_case(hook, version):
    key = _unique_key()
    message = sign(notification(finding_event(access_key_id=key)), version=version)
    first = await _post(hook, message)
    assert first.status_code == 202, first.text
    assert first.json()["outcome"] == "new_case"
    assert first.json()["case_id"] == names.case_workflow_id(ACCOUNT, key)
    # SNS retries with the same message id; the case answers duplicate.
    again = await _post(hook, message)
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    # The same finding from the EventBridge API destination is the same finding.
    direct = await hook.http.post(
        "/v1/events/eventbridge",
        content=message["Message"],
        headers={"x-quench-token": TOKEN, "content-type": "application/json"},
    )
    assert direct.json()["outcome"] == "duplicate"
    handle = hook.client.get_workflow_handle(first.json()["case_id"])
    status = await handle.query(CaseWorkflow.status)
    assert [f.id for f in status.findings] == ["lab-finding-0001"]
    await handle.terminate("test done")


async def test_a_notification_with_a_subject_and_a_security_hub_event(hook):
    key = _unique_key()
    event = securityhub_event(asff_from_guardduty(finding_detail(access_key_id=key)))
    message = sign(notification(event, subject="Security Hub finding"))
    response = await _post(hook, message, **{"content-type": "application/json"})
    assert response.status_code == 202, response.text
    assert response.json()["outcome"] == "new_case"
    await hook.client.get_workflow_handle(response.json()["case_id"]).terminate("test done")


async def test_the_signing_certificate_is_fetched_once(hook):
    for _ in range(3):
        message = sign(notification(finding_event(access_key_id=_unique_key())))
        response = await _post(hook, message)
        assert response.status_code == 202
        await hook.client.get_workflow_handle(response.json()["case_id"]).terminate("done")
    assert hook.sns.fetched == [CERT_URL]


def _tampered(message: dict[str, Any]) -> dict[str, Any]:
    event = json.loads(message["Message"])
    event["detail"]["severity"] = 8.9
    return {**message, "Message": json.dumps(event)}


OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("forge", "field"),
    [
        (lambda m: _tampered(sign(m)), "Signature"),
        (lambda m: sign(m, key=OTHER_KEY), "Signature"),
        (lambda m: {**sign(m), "Signature": "bm90IGEgc2lnbmF0dXJl"}, "Signature"),
        (lambda m: {**sign(m), "Signature": "%%% not base64 %%%"}, "Signature"),
        (lambda m: {**sign(m, version="1"), "SignatureVersion": "2"}, "Signature"),
        (lambda m: {**sign(m), "TopicArn": TOPIC_ARN, "MessageId": "another"}, "Signature"),
        (lambda m: sign(m, cert_url=CERT_URL.replace("https", "http")), "SigningCertURL"),
        (lambda m: sign(m, cert_url=CERT_URL.replace("us-east-1", "eu-west-1")), "SigningCertURL"),
        (
            lambda m: sign(m, cert_url=CERT_URL.replace(".com/", ".com.attacker.example/")),
            "SigningCertURL",
        ),
        (
            lambda m: sign(m, cert_url=CERT_URL.replace("https://", "https://me@")),
            "SigningCertURL",
        ),
        (lambda m: sign(m, cert_url=CERT_URL.replace(".com/", ".com:8443/")), "SigningCertURL"),
        (lambda m: sign(m, cert_url=CERT_URL.replace(".pem", ".txt")), "SigningCertURL"),
    ],
)
async def test_forged_messages_are_refused_and_start_nothing(hook, forge, field):
    key = _unique_key()
    message = forge(notification(finding_event(access_key_id=key)))
    response = await _post(hook, message)
    assert response.status_code == 401, response.text
    assert response.json()["field"] == field
    assert not await _case_exists(hook, key)
    # A certificate is only ever fetched from the SNS host of the message's region.
    assert set(hook.sns.fetched) <= {CERT_URL}


async def test_a_confirmation_pointing_elsewhere_is_not_followed(hook):
    message = confirmation()
    message["SubscribeURL"] = "https://attacker.example/?Action=ConfirmSubscription"
    response = await _post(hook, sign(message))
    assert response.status_code == 401
    assert response.json()["field"] == "SubscribeURL"
    other_topic = confirmation()
    other_topic["SubscribeURL"] = other_topic["SubscribeURL"].replace(
        "guardduty-findings", "another-topic"
    )
    response = await _post(hook, sign(other_topic))
    assert response.status_code == 400
    assert hook.sns.confirmed == []


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(timedelta(days=-30), timedelta(days=-1)), (timedelta(days=1), timedelta(days=30))],
    ids=["expired", "not-yet-valid"],
)
async def test_a_certificate_out_of_its_validity_is_refused(hook, not_before, not_after):
    now = datetime.now(UTC)
    url = CERT_URL.replace(".pem", f"-{uuid.uuid4().hex}.pem")
    hook.sns.certificates[url] = certificate_pem(
        not_before=now + not_before, not_after=now + not_after
    )
    response = await _post(hook, sign(notification(finding_event()), cert_url=url))
    assert response.status_code == 401
    assert "not valid now" in response.json()["error"]


async def test_sns_unreachable_answers_503_to_be_retried(hook):
    hook.sns.unreachable = True
    url = CERT_URL.replace(".pem", "-rotated.pem")
    response = await _post(hook, sign(notification(finding_event()), cert_url=url))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"Type": "Advertisement"}, 400, "Type"),
        ({"TopicArn": "arn:aws:sqs:us-east-1:123456789012:q"}, 400, "TopicArn"),
        ({"SignatureVersion": "3"}, 400, "SignatureVersion"),
        ({"Timestamp": 1764}, 400, "Timestamp"),
        ({"Message": "not json"}, 400, "Message"),
        ({"Message": json.dumps({"detail-type": "GuardDuty Finding"})}, 400, "Message."),
    ],
)
async def test_malformed_sns_messages_name_the_field(hook, change, status, field):
    message = notification(finding_event())
    # A message that SNS could have signed carries a bad Message; the rest is malformed
    # around a good signature.
    signed = sign({**message, **change}) if "Message" in change else {**sign(message), **change}
    response = await _post(hook, signed)
    assert response.status_code == status, response.text
    assert response.json()["field"].startswith(field)


async def test_a_missing_field_a_mismatched_header_and_a_wrong_content_type(hook):
    message = sign(notification(finding_event()))
    missing = {k: v for k, v in message.items() if k != "Signature"}
    response = await _post(hook, missing)
    assert (response.status_code, response.json()["field"]) == (400, "Signature")
    response = await _post(hook, message, **{"x-amz-sns-message-type": "SubscriptionConfirmation"})
    assert (response.status_code, response.json()["field"]) == (400, "Type")
    response = await _post(hook, message, **{"content-type": "application/xml"})
    assert (response.status_code, response.json()["field"]) == (415, "content-type")
    assert hook.sns.fetched == []
