"""Notifications: SNS (moto, read back through an SQS subscription as a subscriber would)
and a chat webhook (a local HTTP server), with the failures each can meet."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.notify import ERROR_CHAT_REFUSED, Notifier, sns_subject
from config.settings import Settings
from models.activities import NotifyInput
from models.case import NotificationKind

UI = "http://127.0.0.1:8233/namespaces/default/workflows"
CASE = "case-123456789012-ASIAXCSEC6TNGZ6EZUUO"
SECRET_PATH = "/services/T000/B000/s3cr3t-webhook-token"


def _notification(number: int = 1) -> NotifyInput:
    return NotifyInput(
        case_id=CASE,
        notification_id=f"{CASE}.0a1b2c3d.{number}",
        kind=NotificationKind.ESCALATED,
        subject="ESCALATED: contain-1 has waited 30m on the case",
        text="Nobody has decided in 30m.\ncontain-1: Contain the key\n- Revoke sessions",
    )


class _Chat:
    """A chat tool's incoming webhook: answers each POST with the next status in line."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []


@pytest.fixture
def chat() -> Iterator[tuple[_Chat, str]]:
    state = _Chat()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append((dict(self.headers), json.loads(body)))
            self.send_response(state.statuses.pop(0) if state.statuses else 200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_port}{SECRET_PATH}"
    finally:
        server.shutdown()
        server.server_close()


def _subscribed_queue(clients: AwsClients, topic_arn: str) -> str:
    sqs = clients.client("sqs")
    queue_url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    clients.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return str(queue_url)


def _received(clients: AwsClients, queue_url: str) -> list[dict[str, Any]]:
    answer = clients.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in answer.get("Messages", [])]


def test_sns_carries_the_message_its_id_and_where_to_follow_the_case(
    clients: AwsClients, activity_env: ActivityEnvironment
):
    topic = clients.client("sns").create_topic(Name="quench-cases")["TopicArn"]
    queue_url = _subscribed_queue(clients, topic)
    notifier = Notifier(clients, topic, None, UI)

    result = activity_env.run(notifier.notify_sns, _notification())

    assert result.sent and result.detail.startswith("message ")
    [envelope] = _received(clients, queue_url)
    assert envelope["Subject"] == "Quench: ESCALATED: contain-1 has waited 30m on the case"
    assert "contain-1: Contain the key" in envelope["Message"]
    assert f"Follow the case: {UI}/{CASE}" in envelope["Message"]
    attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
    assert attributes == {
        "quench_notification_id": f"{CASE}.0a1b2c3d.1",
        "quench_case_id": CASE,
        "quench_kind": "escalated",
    }


def test_a_fifo_topic_drops_a_retried_notification(
    clients: AwsClients, activity_env: ActivityEnvironment
):
    sns = clients.client("sns")
    topic = sns.create_topic(
        Name="quench-cases.fifo",
        Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"},
    )["TopicArn"]
    sqs = clients.client("sqs")
    queue_url = sqs.create_queue(QueueName="inbox.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    notifier = Notifier(clients, topic, None, UI)

    # The same notification twice (a retry after a lost answer), then another one.
    for notification in (_notification(1), _notification(1), _notification(2)):
        activity_env.run(notifier.notify_sns, notification)

    ids = [
        m["MessageAttributes"]["quench_notification_id"]["Value"]
        for m in _received(clients, queue_url)
    ]
    assert ids == [f"{CASE}.0a1b2c3d.1", f"{CASE}.0a1b2c3d.2"]


def test_no_channel_configured_sends_nothing(
    clients: AwsClients, activity_env: ActivityEnvironment
):
    notifier = Notifier(clients, None, None, UI)
    assert not activity_env.run(notifier.notify_sns, _notification()).sent
    assert not activity_env.run(notifier.notify_chat, _notification()).sent


def test_a_missing_topic_is_an_error_the_case_can_note(
    clients: AwsClients, activity_env: ActivityEnvironment
):
    notifier = Notifier(clients, "arn:aws:sns:us-east-1:123456789012:gone", None, UI)
    with pytest.raises(ApplicationError, match="publish escalated notification"):
        activity_env.run(notifier.notify_sns, _notification())


def test_chat_gets_text_in_the_shape_chat_tools_take(
    clients: AwsClients, activity_env: ActivityEnvironment, chat: tuple[_Chat, str]
):
    state, url = chat
    notifier = Notifier(clients, None, SecretStr(url), UI)

    result = activity_env.run(notifier.notify_chat, _notification())

    assert result.sent and result.detail == "HTTP 200"
    [(headers, body)] = state.received
    assert list(body) == ["text"]
    assert body["text"].startswith("[Quench] ESCALATED: contain-1 has waited 30m")
    assert f"{UI}/{CASE}" in body["text"]
    assert headers["Idempotency-Key"] == f"{CASE}.0a1b2c3d.1"
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (403, False), (404, False)]
)
def test_chat_failures_say_whether_a_retry_can_help_and_never_name_the_url(
    clients: AwsClients,
    activity_env: ActivityEnvironment,
    chat: tuple[_Chat, str],
    status: int,
    retryable: bool,
):
    state, url = chat
    state.statuses = [status]
    notifier = Notifier(clients, None, SecretStr(url), UI)

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(notifier.notify_chat, _notification())

    assert raised.value.message == f"the chat webhook answered HTTP {status}"
    assert raised.value.non_retryable is not retryable
    assert (raised.value.type == ERROR_CHAT_REFUSED) is not retryable
    assert raised.value.__cause__ is None and "s3cr3t" not in str(raised.value)


def test_an_unreachable_chat_webhook_is_retried_and_not_named(
    clients: AwsClients, activity_env: ActivityEnvironment, chat: tuple[_Chat, str]
):
    _, url = chat
    port = int(url.split(":")[2].split("/")[0])
    closed = url.replace(f":{port}/", ":9/")  # the discard port: nothing listens
    notifier = Notifier(clients, None, SecretStr(closed), UI, timeout_seconds=2)

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(notifier.notify_chat, _notification())

    assert raised.value.message.startswith("the chat webhook is unreachable")
    assert not raised.value.non_retryable
    assert "s3cr3t" not in raised.value.message


def test_sns_subjects_are_one_printable_line():
    assert sns_subject("Quench: line one\nline two\tüber") == "Quench: line one line two ber"
    assert len(sns_subject("x" * 300)) == 100
    assert sns_subject("\n") == "Quench"


_NOT_HTTPS = "QUENCH_NOTIFY_WEBHOOK_URL must be an https:// URL"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("QUENCH_NOTIFY_WEBHOOK_URL", "http://hooks.example.com/T000/s3cr3t", _NOT_HTTPS),
        ("QUENCH_NOTIFY_WEBHOOK_URL", "ftp://hooks.example.com/s3cr3t", _NOT_HTTPS),
        ("QUENCH_NOTIFY_WEBHOOK_URL", "file:///etc/s3cr3t", _NOT_HTTPS),
        ("QUENCH_NOTIFY_WEBHOOK_URL", "https:///s3cr3t", _NOT_HTTPS),
        ("QUENCH_WEBHOOK_TOKEN", "short-s3cr3t", "at least 16 characters"),
    ],
)
def test_settings_refuse_bad_secrets_without_showing_them(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert message in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


def test_settings_take_local_http_and_https_webhooks_and_a_topic(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("QUENCH_NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9000/hook")
    monkeypatch.setenv(
        "QUENCH_NOTIFY_SNS_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:quench-cases"
    )
    settings = Settings()
    assert settings.notify_webhook_url is not None
    assert "127.0.0.1:9000" not in repr(settings)
    monkeypatch.setenv("QUENCH_NOTIFY_WEBHOOK_URL", "https://hooks.example.com/x")
    monkeypatch.setenv("QUENCH_NOTIFY_SNS_TOPIC_ARN", "quench-cases")
    with pytest.raises(ValidationError, match="QUENCH_NOTIFY_SNS_TOPIC_ARN"):
        Settings()
