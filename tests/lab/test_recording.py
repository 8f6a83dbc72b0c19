"""The lab's moto recording keeps no secret and still replays: session tokens leave the
headers, passwords and secret values leave the bodies, and nothing else changes."""

import base64
import json
from urllib.parse import parse_qs, urlencode

from lab.aws_server import SCRUBBED, scrub_entry


def _form(params: dict[str, str], token: str | None = None) -> dict:
    body = urlencode(params)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)),
    }
    if token:
        headers["X-Amz-Security-Token"] = token
    return {
        "headers": headers,
        "method": "POST",
        "url": "http://lab/",
        "body": body,
        "body_encoded": False,
    }


def test_a_session_token_and_a_console_password_are_scrubbed():
    entry = _form(
        {"Action": "CreateLoginProfile", "UserName": "backup-svc", "Password": "s3cret-Pa55!"},
        token="IQoJb3JpZ2luX2VjEJ-session-token",
    )
    scrubbed = scrub_entry(entry)
    text = json.dumps(scrubbed)
    assert "s3cret-Pa55!" not in text and "session-token" not in text
    params = parse_qs(scrubbed["body"])
    assert params == {
        "Action": ["CreateLoginProfile"],
        "UserName": ["backup-svc"],
        "Password": [SCRUBBED],
    }
    assert scrubbed["headers"]["Content-Length"] == str(len(scrubbed["body"]))
    assert "X-Amz-Security-Token" not in scrubbed["headers"]


def test_idempotency_tokens_and_plain_requests_stay_as_sent():
    entry = _form({"Action": "RunInstances", "ClientToken": "abc-123", "MinCount": "1"})
    assert scrub_entry(entry) == entry


def test_secret_values_in_json_bodies_are_scrubbed():
    document = {"Name": "db", "SecretString": "hunter2", "ClientRequestToken": "t-1"}
    raw = json.dumps(document).encode()
    entry = {
        "headers": {"Content-Length": str(len(raw))},
        "method": "POST",
        "url": "http://lab/",
        "body": base64.b64encode(raw).decode(),
        "body_encoded": True,
    }
    scrubbed = scrub_entry(entry)
    body = json.loads(base64.b64decode(scrubbed["body"]))
    assert body == {"Name": "db", "SecretString": SCRUBBED, "ClientRequestToken": "t-1"}
    assert scrubbed["headers"]["Content-Length"] == str(len(base64.b64decode(scrubbed["body"])))
