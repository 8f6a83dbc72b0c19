"""Notifications: a case tells people when it needs them, escalates, proceeds or closes.

Two channels, each optional and configured on the worker, never in a case's history: an SNS
topic, and an outgoing webhook in the shape chat tools accept (`{"text": ...}`: Slack,
Mattermost, Google Chat, a Teams workflow). Every message carries its notification id, the
same on every attempt, so a receiver can drop a repeat; a FIFO topic drops it itself.
"""

import hashlib
import json
import urllib.error
import urllib.request
from urllib.parse import quote

from pydantic import SecretStr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import ERROR_UNAVAILABLE, AwsClients, aws_errors
from activities.liveness import heartbeating
from models.activities import NotifyInput, NotifyResult

ERROR_CHAT_REFUSED = "ChatWebhookRefused"

# HTTP answers a later attempt may get past: timeouts, throttling, the server's own faults.
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


class Notifier:
    """Sends a case's notifications to the channels this worker is configured with."""

    def __init__(
        self,
        clients: AwsClients,
        topic_arn: str | None,
        webhook_url: SecretStr | None,
        case_url_base: str,
        timeout_seconds: float = 10.0,
    ) -> None:
        if webhook_url is not None and not webhook_url.get_secret_value().startswith(
            ("https://", "http://")
        ):
            raise ValueError("the chat webhook must be an http(s) URL")
        self._clients = clients
        self._topic_arn = topic_arn
        self._webhook_url = webhook_url
        self._case_url_base = case_url_base.rstrip("/")
        self._timeout = timeout_seconds

    def message(self, input: NotifyInput) -> str:
        """The text both channels send: the case's own words and where to follow it."""
        return (
            f"[Quench] {input.subject}\n\n{input.text}\n\n"
            f"Follow the case: {self._case_url_base}/{quote(input.case_id, safe='')}\n"
            f"(notification {input.notification_id})"
        )

    @activity.defn
    @heartbeating
    def notify_sns(self, input: NotifyInput) -> NotifyResult:
        """Publish to the topic; on a FIFO topic the notification id deduplicates."""
        if not self._topic_arn:
            return NotifyResult(channel="sns", sent=False, detail="no SNS topic configured")
        attributes = {
            "quench_notification_id": input.notification_id,
            "quench_case_id": input.case_id,
            "quench_kind": input.kind.value,
        }
        request = {
            "TopicArn": self._topic_arn,
            "Subject": sns_subject(f"Quench: {input.subject}"),
            "Message": self.message(input),
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        }
        if self._topic_arn.endswith(".fifo"):
            request["MessageGroupId"] = input.case_id[:128]
            request["MessageDeduplicationId"] = hashlib.sha256(
                input.notification_id.encode()
            ).hexdigest()
        with aws_errors(f"publish {input.kind.value} notification to {self._topic_arn}"):
            answer = self._clients.client("sns").publish(**request)
        return NotifyResult(channel="sns", sent=True, detail=f"message {answer['MessageId']}")

    @activity.defn
    @heartbeating
    def notify_chat(self, input: NotifyInput) -> NotifyResult:
        """POST `{"text": ...}` to the chat webhook. Its URL is a secret: no error names it."""
        if self._webhook_url is None:
            return NotifyResult(channel="chat", sent=False, detail="no chat webhook configured")
        body = json.dumps({"text": self.message(input)}).encode()
        request = urllib.request.Request(  # noqa: S310 (http(s) only, checked at start)
            self._webhook_url.get_secret_value(),
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": input.notification_id,
                "User-Agent": "quench-notifier",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as answer:  # noqa: S310
                status = answer.status
        except urllib.error.HTTPError as exc:
            retryable = exc.code >= 500 or exc.code in _RETRYABLE_STATUSES
            raise ApplicationError(
                f"the chat webhook answered HTTP {exc.code}",
                type=ERROR_UNAVAILABLE if retryable else ERROR_CHAT_REFUSED,
                non_retryable=not retryable,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ApplicationError(
                f"the chat webhook is unreachable: {type(reason).__name__}",
                type=ERROR_UNAVAILABLE,
            ) from None
        return NotifyResult(channel="chat", sent=True, detail=f"HTTP {status}")


def sns_subject(text: str) -> str:
    """SNS subjects are printable ASCII on one line, at most 100 characters."""
    printable = "".join(c if " " <= c <= "~" else " " for c in text)
    return " ".join(printable.split())[:100] or "Quench"
