"""SNS messages signed for real, with a key and self-signed certificate made here.

The string to sign is written out from AWS's documentation (each name and value on a line
of its own, in the documented order), not taken from the code under test, so a mistake
there makes the tests fail.
"""

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.webhook.conftest import TOPIC_ARN

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CERT_URL = (
    "https://sns.us-east-1.amazonaws.com/"
    "SimpleNotificationService-6209c161c6221fdf56ec1eb5c821d112.pem"
)


def certificate_pem(
    key: rsa.RSAPrivateKey = KEY,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> bytes:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


CERT_PEM = certificate_pem()

# AWS's documented fields of the string to sign, per message type.
NOTIFICATION_FIELDS = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION_FIELDS = [
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
]


def canonical(message: dict[str, Any]) -> bytes:
    names = NOTIFICATION_FIELDS if message["Type"] == "Notification" else CONFIRMATION_FIELDS
    return "".join(f"{n}\n{message[n]}\n" for n in names if n in message).encode()


def sign(
    message: dict[str, Any],
    version: str = "2",
    key: rsa.RSAPrivateKey = KEY,
    cert_url: str = CERT_URL,
) -> dict[str, Any]:
    signed = {**message, "SignatureVersion": version, "SigningCertURL": cert_url}
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
    signature = key.sign(canonical(signed), padding.PKCS1v15(), digest)
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def notification(
    event: dict[str, Any], topic: str = TOPIC_ARN, subject: str | None = None
) -> dict[str, Any]:
    region = topic.split(":")[3]
    message: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": json.dumps(event),
        "Timestamp": _timestamp(),
        "UnsubscribeURL": f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&"
        f"SubscriptionArn={topic}:{uuid.uuid4()}",
    }
    if subject is not None:
        message["Subject"] = subject
    return message


def confirmation(topic: str = TOPIC_ARN, kind: str = "SubscriptionConfirmation") -> dict[str, Any]:
    region = topic.split(":")[3]
    token = uuid.uuid4().hex * 4
    verb = "subscribe to" if kind == "SubscriptionConfirmation" else "unsubscribe from"
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic,
        "Message": f"You have chosen to {verb} the topic {topic}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"https://sns.{region}.amazonaws.com/?Action=ConfirmSubscription&"
        f"TopicArn={topic}&Token={token}",
        "Timestamp": _timestamp(),
    }


def sns_headers(message: dict[str, Any]) -> dict[str, str]:
    """The headers SNS sends with each POST (text/plain unless the delivery policy says
    otherwise)."""
    return {
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
        "x-amz-sns-topic-arn": message["TopicArn"],
        "content-type": "text/plain; charset=UTF-8",
        "user-agent": "Amazon Simple Notification Service Agent",
    }
